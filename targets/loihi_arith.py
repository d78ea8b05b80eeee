"""Integer arithmetic of a Loihi-style CUBA core, as Lava 0.10's fixed-point models compute it: the one
place the quantizer, the emulator, the Lava backend and the netx writer take it from.

Every rule here is measured in ../shared/notes/lava-fixed-point.md §1; the line numbers there point into
Lava's source. Values are held in float64 arrays whose entries are exact integers: every product and sum
below stays under 2**53 (checked where it could not), so float64 gives the integer result bit for bit and
numpy's fast float kernels and BLAS can be used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikedeploy.errors import BackendError, ParameterError, SpikeDeployError, UnsupportedError
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.targets.spec import NumericFormat, TargetSpec

EXACT_F32 = 2**24  # float32 represents every integer below this
EXACT_F64 = 2**53


@dataclass(frozen=True)
class Arith:
    """Bit widths the engine needs, derived from a NumericFormat.

    `reg_bits` is the width of the datapath registers between the synapse and the neuron (Lava keeps
    activations, the shifted activation and the voltage sum in int32 and lets them wrap).
    `bias_store_bits` is the width bias_mant is stored in (Lava: np.int16, which wraps).
    """

    weight_bits: int = 8
    mixed_drops_lsb: bool = True
    state_bits: int = 24
    decay_bits: int = 12
    act_shift: int = 6
    conv_acc_bits: int = 24
    rounding: str = "trunc"
    bias_store_bits: int = 16
    reg_bits: int = 32
    max_delay: int = 63  # Lava DelayDense rejects delays above 63
    name: str = "loihi2"

    @classmethod
    def from_numeric(cls, fmt: NumericFormat, name: str = "generic") -> Arith:
        if fmt.rounding not in ("trunc", "nearest"):
            raise ParameterError(f"numeric format '{name}': rounding must be 'trunc' or 'nearest', got '{fmt.rounding}'")
        reg = 32 if fmt.state_bits + fmt.act_shift < 31 else 64
        return cls(
            weight_bits=fmt.weight_bits,
            mixed_drops_lsb=fmt.mixed_sign_drops_lsb,
            state_bits=fmt.state_bits,
            decay_bits=fmt.decay_bits,
            act_shift=fmt.act_shift,
            conv_acc_bits=fmt.conv_acc_bits,
            rounding=fmt.rounding,
            bias_store_bits=max(16, fmt.bias_mant_bits),
            reg_bits=reg,
            max_delay=max(fmt.max_delay, 63) if name == "loihi2" else fmt.max_delay,
            name=name,
        )

    @property
    def state_max(self) -> int:
        return 2 ** (self.state_bits - 1)


LOIHI2 = Arith.from_numeric(NumericFormat(), name="loihi2")


def arith_for(mode) -> Arith:
    """'loihi2' (Lava's bit-accurate model), a target name, a TargetSpec, a NumericFormat, or a QGraph (the
    arithmetic of the target it was quantized for)."""
    if isinstance(mode, Arith):
        return mode
    if isinstance(mode, QGraph):
        return qgraph_arith(mode)
    if mode is None or mode == "loihi2":
        return LOIHI2
    if isinstance(mode, NumericFormat):
        return Arith.from_numeric(mode)
    if isinstance(mode, TargetSpec):
        return LOIHI2 if mode.name == "loihi2" else Arith.from_numeric(mode.numeric, mode.name)
    if isinstance(mode, str):
        from spikedeploy.targets.spec import get_target

        return arith_for(get_target(mode))
    raise BackendError(f"emulator mode must be 'loihi2', a target name, TargetSpec or NumericFormat; got {mode!r}")


def qgraph_arith(qg: QGraph) -> Arith:
    """The arithmetic of the target `qg` was quantized for: the numeric format the quantizer recorded in
    qg.meta["numeric"] (a chip file's name alone cannot be looked up again), else the named target's."""
    num = qg.meta.get("numeric")
    if num is None:
        try:
            from spikedeploy.targets.spec import get_target

            return arith_for(get_target(qg.target))
        except SpikeDeployError as e:
            raise BackendError(f"the QGraph was quantized for target '{qg.target}', which is not a built-in target, "
                               "and it records no numeric format; quantize it again with this version") from e
    if qg.target == "loihi2":
        return LOIHI2
    try:
        return Arith.from_numeric(NumericFormat(**num), qg.target)
    except TypeError as e:
        raise BackendError(f"the QGraph's numeric format for target '{qg.target}' is malformed ({e}); "
                           "quantize it again") from e


def expand_param(p, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A neuron parameter as one value or one per neuron (flat, CHW order); per-channel values broadcast."""
    a = np.asarray(p).reshape(-1)
    n = int(np.prod(shape)) if shape else 1
    if a.size in (1, n):
        return a
    if len(shape) >= 2 and a.size == shape[0]:
        return np.repeat(a, n // shape[0])
    raise ParameterError(f"{what}: {a.size} values for a layer of shape {list(shape)} ({n} neurons)")


# ---- synapse weights ----------------------------------------------------------------------------
SIGN_MODES = ("mixed", "exc", "inh")


def sign_mode_of(w: np.ndarray, given: str | None = None) -> str:
    """Lava's determine_sign_mode (weightutils.py:21-43) unless the QGraph fixes it."""
    if given is not None:
        g = str(given).lower()
        aliases = {"excitatory": "exc", "inhibitory": "inh", "mix": "mixed"}
        g = aliases.get(g, g)
        if g not in SIGN_MODES:
            raise ParameterError(f"sign_mode must be one of {SIGN_MODES} or None, got '{given}'")
        return g
    if w.size == 0 or w.min() >= 0:
        return "exc"
    if w.max() <= 0:
        return "inh"
    return "mixed"


def prepare_weights(w, sign_mode: str | None, num_weight_bits: int | None, ar: Arith = LOIHI2,
                    where: str = "") -> np.ndarray:
    """Weights as Lava Dense/Sparse/DelayDense use them: clip to the sign mode's range, then drop LSBs.

    clip_weights(W, sm, 8) then truncate_weights(W, sm, nwb) (weightutils.py:204-295): for INH both act
    on -W; MIXED with the default width keeps only even values. Returned as float32 holding exact
    integers (float64 for formats wider than 23 bits), ready for BLAS; one copy of the weights is made.
    """
    w = np.asarray(w)
    sm = sign_mode_of(w, sign_mode)
    nb = ar.weight_bits
    nwb = nb if num_weight_bits is None else int(num_weight_bits)
    mixed = sm == "mixed"
    k = nb - nwb + int(mixed and ar.mixed_drops_lsb)
    if nwb < 1 or k < 0:
        raise ParameterError(
            f"{where}: num_weight_bits={nwb} is outside 1..{nb} for sign mode {sm}; use at most {nb} bits"
        )
    x = w.astype(np.float32 if nb <= 23 else np.float64)  # the one copy
    if w.dtype.kind == "f":
        np.trunc(x, out=x)  # Lava casts with astype(int32)
    if sm == "inh":
        np.negative(x, out=x)
    np.clip(x, -(2.0**nb) if mixed else 0.0, 2.0**nb - 1, out=x)
    if k:
        x *= 0.5**k
        np.floor(x, out=x)  # >> k on integers
        x *= 2.0**k
    if sm == "inh":
        np.negative(x, out=x)
    x += 0.0  # turn -0.0 into 0.0
    return x


def shift_sum(acc: np.ndarray, exp: int, out: np.ndarray | None = None) -> np.ndarray:
    """acc << exp, or acc >> -exp (floor), on exact-integer float arrays (Dense models.py:101-106); into
    `out` when given (which may be acc itself)."""
    exp = int(exp)
    if exp == 0:
        if out is not None and out is not acc:
            out[...] = acc
        return acc if out is None else out
    y = np.multiply(acc, 2.0**exp, out=out)  # a power of two: exact
    return np.floor(y, out=y) if exp < 0 else y


def shift_bound(bound: float, exp: int) -> float:
    exp = int(exp)
    return bound * 2.0**exp if exp >= 0 else np.floor(bound * 0.5 ** (-exp)) + 1


def wrap(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap to `bits` (exact on float64 integers below 2**53)."""
    half = float(2 ** (bits - 1))
    full = float(2**bits)
    return x - full * np.floor((x + half) / full)


def wrap_int(x: int | np.ndarray, bits: int):
    """Two's-complement wrap of Python/numpy integers."""
    if bits >= 64:  # int64 holds them already
        return np.asarray(x, dtype=np.int64)
    half = 1 << (bits - 1)
    return ((np.asarray(x, dtype=np.int64) + half) % (1 << bits)) - half


def effective_bias(bias_mant, bias_exp, ar: Arith = LOIHI2) -> np.ndarray:
    """bias_mant stored in int16 (wraps), shifted by bias_exp (right shift floors; lif/models.py:110-122)."""
    m = wrap_int(np.asarray(bias_mant, dtype=np.int64), ar.bias_store_bits)
    e = np.asarray(bias_exp, dtype=np.int64)
    if np.any(np.abs(e) > 30):
        raise UnsupportedError(f"bias_exp {int(np.abs(e).max())} is beyond the 32-bit datapath")
    b = np.where(e >= 0, m << np.maximum(e, 0), m >> np.maximum(-e, 0))
    return wrap_int(b, ar.reg_bits).astype(np.float64)


# ---- neuron ---------------------------------------------------------------------------------------
class NeuronArith:
    """One CUBA compartment group's fixed-point update (PyLifModelBitAcc, lif/models.py:137-192).

    All operands are float64 arrays of exact integers with shape broadcastable to [B, n].

    The programmable variant (spikedeploy's own neuron, targets/lava/neurons.py, the same integer steps):
    with th = vth << 6,
        fire_at_equal: s = v >= th, computed as v > th − 1 (v and th are integers)
        u_bias:        u = wrap(decay(u) + (a_in << 6) + u_bias)        (CubaLIF synapse bias, NIR's current)
        reset_delay:   p = (previous v) fires; zero: v = 0 where p, before the decay; subtract: v −= th where p,
                       after adding u and bias and before the saturation; no reset after this step's spike
        subtract:      v −= th where s (without reset_delay), instead of v = 0
        pending_reset: (subtract, no reset_delay; snnTorch) p as for reset_delay, v −= th where p before the
                       saturation, then v += (p − s)·th after the spike test (no second saturation)
    """

    def __init__(self, du, dv, vth, bias_mant, bias_exp, n: int, ar: Arith = LOIHI2, bound_in: float = np.inf,
                 where: str = "", reset: str = "zero", reset_delay: bool = False, fire_at_equal: bool = False,
                 u_bias=0, pending_reset: bool = False):
        self.ar = ar
        unity = 2**ar.decay_bits
        du = np.asarray(du, dtype=np.int64).reshape(-1)
        dv = np.asarray(dv, dtype=np.int64).reshape(-1)
        fu = unity - (du + 1)  # ds_offset = 1
        fv = unity - dv  # dm_offset = 0
        M = ar.state_max
        for f, nm in ((fu, "du"), (fv, "dv")):
            if f.size and np.abs(f).max() * 2.0 * M >= EXACT_F64 / 4:
                raise UnsupportedError(f"{where}: decay {nm} gives a factor too large for the emulator")
        self.fu = _per_neuron(fu.astype(np.float64), n)
        self.fv = _per_neuron(fv.astype(np.float64), n)
        self.inv = 1.0 / unity
        self.fu_s = self.fu * self.inv
        self.fv_s = self.fv * self.inv
        self.fu_zero = not np.any(self.fu)
        self.fv_zero = not np.any(self.fv)
        vth_eff = np.asarray(vth, dtype=np.int64).reshape(-1) * (2**ar.act_shift)
        self.th = _per_neuron(vth_eff.astype(np.float64), n)  # what a subtractive reset subtracts
        # the comparison threshold: v >= th is v > th - 1 in integers, so the kernel's `>` serves both rules
        self.vth = self.th - 1 if fire_at_equal else self.th
        self.bias = _per_neuron(effective_bias(bias_mant, bias_exp, ar).reshape(-1), n)
        self.has_bias = bool(np.any(self.bias != 0))
        self.subtract = reset == "subtract"
        self.reset_delay = bool(reset_delay)
        self.pending_reset = bool(pending_reset) and self.subtract and not self.reset_delay
        self.u_bias = _per_neuron(np.asarray(u_bias, dtype=np.float64).reshape(-1), n)
        self.has_u_bias = bool(np.any(self.u_bias != 0))
        # the compiled kernel runs Lava's LIF (and v >= th through vth); these need the numpy step
        self.programmable = self.subtract or self.reset_delay or self.has_u_bias or self.pending_reset
        self.M = float(M)
        self.act = float(2**ar.act_shift)
        self.nearest = ar.rounding == "nearest"
        self.bound_in = float(bound_in)
        self.u_wraps = 0  # events, for reports: both change the result and are usually quantization bugs
        self.v_saturations = 0
        # Which wraps can happen, from bounds: skipping impossible ones is exact and saves time.
        reg_lim = 2.0 ** (ar.reg_bits - 1)
        bu = M * float(np.abs(self.fu).max()) * self.inv + self.act * bound_in + float(np.abs(self.u_bias).max())
        self.reg_wrap_u = bu >= reg_lim
        self.check_u_wrap = bu >= M
        bv = (M - 1) * float(np.abs(self.fv).max()) * self.inv + M + float(np.abs(self.bias).max())
        if self.subtract:
            bv += float(np.abs(self.th).max())
        self.reg_wrap_v = bv >= reg_lim
        self.check_v_clip = bv > M - 1
        if bound_in * self.act >= EXACT_F64 / 4:
            raise UnsupportedError(f"{where}: input activation bound {bound_in:g} too large for exact emulation")

    def _decay(self, x: np.ndarray, f_scaled: np.ndarray) -> np.ndarray:
        # (x * f) >> 12 toward zero: x * (f / 4096) is the same exact product scaled by a power of two
        y = x * f_scaled
        if self.nearest:
            s = np.sign(y)
            np.abs(y, out=y)
            y += 0.5
            np.floor(y, out=y)
            y *= s
        else:
            np.trunc(y, out=y)
        return y

    def step(self, u: np.ndarray, v: np.ndarray, a_scaled: np.ndarray | None):
        """One step. a_scaled is a_in << act_shift (float64). Returns new (u, v) and the boolean spikes."""
        pending = None
        if self.reset_delay or self.pending_reset:  # the reset decided from the previous step's v
            pending = v > self.vth
            if not self.subtract:
                v = np.where(pending, 0.0, v)
        if self.fu_zero:  # du = 4095: no current memory
            x = a_scaled if a_scaled is not None else np.zeros_like(u)
        else:
            x = self._decay(u, self.fu_s)
            if a_scaled is not None:
                x += a_scaled
        if self.has_u_bias:
            x = x + self.u_bias
        if self.reg_wrap_u:
            x = wrap(x, self.ar.reg_bits)
        if self.check_u_wrap:
            M = self.M
            if x.max(initial=-np.inf) > M or x.min(initial=np.inf) <= -M:
                # single wrap, not modulo (lif/models.py:161-170); +M itself is kept
                hi, lo = x > M, x <= -M
                self.u_wraps += int(hi.sum() + lo.sum())
                x = np.where(hi, x - 2 * M, np.where(lo, x + 2 * M, x))
        if self.fv_zero:  # dv = 4096: no voltage memory
            y = x + self.bias if self.has_bias else x.copy()
        else:
            y = self._decay(v, self.fv_s)
            y += x
            if self.has_bias:
                y += self.bias
        if pending is not None and self.subtract:
            y = y - pending * self.th
        if self.reg_wrap_v:
            y = wrap(y, self.ar.reg_bits)
        if self.check_v_clip:
            lim = self.M - 1
            if y.max(initial=-np.inf) > lim or y.min(initial=np.inf) < -lim:
                self.v_saturations += int((y > lim).sum() + (y < -lim).sum())
                np.clip(y, -lim, lim, out=y)
        s = y > self.vth
        if self.pending_reset:
            y = y + (pending.astype(np.float64) - s) * self.th
        elif pending is None:
            if self.subtract:
                y = np.where(s, y - self.th, y)
            else:
                np.copyto(y, 0.0, where=s)  # reset v only; u keeps its value
        return x, y, s


def _per_neuron(a: np.ndarray, n: int) -> np.ndarray | float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size == 1:
        return a.reshape(1)
    if a.size != n:
        raise ParameterError(f"per-neuron parameter has {a.size} values for {n} neurons")
    return a
