"""Quantize a float Graph for a fixed-point target (Loihi 2 by default): Graph -> QGraph.

Per neuron layer one real scale λ is chosen; weights, threshold and bias of the layer are all multiplied
by it, which leaves the float layer's spikes unchanged, and then rounded to the target's integers
(lava-fixed-point.md §2; the mapping and the per-neuron factors live in layer_map.py):

    w_int · 2^weight_exp ≈ λ · gain · W      8-bit mantissas (MIXED sign: even values up to 254)
    vth = round(λ · v_th')  ≤ 2^17 − 1        bias_mant · 2^bias_exp ≈ 64 · λ · bias_per_step
    dv = round(4096 · dt/τ_mem), du = 4095 (LIF) or round(4096 · dt/τ_syn) − 1 (CubaLIF)

λ is written as λ0 · 2^n, where λ0 puts the layer's largest weight at the top of the mantissa range, so the
mantissas always use the full range and n moves the weight exponent. Methods choose n:

- maxabs (default): n = 0, lowered only as far as the threshold, bias or (readouts) the state range need.
- percentile: n as large as the calibration data allow: the q-th percentile of the per-step input
  current must stay below 2^17/2 (u wraps at 2^17 in weight units) and of |v| below 2^17/2 (v saturates);
  a larger λ makes threshold, bias and leak truncation finer at no cost to the weights.
- search: per layer, tries n from the maxabs to the percentile choice (±1) and keeps the one with the
  fewest spike disagreements against the float model with synapse delay, on calibration data, through
  the fixed-point emulator; layers whose observed current would wrap u get a lower n.

Refused (UnsupportedError naming the node, the reason and a fix) unless allow_approximate=True, which
records each approximation in qg.deviations: graded spikes, leaks that round to zero, per-position gains
under a shared conv kernel. Delay nodes become per-synapse delays (delays.py); v_reset ≠ 0 shifts the state
and starts it at −v_reset (CubaParams.v_init).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict

import numpy as np

from spikedeploy.errors import SpikeDeployError, TargetLimitError, UnsupportedError
from spikedeploy.graph.ir import Graph, set_dt
from spikedeploy.graph.neuron_reach import warn_unreachable
from spikedeploy.graph.ops import BIASED
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, SynapseParams
from spikedeploy.quantize.delays import fold as fold_delays
from spikedeploy.quantize.delays import reinsert as reinsert_delays
from spikedeploy.quantize.delays import restore as restore_delays
from spikedeploy.quantize.layer_map import (
    PLAIN_RULE,
    Approx,
    ChipLayer,
    check_graph,
    check_neuron_models,
    effective_weight,
    find_layers,
    lower_structure,
)
from spikedeploy.targets.capabilities import check_capabilities
from spikedeploy.targets.loihi_arith import sign_mode_of
from spikedeploy.targets.spec import NumericFormat, TargetSpec, get_target

METHODS = ("maxabs", "percentile", "search")
HEADROOM = 0.5  # percentile/search keep the observed q-th percentile at half of the wrap/saturation limit


class QuantizationWarning(UserWarning):
    """A quantized layer can overflow (u wraps, v saturates, the conv accumulator wraps)."""


def quantize(
    graph: Graph,
    target: str | TargetSpec = "loihi2",
    *,
    method: str = "maxabs",
    calibration: Mapping[str, np.ndarray] | None = None,
    allow_approximate: bool = False,
    weight_bits: int | None = None,
    seed: int = 0,
    percentile: float = 99.99,
    dt: float | None = None,
    bias_exp_min: int = 0,
    bias_onset: str = "auto",
) -> QGraph:
    """Quantize `graph` for `target`. calibration: {input name: [T, B, ...]} (needed by percentile/search).

    bias_exp_min: the smallest bias exponent used, for consumers that fix it (lava-dl netx stores biases
    with bias_exp = 6, whole weight units); biases finer than 2**bias_exp_min round to that step.
    bias_onset: when a layer's bias (and CubaLIF synapse bias) starts acting in each sample, see BIAS_ONSETS.
    """
    spec = get_target(target) if isinstance(target, str) else target
    fmt = spec.numeric
    if method not in METHODS:
        raise SpikeDeployError(f"unknown quantization method '{method}'; choose one of {', '.join(METHODS)}")
    if method != "maxabs" and calibration is None:
        raise SpikeDeployError(f"method '{method}' needs calibration data (calibration={{input: [T, B, ...]}})")
    if bias_onset not in BIAS_ONSETS:
        raise SpikeDeployError(f"unknown bias onset '{bias_onset}'; choose one of {', '.join(BIAS_ONSETS)}")
    if bias_onset == "auto":
        bias_onset = "step0" if graph.meta.get("format") == "netx" else "depth"
    if not 0 <= bias_exp_min <= fmt.bias_exp_max:
        raise TargetLimitError(f"bias_exp_min must be in 0..{fmt.bias_exp_max} for target '{spec.name}', "
                               f"got {bias_exp_min}")
    nwb = fmt.weight_bits if weight_bits is None else int(weight_bits)
    if not 1 <= nwb <= fmt.weight_bits:
        raise TargetLimitError(f"weight_bits must be in 1..{fmt.weight_bits} for target '{spec.name}', got {nwb}")
    approx = Approx(allow_approximate)
    g = graph.copy()
    if dt is not None:
        set_dt(g, dt)
    g.validate()
    check_graph(g, approx)
    check_capabilities(g, spec)
    warn_unreachable(g)
    rewrites = lower_structure(g)
    if calibration is not None:  # host values the chip reads: their payload scale from the calibration data
        from spikedeploy.simulate.hybrid import calibrate_payloads

        rewrites = rewrites + calibrate_payloads(g, calibration)
    folded, notes = fold_delays(g, fmt.max_delay, spec.name)
    rewrites = rewrites + notes
    layers = find_layers(g, g.dt, fmt, approx)
    check_neuron_models(layers, spec)
    q = Quantizer(g, layers, fmt, nwb, bias_exp_min, bias_onset)
    q.folded_delays = folded

    stats = q.calibrate(calibration, percentile) if calibration is not None else None
    n_max = {name: q.n_static_max(lay) for name, lay in layers.items()}
    chosen = {name: min(0, n_max[name]) for name in layers}
    if method in ("percentile", "search"):
        chosen = {name: min(n_max[name], q.n_from_data(layers[name], stats[name])) for name in layers}
    if method == "search":
        chosen = _search(q, spec, graph, calibration, chosen, n_max, stats, seed)

    qg = q.build(chosen, spec)
    qg.deviations = approx.deviations + qg.deviations
    qg.meta.update({
        "method": method, "weight_bits": nwb, "rewrites": rewrites, "percentile": percentile if stats else None,
        "notes": sorted({f"{name}: {m}" for name, lay in layers.items() for m in lay.notes}),
        "bias_exp_min": bias_exp_min,
        "source": {k: graph.meta[k] for k in ("source", "format") if k in graph.meta},
    })
    warns = overflow_warnings(q, qg, stats)
    qg.meta["warnings"] = warns
    for w in warns:
        warnings.warn(w, QuantizationWarning, stacklevel=2)
    return qg


# ---- the per-layer machinery --------------------------------------------------------------------

def _grid(fmt: NumericFormat, nwb: int, mode: str) -> tuple[int, int]:
    """(step, largest magnitude) of the mantissas Lava keeps for this sign mode (weightutils truncation)."""
    k = fmt.weight_bits - nwb + (1 if mode == "mixed" and fmt.mixed_sign_drops_lsb else 0)
    step = 2**k
    return step, 2**fmt.weight_bits - step


class Quantizer:
    def __init__(self, g: Graph, layers: dict[str, ChipLayer], fmt: NumericFormat, nwb: int, bias_exp_min: int = 0,
                 bias_onset: str = "step0"):
        self.g, self.layers, self.fmt, self.nwb = g, layers, fmt, nwb
        self.bias_exp_min = bias_exp_min
        self.bias_onset = bias_onset
        self.folded_delays = []  # Delay nodes held by their Dense's per-synapse delays (delays.py)
        self._xmax: dict[str, float] = {}  # largest input value per source (calibration; spikes: 1)
        for lay in layers.values():  # host values arrive as integer payloads of known magnitude
            for c in lay.chains:
                pay = g.nodes[c.src].meta.get("payload") if g.nodes[c.src].placement == "host" else None
                if pay is not None:
                    self._xmax[c.src] = max(1.0, float(pay["max_abs"]) / float(pay["scale"]))
        self.vth_max = 2**fmt.vth_bits - 1
        self.a_lim = 2 ** (fmt.state_bits - 1 - fmt.act_shift)  # |a_in| at which 64·a_in reaches the state range
        self.bias_lim = (2 ** (fmt.bias_mant_bits - 1) - 1) * 2**fmt.bias_exp_max
        self.weff = {c.syn: effective_weight(g, lay, c) for lay in layers.values() for c in lay.chains}
        self.lam0 = {}
        for name, lay in layers.items():
            ratios = [self._ratio(c.syn) for c in lay.chains]
            ratios = [r for r in ratios if np.isfinite(r)]
            self.lam0[name] = min(ratios) if ratios else 1.0

    def _ratio(self, syn: str) -> float:
        w = self.weff[syn]
        mode = sign_mode_of(w)
        m = _grid(self.fmt, self.nwb, mode)[1]
        if m <= 0:
            raise TargetLimitError(
                f"synapse '{syn}': {self.nwb}-bit {mode}-sign weights keep no non-zero value of both signs (Lava drops "
                "the lowest bit of mixed-sign weights); fix: weight_bits >= 2"
            )
        mx = float(np.abs(w).max(initial=0))
        return m / mx if mx > 0 else math.inf

    # λ = λ0 · 2^n
    def n_static_max(self, lay: ChipLayer) -> int:
        """Largest n the threshold, the bias and conv weights (exponent fixed at 0) allow, without data."""
        lam0 = self.lam0[lay.name]
        bounds = []
        if lay.spiking and lay.vth_f.max() > 0:
            bounds.append(self.vth_max / lay.vth_f.max())
        bmax = float(np.abs(lay.bias_f).max(initial=0)) * 2**self.fmt.act_shift
        if bmax > 0:
            bounds.append(self.bias_lim / bmax)
        for c in lay.chains:
            if c.kind == "conv":
                bounds.append(self._ratio(c.syn))  # Lava's Conv ignores weight_exp: never past full range
        n = self.fmt.weight_exp_max + 8  # generous ceiling; weight exponents are clamped later
        for b in bounds:
            if math.isfinite(b / lam0) and b / lam0 > 0:  # an all-zero weight (ratio inf) bounds nothing
                n = min(n, math.floor(math.log2(b / lam0) + 1e-12))
        if not lay.spiking and lay.op != "I":
            n = min(n, self._n_readout_worst(lay))
        return n

    def _n_readout_worst(self, lay: ChipLayer) -> int:
        """A never-spiking LI/CubaLI layer holds v ≈ r·(W x + b) + v_leak: keep 64λ|v| inside the state range."""
        lam0 = self.lam0[lay.name]
        km = np.asarray(lay.dv, dtype=float) / 2**self.fmt.decay_bits
        km = np.where(km > 0, km, 1.0)
        a = np.zeros(lay.gain.size)
        for c in lay.chains:
            a = a + self._abs_rowsum(c, lay) * self._xmax.get(c.src, 1.0)
        vbound = float(((a + np.abs(lay.bias_f)) / km).max(initial=0))
        if vbound <= 0:
            return 0
        return math.floor(math.log2((self.a_lim - 1) / (lam0 * vbound)))

    def _abs_rowsum(self, c, lay: ChipLayer, sign: int = 0) -> np.ndarray:
        """Per neuron Σ|W_eff| (sign=0), Σ max(W,0) (sign=1) or Σ min(W,0) (sign=-1), λ-free."""
        w = self.weff[c.syn]
        f = np.abs if sign == 0 else (lambda x: np.maximum(x, 0)) if sign > 0 else (lambda x: np.minimum(x, 0))
        if c.kind == "dense":
            return f(w).sum(axis=1)
        if c.kind == "scale":
            return f(w)
        per_ch = f(w).reshape(w.shape[0], -1).sum(axis=1)
        return np.repeat(per_ch, lay.gain.size // w.shape[0])

    # ---- calibration ------------------------------------------------------------------------------
    def calibrate(self, calibration, q: float) -> dict[str, dict]:
        """Float run on the chip graph; per layer the λ-free input current and v statistics."""
        from spikedeploy.simulate.float_ref import simulate_float

        g = self.g
        syns = [c.syn for lay in self.layers.values() for c in lay.chains]
        run = simulate_float(reinsert_delays(g.copy(), self.folded_delays) if self.folded_delays else g, calibration,
                             probes=list(self.layers) + syns)
        self._xmax.update({n: float(np.abs(np.asarray(x)).max(initial=0)) for n, x in calibration.items()})
        self._xmax.update({n: 1.0 for n in self.layers})
        self.cal_run = run
        out = {}
        for name, lay in self.layers.items():
            T, B = run.steps, run.batch
            a = np.zeros((T, B, lay.gain.size))
            for c in lay.chains:
                y = run.traces[c.syn]["out"].reshape(T, B, -1)
                sn = g.nodes[c.syn]
                b = sn.params.get("bias") if sn.op in BIASED else None
                if b is not None:
                    b = np.asarray(b, dtype=float).reshape(-1)
                    if sn.op.startswith("Conv"):
                        b = np.repeat(b, y.shape[-1] // b.size)
                    y = y - b
                a = a + y
            a = a * lay.gain
            v = run.traces[name]["v"].reshape(T, B, -1)
            vmin = np.minimum(v, 0)
            out[name] = {
                "a_pct": float(np.percentile(np.abs(a), q)) if a.size else 0.0,
                "a_max": float(np.abs(a).max(initial=0)),
                "a_pos": float(a.max(initial=0)), "a_neg": float(a.min(initial=0)),
                "v_pct": float(np.percentile(np.abs(v if not lay.spiking else vmin), q)) if v.size else 0.0,
                "v_min": float(v.min(initial=0)), "v_max": float(v.max(initial=0)),
                "rate": float(run.traces[name]["s"].mean()) if "s" in run.traces[name] else None,
            }
        return out

    def n_from_data(self, lay: ChipLayer, st: dict) -> int:
        lam0 = self.lam0[lay.name]
        n = self.fmt.weight_exp_max
        a = st["a_pct"]
        if a > 0:
            n = min(n, math.floor(math.log2(HEADROOM * self.a_lim / (lam0 * a))))
        v = st["v_pct"]
        if v > 0:
            n = min(n, math.floor(math.log2(HEADROOM * self.a_lim / (lam0 * v))))
        return n

    # ---- materialize ------------------------------------------------------------------------------
    def layer_q(self, lay: ChipLayer, n: int) -> tuple[CubaParams, dict[str, SynapseParams], dict]:
        """Integer parameters of the neuron node and its synapse nodes at λ = λ0·2^n, and a small report."""
        fmt = self.fmt
        lam = self.lam0[lay.name] * 2.0**n
        # Lava's Conv has no weight exponent: below full range (n < 0) its largest weight would round onto the
        # mantissa grid (254 · 2^-3 = 31.75 -> 32); a slightly smaller λ puts it on the grid exactly, so weights
        # already on a grid (quantization-aware training) map exactly
        for c in lay.chains:
            if c.kind == "conv" and n < 0:
                step = _grid(fmt, self.nwb, sign_mode_of(self.weff[c.syn]))[0]
                amax = lam * float(np.abs(self.weff[c.syn]).max(initial=0))
                if amax >= step and amax % step:
                    lam *= step * math.floor(amax / step) / amax
        syn_q, rep = {}, {"lambda": lam, "n": n, "weights": {}}
        for c in lay.chains:
            a = lam * self.weff[c.syn]
            mode = sign_mode_of(self.weff[c.syn])
            step, m = _grid(fmt, self.nwb, mode)
            mx = float(np.abs(a).max(initial=0))
            if c.kind == "conv" or mx == 0:
                e = 0
            else:
                e = math.ceil(math.log2(mx / m) - 1e-12)
                e = max(fmt.weight_exp_min, min(fmt.weight_exp_max, e))
            lo = -(2**fmt.weight_bits) if mode == "mixed" else (-m if mode == "inh" else 0)
            hi = m if mode != "inh" else 0
            wq = step * np.rint(a / (2.0**e * step))
            clipped = int(((wq < lo) | (wq > hi)).sum())
            wq = np.clip(wq, lo, hi).astype(np.int16)
            err = np.abs(wq * 2.0**e - a)
            syn_q[c.syn] = SynapseParams(weight=wq, weight_exp=int(e), num_weight_bits=self.nwb, sign_mode=mode)
            rep["weights"][c.syn] = {
                "sign_mode": mode, "weight_exp": int(e), "max_mantissa": int(np.abs(wq).max(initial=0)),
                "clipped": clipped, "rel_rms_error": float(np.sqrt((err**2).mean()) / (np.abs(a).mean() + 1e-300)),
            }
        bias = (2**fmt.act_shift) * lam * lay.bias_f
        bmax = float(np.abs(bias).max(initial=0))
        mant_max = 2 ** (fmt.bias_mant_bits - 1) - 1
        be = self.bias_exp_min
        while be < fmt.bias_exp_max and np.rint(bmax / 2**be) > mant_max:
            be += 1
        bm = np.rint(bias / 2**be)
        if np.abs(bm).max(initial=0) > mant_max:
            raise TargetLimitError(
                f"node '{lay.name}': bias {bmax:g} (chip units) exceeds {mant_max}·2^{fmt.bias_exp_max}; "
                "fix: smaller biases or a smaller scale"
            )
        if lay.spiking:
            vth = np.rint(lam * lay.vth_f)
            vth = int(vth[0]) if np.all(vth == vth[0]) else vth.astype(np.int64)
        else:
            vth = 2 ** (fmt.state_bits - 1 - fmt.act_shift)  # vth << 6 = 2^23 > any v: never spikes
        nq = CubaParams(du=lay.du, dv=lay.dv, vth=vth, bias_mant=bm.astype(np.int16), bias_exp=int(be))
        if lay.rule != PLAIN_RULE:
            rule = lay.rule
            nq.reset, nq.reset_delay = str(rule["reset"]), bool(rule["reset_delay"])
            nq.fire_at_equal, nq.pending_reset = bool(rule["fire_at_equal"]), bool(rule["pending_reset"])
        if lay.ubias_f is not None:
            # added to u every step, in state units (a_in << 6): no mantissa/exponent split is needed by our
            # own neuron model; it must stay inside u's 24-bit range
            nq.u_bias = _state_units(lay, lam, lay.ubias_f, fmt, "current bias", "u",
                                     "smaller biases or a smaller scale")
        if lay.v_init_f is not None:
            nq.v_init = _state_units(lay, lam, lay.v_init_f, fmt, "the start -v_reset", "v",
                                     "a v_reset closer to 0 or a smaller scale")
        if np.max(np.asarray(vth)) > self.vth_max and lay.spiking:
            raise TargetLimitError(f"node '{lay.name}': threshold {int(np.max(vth))} exceeds {self.vth_max}")
        return nq, syn_q, rep

    def build(self, chosen: dict[str, int], spec: TargetSpec) -> QGraph:
        qg = QGraph(graph=self.g.copy(), target=spec.name)
        report = {}
        for name, lay in self.layers.items():
            nq, sq, rep = self.layer_q(lay, chosen[name])
            qg.q[name] = nq
            qg.q.update(sq)
            qg.scale[name] = rep["lambda"]
            report[name] = rep
            for s, r in rep["weights"].items():
                if r["clipped"]:
                    qg.deviations.append(f"synapse '{s}': {r['clipped']} weight(s) clipped to the mantissa range")
        qg.meta["layers"] = report
        qg.meta["bias_onset"] = self.bias_onset
        if self.bias_onset == "depth":
            set_bias_onsets(qg)
        set_v_init_steps(qg, self.bias_onset)
        restore_delays(qg, self.folded_delays)
        # the target's arithmetic travels with the graph: a chip file's name alone cannot be resolved later
        qg.meta["numeric"] = asdict(spec.numeric)
        return qg


BIAS_ONSETS = ("auto", "depth", "step0")
BIAS_ONSET_DOC = (
    "When each layer's bias starts acting in a sample. 'depth': at the layer's synapse depth, the step its first "
    "input arrives, as in the float model, which has no synapse delays (the host enables the bias then: one "
    "register write per layer and sample); 'step0': from the first step, as lava-dl's netx networks were trained "
    "(a deep layer then integrates its bias alone until its input arrives); 'auto': step0 for netx files, else depth."
)


def _state_units(lay: ChipLayer, lam: float, value_f, fmt: NumericFormat, what: str, state: str, fix: str) -> np.ndarray:
    """A float value in the layer's state units (a_in << act_shift), refused beyond the state register."""
    x = np.rint((2**fmt.act_shift) * lam * value_f).astype(np.int64)
    top = 2 ** (fmt.state_bits - 1) - 1
    if np.abs(x).max(initial=0) > top:
        raise TargetLimitError(f"node '{lay.name}': {what} is {int(np.abs(x).max())} chip units, beyond {state}'s "
                               f"range {top}; fix: {fix}")
    return x


def set_bias_onsets(qg: QGraph) -> None:
    """bias_onset = the synapse depth of every neuron layer with a bias (bias_mant or u_bias) that is
    reached only after some steps; the emulator and the Lava backend hold its bias at 0 before that step."""
    from spikedeploy.simulate.float_ref import synapse_depth

    depth = synapse_depth(qg.graph)
    for name, nq in qg.q.items():
        if isinstance(nq, CubaParams) and depth.get(name, 0) > 0 and (
                np.any(nq.bias_mant) or nq.u_bias is not None and np.any(nq.u_bias)):
            nq.bias_onset = int(depth[name])


def set_v_init_steps(qg: QGraph, bias_onset: str) -> None:
    """v_init_step of every layer with a v_init: its synapse depth ('depth': the float model rests at v = 0
    until the layer's first input arrives) or 0 ('step0')."""
    from spikedeploy.simulate.float_ref import synapse_depth

    depth = synapse_depth(qg.graph) if bias_onset == "depth" else {}
    for name, nq in qg.q.items():
        if isinstance(nq, CubaParams) and nq.v_init is not None:
            nq.v_init_step = int(depth.get(name, 0))


# ---- overflow analysis --------------------------------------------------------------------------

def overflow_warnings(q: Quantizer, qg: QGraph, stats: dict | None) -> list[str]:
    """Layers whose u can wrap or v saturate, with the bound and a fix.

    Without calibration data the bound is the worst case: every excitatory (inhibitory) input active at
    its largest value in the same step (spikes: 1; Input nodes: 1 unless calibration shows more). With
    calibration data it is what the float model showed, scaled by λ.
    """
    fmt = q.fmt
    out = []
    lim = q.a_lim
    for name, lay in q.layers.items():
        lam = qg.scale[name]
        rep = qg.meta["layers"][name]
        if stats is None:
            amax, amin = 0, 0
            for c in lay.chains:
                sq = qg.q[c.syn]
                x = q._xmax.get(c.src, 1.0)
                pos, neg = _int_rowsums(sq.weight, c, lay)
                e = sq.weight_exp
                amax = amax + _shift(pos * x, e)
                amin = amin + _shift(neg * x, e)
            amax, amin = float(np.max(amax, initial=0)), float(np.min(amin, initial=0))
            how = "worst case: all excitatory (inhibitory) inputs active in one step"
        else:
            amax, amin = lam * stats[name]["a_pos"], lam * stats[name]["a_neg"]
            how = "observed on the calibration data (float model)"
        du = np.asarray(lay.du)
        grow = float((2**fmt.decay_bits / np.maximum(du + 1, 1)).max()) if np.any(du < 2**fmt.decay_bits - 1) else 1.0
        upos, uneg = amax * grow, amin * grow  # CubaLIF: u accumulates up to a/(k_s)
        rep["a_in_bound"] = [amin, amax]
        if upos > lim or uneg <= -lim:
            out.append(
                f"layer '{name}': per-step input current reaches {max(upos, -uneg):.0f} weight units ({how}); u "
                f"wraps beyond ±2^{fmt.state_bits - 1 - fmt.act_shift} = {lim} and flips sign. Fix: a negative "
                f"weight exponent / smaller scale (method='search' applies it), or weaker incoming weights"
            )
        for c in lay.chains:
            if c.kind == "conv":
                pos, neg = _int_rowsums(qg.q[c.syn].weight, c, lay)
                x = q._xmax.get(c.src, 1.0)
                acc = max(float(pos.max(initial=0)), float(-neg.min(initial=0))) * x
                if acc >= 2 ** (fmt.conv_acc_bits - 1):
                    out.append(f"conv '{c.syn}': the sum can reach {acc:.0f} and wrap the {fmt.conv_acc_bits}-bit "
                               "accumulator; fix: a smaller scale for its layer")
        if stats is not None:
            vlo, vhi = (2**fmt.act_shift * lam * stats[name][k] for k in ("v_min", "v_max"))
            vsat = 2 ** (fmt.state_bits - 1) - 1
            if vlo < -vsat or (not lay.spiking and vhi > vsat):
                out.append(f"layer '{name}': v reaches {min(vlo, -vhi):.0f} on the calibration data and saturates at "
                           f"±{vsat}; fix: a smaller scale (method='search'), or weaker inhibition")
    return out


def _int_rowsums(w, c, lay: ChipLayer):
    w = np.asarray(w, dtype=np.float64)
    if c.kind == "dense":
        return np.maximum(w, 0).sum(1), np.minimum(w, 0).sum(1)
    if c.kind == "scale":
        return np.maximum(w, 0), np.minimum(w, 0)
    r = w.reshape(w.shape[0], -1)
    return np.maximum(r, 0).sum(1), np.minimum(r, 0).sum(1)


def _shift(x, e: int):
    return x * 2.0**e if e >= 0 else np.floor(x / 2.0**-e)


# ---- search -------------------------------------------------------------------------------------

def _search(q: Quantizer, spec: TargetSpec, graph: Graph, calibration, start: dict[str, int], n_max: dict[str, int],
            stats: dict, seed: int) -> dict[str, int]:
    """Greedy per layer, in evaluation order: keep the n with the fewest spike disagreements."""
    from spikedeploy.quantize.fidelity import spike_disagreement

    del seed  # deterministic: candidates are enumerated, not sampled
    chosen = dict(start)
    ref = None
    order, _ = q.g.order()
    for name in [n for n in order if n in q.layers]:
        lay = q.layers[name]
        lo = min(0, n_max[name]) - 1
        hi = min(n_max[name], start[name] + 1)
        # the overflow fix: never above the n at which the observed current would wrap u
        a = stats[name]["a_max"] * (1 if np.all(np.asarray(lay.du) >= 2**q.fmt.decay_bits - 1) else
                                    float((2**q.fmt.decay_bits / np.maximum(np.asarray(lay.du) + 1, 1)).max()))
        if a > 0:
            hi = min(hi, math.floor(math.log2((q.a_lim - 1) / (q.lam0[name] * a))))
        cands = sorted(set(range(min(lo, hi), hi + 1)))
        best = None
        for n in cands:
            trial = dict(chosen)
            trial[name] = n
            try:
                qg = q.build(trial, spec)
            except SpikeDeployError:
                continue
            d, ref = spike_disagreement(graph, qg, calibration, ref=ref)
            if best is None or d < best[0]:
                best = (d, n)
        if best is not None:
            chosen[name] = best[1]
    return chosen


__all__ = ["quantize", "QuantizationWarning", "METHODS", "UnsupportedError"]
