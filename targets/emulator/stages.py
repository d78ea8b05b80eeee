"""One stage per graph node: how the emulator computes that node over a chunk of time steps.

Values flow between stages as arrays `[Tc, B, *shape]` (a chunk of Tc steps for the whole batch).
Synapse stages keep a buffer of pending outputs: what they compute from their input at step t is
delivered at step t + 1 (+ delay), because every Lava synapse process sends the buffer it computed in
the previous step (lava-fixed-point.md §1, "Time step and ordering").
"""

from __future__ import annotations

import math

import numpy as np

from spikedeploy.errors import ParameterError, UnsupportedError
from spikedeploy.graph.ops import CONV, MATRIX, conv_params, pool_params
from spikedeploy.graph.qparams import CubaParams, SynapseParams
from spikedeploy.targets.emulator import kernels
from spikedeploy.targets.loihi_arith import (
    EXACT_F32,
    EXACT_F64,
    Arith,
    NeuronArith,
    expand_param,
    prepare_weights,
    shift_bound,
    shift_sum,
    wrap,
)


class Scratch:
    """Chunk buffers reused from one chunk (and one call) to the next, and between nodes.

    A fresh large array costs a page fault per 4 KiB page on first touch, which was a fifth of a
    simulation's time. Each (owner, role) holds one block of bytes; `release(owner)` hands the owner's
    blocks to later requests once its values are dead (the engine calls it at the owner's last use), so a
    chunk needs only the memory of the values alive at once. Step-by-step runs read the previous step's
    values (back edges): they release nothing and alternate between two sets of blocks (`flip`).
    """

    def __init__(self):
        self._held: dict = {}  # (owner, role, parity) -> uint8 block
        self._free: list[np.ndarray] = []
        self.parity = 0

    def flip(self) -> None:
        self.parity ^= 1

    def get(self, owner: str, role: str, shape: tuple[int, ...], dtype, zero: bool = False) -> np.ndarray:
        """A C-contiguous array of this shape and dtype in the block (owner, role) holds."""
        dt = np.dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        key = (owner, role, self.parity)
        block = self._held.get(key)
        if block is None or block.size < nbytes:
            if block is not None:
                self._free.append(block)
            block = self._held[key] = self._take(nbytes)
        a = block[:nbytes].view(dt).reshape(shape)
        if zero:
            a.fill(0)
        return a

    def release(self, owner: str) -> None:
        for key in [k for k in self._held if k[0] == owner]:
            self._free.append(self._held.pop(key))

    def _take(self, nbytes: int) -> np.ndarray:
        """The smallest free block of at least nbytes, else a new one (64-byte aligned for any dtype)."""
        fits = [i for i, blk in enumerate(self._free) if blk.size >= nbytes]
        if fits:
            return self._free.pop(min(fits, key=lambda i: self._free[i].size))
        return kernels.aligned_empty(nbytes, np.uint8)


def _buffer(scratch: Scratch | None, owner: str, role: str, shape, dtype, zero: bool = False) -> np.ndarray:
    if scratch is None:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    return scratch.get(owner, role, shape, dtype, zero)


class SynapseStage:
    """Common buffer handling of Dense/Sparse/DelayDense/Conv-like synapses."""

    n_slots = 1  # delays 0..n_slots-1 (+1 step each)
    overwrites = False  # accumulate writes every new row of the buffer, so begin need not zero it

    def __init__(self, name: str, out_shape: tuple[int, ...], dtype):
        self.name = name
        self.out_shape = tuple(out_shape)
        self.dtype = dtype
        self.carry = None
        self.buf = None
        self.scratch = None

    def reset(self, batch: int) -> None:
        self.carry = np.zeros((self.n_slots, batch, *self.out_shape), self.dtype)

    def begin(self, tc: int, scratch: Scratch | None = None) -> None:
        self.scratch = scratch  # for accumulate's own temporaries
        b = self.carry.shape[1]
        self.buf = _buffer(scratch, self.name, "buf", (tc + self.n_slots, b, *self.out_shape), self.dtype,
                           zero=not self.overwrites)
        self.buf[: self.n_slots] = self.carry
        self.tc = tc

    def emitted(self) -> np.ndarray:
        return self.buf[: self.tc]

    def end(self) -> None:
        self.carry = self.buf[self.tc : self.tc + self.n_slots].copy()
        self.buf = None

    def accumulate(self, x: np.ndarray) -> None:
        raise NotImplementedError


def _row_bound(m: np.ndarray, *, signed: bool) -> float:
    """max over rows of sum |w| (signed inputs), or of max(sum of w > 0, sum of -w over w < 0) (inputs >= 0)."""
    if m.size == 0:
        return 0.0
    m = np.asarray(m, dtype=np.float64)
    if signed:
        return float(np.abs(m).sum(axis=1).max())
    return float(max(np.maximum(m, 0).sum(axis=1).max(), np.maximum(-m, 0).sum(axis=1).max()))


class DenseStage(SynapseStage):
    """Dense / Sparse / DelayDense (dense/models.py:57-114, 290-352; sparse/models.py:58-114)."""

    def __init__(self, name, w_int, weight_exp, delay, ar: Arith, x_bound: float, graded: bool):
        n_out, n_in = w_int.shape
        self.exp = int(weight_exp)
        self.ar = ar
        self.graded = graded
        w = w_int
        if delay is None:
            groups = [(0, w)]
        else:
            d = np.broadcast_to(np.asarray(delay, dtype=np.int64), w.shape)
            if d.min() < 0 or d.max() > ar.max_delay:
                raise ParameterError(
                    f"node '{name}': delays must be in 0..{ar.max_delay} steps, got {int(d.min())}..{int(d.max())}"
                )
            groups = [(int(k), np.where(d == k, w, 0).astype(w.dtype)) for k in np.unique(d[w != 0])] or [(0, w * 0)]
        # |sum of w x| per output: binary sources are 0 <= x <= x_bound, so the sum lies between x_bound times
        # the output's negative weights and x_bound times its positive ones, about half of sum |w| for mixed
        # signs: more layers stay on the float32 kernel path, and fewer neurons need the wrap checks. Graded
        # sources can be negative
        acc_bound = [x_bound * float(_row_bound(m, signed=graded)) for _, m in groups]
        shifted = [shift_bound(b, self.exp) for b in acc_bound]
        self.bound = float(sum(shifted))
        big = max(acc_bound, default=0.0)
        reg = 2.0 ** (ar.reg_bits - 1)
        self.reg_wrap = self.bound >= reg
        if big < EXACT_F32 and self.bound < EXACT_F32:
            self.mode, ft = "f32", np.float32
        elif big < EXACT_F64 / 2:
            self.mode, ft = "f64", np.float64
        else:
            self.mode, ft = "i64", np.int64
        self.n_slots = 1 + max(k for k, _ in groups)
        # Binary sources with sums exact in float32: the compiled kernel adds the int8/int16 weight rows of the
        # inputs that spiked (work proportional to the spikes); else BLAS on (out, in) weights used as
        # m.T, which reads the transpose without a copy.
        self.sparse = (kernels.available() and not graded and x_bound <= 1 and self.mode == "f32"
                       and max((float(np.abs(m).max(initial=0)) for _, m in groups), default=0) < 2**15)
        if self.sparse:
            self.groups = [(k, *kernels.spike_weights(m)) for k, m in groups]
        else:
            self.groups = [(k, m.astype(ft, copy=False), 0, 1.0) for k, m in groups]
        # float32 holds every value exactly in f32 mode: sums below 2**24, and their shifts (by a power of
        # two, floored) too
        super().__init__(name, (n_out,), np.float32 if self.mode == "f32" else np.float64)
        # one product written straight into the buffer (BLAS out= or the kernel) and shifted there, instead
        # of added to it
        self.overwrites = len(self.groups) == 1 and self.mode != "i64"
        if self.reg_wrap:
            self.bound = reg

    def accumulate(self, x: np.ndarray) -> None:
        tc, b = x.shape[0], x.shape[1]
        x2 = x.reshape(tc * b, -1)
        if self.sparse:
            self._accumulate_spikes(x2, tc, b)
        else:
            self._accumulate_blas(x2, tc, b)
        if self.reg_wrap and self.mode != "i64":
            seg = self.buf[1 : 1 + tc + self.n_slots - 1]
            seg[...] = wrap(seg, self.ar.reg_bits)

    def _accumulate_blas(self, x2: np.ndarray, tc: int, b: int) -> None:
        # binary sources already hold 0/1 (neuron spikes, or inputs checked to be binary)
        for k, wt, _, _ in self.groups:
            dst = self.buf[1 + k : 1 + k + tc].reshape(tc * b, -1)
            if self.mode == "i64":
                acc = x2.astype(np.int64) @ wt.T
                acc = (acc << self.exp) if self.exp > 0 else (acc >> -self.exp)
                acc = ((acc + (1 << 31)) % (1 << 32)) - (1 << 31)
                dst += acc.astype(np.float64)
                continue
            xx = x2.astype(wt.dtype, copy=False)
            out = dst if self.overwrites else _buffer(self.scratch, self.name, "sum", dst.shape, dst.dtype)
            shift_sum(np.matmul(xx, wt.T, out=out), self.exp, out=out)
            if not self.overwrites:
                dst += out

    def _accumulate_spikes(self, x2: np.ndarray, tc: int, b: int) -> None:
        x8 = x2 if x2.dtype == np.uint8 else (x2 != 0).view(np.uint8)
        x8 = np.ascontiguousarray(x8)
        for k, wk, wmax, scale in self.groups:
            dst = self.buf[1 + k : 1 + k + tc].reshape(tc * b, -1)
            out = dst if self.overwrites else _buffer(self.scratch, self.name, "sum", dst.shape, np.float32)
            # the kernel's scale takes the weight exponent too: a power of two, so the product stays exact
            kernels.spike_rows(x8, wk, wmax, scale * 2.0**self.exp, out)
            if self.exp < 0:
                np.floor(out, out=out)
            if not self.overwrites:
                dst += out


class ScaleStage(SynapseStage):
    """Elementwise weights (a diagonal Dense/Sparse in Lava), same weight preparation as Dense."""

    def __init__(self, name, w_int, weight_exp, shape, ar: Arith, x_bound: float, graded: bool):
        self.w = np.asarray(w_int, dtype=np.float64).reshape(-1)
        self.exp = int(weight_exp)
        self.graded = graded
        self.ar = ar
        self.bound = shift_bound(float(np.abs(self.w).max(initial=0)) * x_bound, self.exp)
        if self.bound >= EXACT_F64 / 2:
            raise UnsupportedError(f"node '{name}' (Scale): values too large for exact emulation")
        n = int(np.prod(shape))
        super().__init__(name, (n,), np.float64)

    def accumulate(self, x):
        tc, b = x.shape[0], x.shape[1]
        x3 = x.reshape(tc, b, -1)
        # one chunk buffer, reused, for the products (no new arrays per chunk)
        y = _buffer(self.scratch, self.name, "prod", x3.shape, np.float64)
        if self.graded:
            np.multiply(x3, self.w, out=y)
        else:
            np.not_equal(x3, 0, out=y, casting="unsafe")
            np.multiply(y, self.w, out=y)
        shift_sum(y, self.exp, out=y)
        if self.bound >= 2.0 ** (self.ar.reg_bits - 1):
            y = wrap(y, self.ar.reg_bits)
        self.buf[1 : 1 + tc] += y


class ConvStage(SynapseStage):
    """Lava Conv fixed point (conv/models.py:68-79): exact integer convolution, then a 24-bit wrap.

    weight_exp and num_weight_bits are ignored, as Lava ignores them; weights are not clipped.
    """

    def __init__(self, name, w_int, params, in_shape, out_shape, ar: Arith, x_bound: float, graded: bool,
                 nd: int = 2):
        w = np.asarray(w_int)
        if w.dtype.kind == "f":
            w = np.trunc(w)
        w = w.astype(np.int64)
        self.nd = nd
        self.graded = graded
        self.ar = ar
        self.stride, self.padding, self.dilation = conv_params(params, nd)
        self.groups = int(params.get("groups", 1))
        import torch  # only convolutions need torch, and importing it costs a second

        bound = float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max(initial=0)) * x_bound
        if bound < EXACT_F32:
            self.tdtype = torch.float32
        elif bound < EXACT_F64 / 2:
            self.tdtype = torch.float64
        else:
            raise UnsupportedError(f"node '{name}' (conv): sums up to {bound:g} cannot be emulated exactly")
        self.wrap_needed = bound >= 2.0 ** (ar.conv_acc_bits - 1)
        self.bound = min(bound, 2.0 ** (ar.conv_acc_bits - 1))
        self.w = torch.from_numpy(w.astype(np.float64)).to(self.tdtype)
        self.in_shape = tuple(in_shape)
        super().__init__(name, tuple(out_shape), np.float32 if self.tdtype == torch.float32 else np.float64)

    def accumulate(self, x):
        tc, b = x.shape[0], x.shape[1]
        xx = x.reshape(tc * b, *self.in_shape)
        if not self.graded:
            xx = xx != 0
        import torch
        import torch.nn.functional as F

        xt = torch.from_numpy(np.ascontiguousarray(xx, dtype=np.float32 if self.tdtype == torch.float32 else np.float64))
        conv = F.conv2d if self.nd == 2 else F.conv1d
        with torch.no_grad():
            y = conv(xt, self.w, stride=self.stride, padding=self.padding, dilation=self.dilation,
                     groups=self.groups).numpy()
        if self.wrap_needed:
            y = wrap(y.astype(np.float64), self.ar.conv_acc_bits)
        self.buf[1 : 1 + tc] += y.reshape(tc, b, *self.out_shape)


class NeuronStage:
    """A layer of CUBA compartments (Lava LIF, PyLifModelBitAcc)."""

    def __init__(self, name, q: CubaParams, shape, ar: Arith, bound_in: float, spiking: bool, probe: bool):
        self.name = name
        self.shape = tuple(shape)
        self.n = int(np.prod(shape)) if shape else 1
        where = f"node '{name}'"
        self.na = NeuronArith(
            expand_param(q.du, self.shape, f"{where} du"),
            expand_param(q.dv, self.shape, f"{where} dv"),
            expand_param(q.vth, self.shape, f"{where} vth"),
            expand_param(q.bias_mant, self.shape, f"{where} bias_mant"),
            expand_param(q.bias_exp, self.shape, f"{where} bias_exp"),
            self.n, ar, bound_in, where,
            reset="zero" if q.reset is None else str(q.reset), reset_delay=bool(q.reset_delay),
            fire_at_equal=bool(q.fire_at_equal), pending_reset=bool(q.pending_reset),
            u_bias=expand_param(0 if q.u_bias is None else q.u_bias, self.shape, f"{where} u_bias"),
        )
        self.spiking = spiking
        self.probe = probe
        self.u = self.v = None
        # the compiled kernel's operands, or None where it does not apply (then the numpy path, float64 state)
        # (the programmable neuron rules run on the numpy path: correctness first)
        self.kparams = (kernels.lif_params(self.na, self.n)
                        if kernels.available() and not self.na.programmable else None)
        # Lava LIFReset (lif/models.py:426-449): u and v zeroed before the dynamics of every time step
        # (1-based) with time_step % reset_interval == reset_offset % reset_interval
        self.reset_interval = int(q.reset_interval) if q.reset_interval else 0
        self.reset_offset = int(q.reset_offset) % self.reset_interval if self.reset_interval else 0
        self.bias_onset = int(q.bias_onset)
        # v_reset != 0: the shifted state starts at v_init, written by the host in step v_init_step (the layer's
        # first input; quantizer.set_v_init_steps); the numpy path, whose state has no bound assumed from 0
        self.v_init = (expand_param(q.v_init, self.shape, f"{where} v_init").reshape(-1)
                       if q.v_init is not None else None)
        self.v_init_step = int(q.v_init_step)
        if self.v_init is not None:
            self.kparams = None

    def reset(self, batch: int) -> None:
        self.na.u_wraps = self.na.v_saturations = 0
        dt = np.float64 if self.kparams is None else np.int32
        self.u = kernels.aligned_empty((batch, self.n), dt)
        self.v = kernels.aligned_empty((batch, self.n), dt)
        self.u.fill(0)
        self.v.fill(0)

    def run(self, a: np.ndarray | None, tc: int, want_v: bool, t0: int = 0, scratch: Scratch | None = None):
        """Advance tc steps. Returns spikes [tc,B,n] uint8, spikes per step and sample [tc,B] int32, and
        v (and u) [tc,B,n] when asked (else None): int32 from the kernel, float64 from the numpy path."""
        b = self.u.shape[0]
        shape, dt = (tc, b, self.n), self.u.dtype
        s_out = _buffer(scratch, self.name, "s", shape, np.uint8)
        counts = _buffer(scratch, self.name, "counts", (tc, b), np.int32)
        v_out = _buffer(scratch, self.name, "v", shape, dt) if (want_v or self.probe) else None
        u_out = _buffer(scratch, self.name, "u", shape, dt) if self.probe else None
        if a is not None:
            a = a.reshape(tc, b, self.n)
        # steps before the bias onset run without the bias (see bias_onset in spikedeploy/quantize/quantizer.py)
        na = self.na
        has_bias, has_u_bias = na.has_bias, na.has_u_bias
        k = min(tc, max(0, self.bias_onset - t0)) if (has_bias or has_u_bias) else 0
        kv = self.v_init_step - t0 if self.v_init is not None and t0 <= self.v_init_step < t0 + tc else None
        cuts = sorted({0, k, tc} | ({kv} if kv is not None else set()))
        try:
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                if hi > lo:
                    if lo == kv:
                        self.v[...] = self.v_init
                    na.has_bias, na.has_u_bias = has_bias and lo >= k, has_u_bias and lo >= k
                    self._scan(None if a is None else a[lo:hi], hi - lo, t0 + lo, s_out[lo:hi], counts[lo:hi],
                               None if v_out is None else v_out[lo:hi], None if u_out is None else u_out[lo:hi])
        finally:
            na.has_bias, na.has_u_bias = has_bias, has_u_bias
        return s_out, counts, v_out, u_out

    def _scan(self, a, tc: int, t0: int, s_out, counts, v_out, u_out) -> None:
        if self.kparams is not None:
            kernels.lif_scan(self.na, a, self.u, self.v, self.kparams,
                             (self.reset_interval, self.reset_offset, t0), s_out, counts, v_out, u_out)
            return
        act = self.na.act
        step = self.na.step
        u, v = self.u, self.v
        for t in range(tc):
            if self.reset_interval and (t0 + t + 1) % self.reset_interval == self.reset_offset:
                u, v = np.zeros_like(u), np.zeros_like(v)
            u, v, s = step(u, v, None if a is None else np.multiply(a[t], act, dtype=np.float64))
            s_out[t] = s
            if v_out is not None:
                v_out[t] = v
            if u_out is not None:
                u_out[t] = u
        self.u, self.v = u, v
        counts[...] = kernels.count_nonzero_rows(s_out)


def prepare_synapse(name, node, q: SynapseParams, ar: Arith, x_bound: float, graded: bool):
    """The stage for a synapse node, with its weights prepared as the matching Lava process does."""
    op = node.op
    where = f"node '{name}' ({op})"
    if op in MATRIX:
        w = prepare_weights(q.weight, q.sign_mode, q.num_weight_bits, ar, where)
        if op == "Scale":
            return ScaleStage(name, w, q.weight_exp, node.out_shape, ar, x_bound, graded)
        return DenseStage(name, w, q.weight_exp, q.delay, ar, x_bound, graded)
    if op in CONV:
        return ConvStage(name, q.weight, node.params, node.in_shape, node.out_shape, ar, x_bound, graded,
                         nd=2 if op == "Conv2d" else 1)
    if op == "SumPool2d":
        c = node.in_shape[0]
        k, st, pd = pool_params(node.params)
        params = {"stride": st, "padding": pd, "groups": c}
        return ConvStage(name, q.weight, params, node.in_shape, node.out_shape, ar, x_bound, graded)
    raise UnsupportedError(
        f"{where}: the fixed-point emulator has no model for {op}; fold it into a neighbouring layer when quantizing"
    )
