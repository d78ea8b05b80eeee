"""From a float Graph to the chip's layer structure: pooling folds, layer discovery, per-neuron gains.

Every neuron node on chip becomes one layer of CUBA compartments fed by one or more synapse nodes (Dense,
Conv). This module finds those layers, rewrites what can be rewritten exactly (pooling folded into the
next Conv or Dense, pooling straight into neurons as a grouped Conv), refuses what cannot be mapped, and
computes for each neuron the factors that turn float weights, biases and thresholds into the chip's units
(lava-fixed-point.md §2):

    a_in   = λ · gain · (W x)                 input current per step, in weight units
    bias   = λ · (k_m · v_leak' + hgain · b)  per step, in the same units (Lava adds it to v, ×64)
    vth    = λ · v_th'                         v_th' = v_th − v_reset (the state is shifted so reset is 0)

with gain = k_m·r (LIF), k_m·r·k_s·w_in (CubaLIF), dt·r (IF, I), 1 (Threshold); k_m = dv/4096 and
k_s = (du+1)/4096 use the *rounded* decays so the steady-state gain stays exact.

A CubaLIF's synapse bias b enters its current, as in NIR (u += k_s·(−u + w_in·(Wx + b))), so it is not a
v bias: u_bias = λ · gain · b per step (ChipLayer.ubias_f), added to u next to a_in by spikedeploy's own neuron
model (targets/lava/neurons.py), which Loihi 2's programmable neurons can run. The reset rule of each node
(graph.neuron_rule) is carried into the layer: subtraction subtracts the integer threshold vth << 6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikedeploy.errors import UnsupportedError
from spikedeploy.graph.ir import Graph, Node, neuron_rule
from spikedeploy.graph.ops import (
    BIASED,
    CONV,
    CUBA,
    CUBA_SPIKING,
    CURRENT_BASED,
    DENSE,
    MATRIX,
    MEMBRANE_ONLY,
    POOL,
    RESETTING,
    SPATIAL,
    WEIGHTED,
    conv_params,
    pool_params,
)
from spikedeploy.targets.spec import NumericFormat

CHIP_SYNAPSES = MATRIX | CONV  # what a chip layer's synapses may be once pools are folded
READOUTS = CUBA - CUBA_SPIKING  # LI, CubaLI, I: never spike on chip (vth = 2**17)
PLAIN_RULE = {"reset": "zero", "reset_delay": False, "fire_at_equal": False, "pending_reset": False}  # Lava's LIF


@dataclass
class Chain:
    """One synapse node feeding a neuron layer."""

    syn: str
    src: str  # node whose output the synapse reads (Input, neuron, or host node), Flatten skipped
    kind: str  # "dense" | "conv" | "scale"


@dataclass
class ChipLayer:
    name: str
    op: str
    shape: tuple[int, ...]
    chains: list[Chain]
    du: int | np.ndarray
    dv: int | np.ndarray
    gain: np.ndarray  # per neuron, flat
    hgain: np.ndarray  # per neuron: factor of the Affine/Conv bias into v
    leak: np.ndarray  # per neuron: k_m · v_leak' (λ-free bias part)
    vth_f: np.ndarray | None  # per neuron v_th' (None: readout, never spikes)
    bias_f: np.ndarray = field(default=None)  # λ-free bias per step in weight units (set by build)
    notes: list[str] = field(default_factory=list)
    rule: dict = field(default_factory=lambda: dict(PLAIN_RULE))
    ubias_f: np.ndarray | None = None  # λ-free bias into the current per step (CubaLIF synapse bias), or None

    @property
    def custom(self) -> bool:
        """Needs spikedeploy's programmable neuron model (not Lava's stock LIF)."""
        return self.ubias_f is not None or self.rule != PLAIN_RULE

    @property
    def spiking(self) -> bool:
        return self.vth_f is not None


class Approx:
    """Collects approximations: refuses them unless allowed, else records them as deviations."""

    def __init__(self, allow: bool):
        self.allow = allow
        self.deviations: list[str] = []

    def __call__(self, msg: str, fix: str) -> None:
        if not self.allow:
            raise UnsupportedError(f"{msg}; {fix} (or pass allow_approximate=True / --allow-approximate to record it "
                                   "as a deviation and go on)")
        self.deviations.append(msg)


# ---- graph-level checks and rewrites ------------------------------------------------------------

def check_graph(g: Graph, approx: Approx) -> None:
    # reset rules are per node (graph.neuron_rule) and run exactly on targets with programmable neurons;
    # check_neuron_models refuses them on the others
    for name, node in g.nodes.items():
        gsf = node.meta.get("graded_spikes_factor", node.params.get("graded_spikes_factor"))
        if gsf is not None and float(np.asarray(gsf)) != 1.0:
            approx(
                f"node '{name}' ({node.op}) emits graded spikes (factor {float(np.asarray(gsf)):g}); the chip "
                "sends binary spikes",
                "fold the factor into the next layer's weights and set graded_spikes_factor=1",
            )
        if node.op == "Delay" and node.placement == "chip":
            raise UnsupportedError(
                f"node '{name}' (Delay): delay nodes are not mapped by this quantizer yet (Lava would need a "
                "DelayDense); fix: remove the delay, or mark the node placement='host'"
            )
        if node.op in ("IF", "I") and node.placement == "chip":
            r = np.asarray(node.params["r"], dtype=float)
            if not np.all(np.isfinite(r)):
                raise UnsupportedError(
                    f"node '{name}' ({node.op}): r is not finite (snnTorch exports beta=1 as tau=r=inf); "
                    "fix: set r to the input gain of the integrator (1/dt for snnTorch's beta=1 Leaky)"
                )


def lower_structure(g: Graph) -> list[str]:
    """The exact structural rewrites, in order: constant scales into synapses, pooling into synapses (which
    may leave a scale next to a merged pooling conv, hence the second scale pass). Returns what was done."""
    return split_fanin(g) + fold_scales(g) + fold_pooling(g) + fold_scales(g) + merge_synapse_chains(g)


def split_fanin(g: Graph) -> list[str]:
    """A chip synapse summing several sources (a residual `W(a + b)` in a NIR file) into neurons becomes one
    copy per source into the same neurons: W(a + b) = Wa + Wb, the bias on the first copy only. The torch
    exporter already builds graphs this way; this covers graphs read from files."""
    done: list[str] = []
    for name in [n for n, v in g.nodes.items() if v.spec.family == "synapse" and v.placement == "chip"]:
        node, preds, succ = g.nodes[name], g.predecessors(name), g.successors(name)
        if len(preds) < 2 or not succ or not all(g.nodes[c].op in CUBA for c in succ):
            continue
        copies = []
        for i, p in enumerate(preds[1:], start=1):
            c = f"{name}.src{i}"
            while c in g.nodes:
                c += "_"
            params = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in node.params.items()}
            op = "Linear" if node.op == "Affine" else node.op
            if op == "Linear":
                params.pop("bias", None)
            elif params.get("bias") is not None:
                params["bias"] = None
            g.add(Node(c, op, params, placement="chip", modality=node.modality, meta=dict(node.meta)))
            g.edges[g.edges.index((p, name))] = (p, c)
            for t in succ:
                g.connect(c, t)
            copies.append(c)
        done.append(f"{node.op} '{name}' summed {len(preds)} sources: one copy per source ({name}, "
                    f"{', '.join(copies)}) into the same neurons (exact)")
    if done:
        g.infer_shapes()
    return done


MERGEABLE = MATRIX | SPATIAL


def _dense_reader(g: Graph, a: str) -> str | None:
    """The chip Dense that alone reads synapse `a` (through at most one Flatten) and reads only it, or None."""
    node = g.nodes[a]
    if node.op not in MERGEABLE or node.placement != "chip" or len(g.predecessors(a)) != 1 or len(g.successors(a)) != 1:
        return None
    b = g.successors(a)[0]
    if g.nodes[b].op == "Flatten":
        if g.predecessors(b) != [a] or len(g.successors(b)) != 1:
            return None
        b = g.successors(b)[0]
    ok = g.nodes[b].op in DENSE and g.nodes[b].placement == "chip" and len(g.predecessors(b)) == 1
    return b if ok else None


def merge_synapse_chains(g: Graph) -> list[str]:
    """A chip synapse A read only by a Dense B (through at most one Flatten) that reads only A — e.g. a token
    mean before a classifier head — becomes one Dense: W = W_B·M_A, b = W_B·b_A + b_B, where M_A is A written
    as a matrix (A applied to the unit vectors). Exact composition of two linear maps; the merged Dense has
    out_B × in_A weights."""
    import torch

    from spikedeploy.simulate.float_ref import _Layer  # the float backend's own definition of each synapse op

    done: list[str] = []
    changed = True
    while changed:
        changed = False
        g.infer_shapes()
        for bname, bnode in list(g.nodes.items()):
            if bnode.op not in DENSE or bnode.placement != "chip" or len(g.predecessors(bname)) != 1:
                continue
            a = g.predecessors(bname)[0]
            if g.nodes[a].op == "Flatten":
                if len(g.predecessors(a)) != 1:
                    continue
                a = g.predecessors(a)[0]
            if _dense_reader(g, a) != bname:
                continue
            flat = g.predecessors(bname)[0] if g.predecessors(bname)[0] != a else None
            anode = g.nodes[a]
            in_shape = tuple(anode.in_shape)
            n_in = int(np.prod(in_shape))
            layer = _Layer(g, a, torch.float64, n_in)
            with torch.no_grad():
                b_a = layer.step(torch.zeros((1, *in_shape), dtype=torch.float64)).reshape(-1).numpy()
                m_a = layer.step(torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)).reshape(n_in, -1).numpy()
            m_a = (m_a - b_a).T
            w_b = np.asarray(bnode.params["weight"], dtype=np.float64)
            bias = w_b @ b_a + (np.asarray(bnode.params["bias"], dtype=np.float64) if bnode.op == "Affine" else 0.0)
            bnode.params["weight"] = w_b @ m_a
            if np.any(bias != 0):
                bnode.op, bnode.params["bias"] = "Affine", bias
            src = g.predecessors(a)[0]
            g.edges = [e for e in g.edges if a not in e]
            del g.nodes[a]
            if flat is None and len(in_shape) > 1:
                flat = bname + ".flat"
                g.add(Node(flat, "Flatten", {}, placement="chip", modality=bnode.modality))
                g.edges = [e for e in g.edges if e[1] != bname] + [(flat, bname)]
            if flat is not None:
                g.nodes[flat].params.update(start_dim=np.asarray(0), end_dim=np.asarray(-1), input_shape=None)
            g.edges.append((src, flat or bname))
            done.append(f"{anode.op} '{a}' merged into {bnode.op} '{bname}' after it (exact: one Dense "
                        f"{w_b.shape[0]}x{n_in}, W_B·M_A)")
            changed = True
            break
    if done:
        g.infer_shapes()
    return done


SCALABLE = MATRIX | CONV


def fold_scales(g: Graph) -> list[str]:
    """Fold constant Scale nodes into the synapse next to them, so that no Scale reads a synapse (the chip has
    no synapse-to-synapse path):

    - after a synapse that feeds only the Scale: s ⊙ (W x + b) = (s ⊙ W) x + s ⊙ b (per output; a Conv needs
      one factor per output channel);
    - before synapses that read only the Scale (through at most one Flatten): W (s ⊙ x) = (W ⊙ s) x (per
      input column; a Conv needs one factor per input channel).
    A Scale between a neuron and a neuron is itself the synapse and stays.
    """
    done: list[str] = []
    g.infer_shapes()
    for name in [n for n, v in g.nodes.items() if v.op == "Scale" and v.placement == "chip"]:
        node = g.nodes[name]
        preds, succ = g.predecessors(name), g.successors(name)
        if len(preds) != 1:
            continue
        s = np.asarray(node.params["scale"], dtype=np.float64)
        p = g.nodes[preds[0]]
        if p.placement == "chip" and p.op in SCALABLE and g.successors(p.name) == [name] and _scale_outputs(p, s):
            _bypass_all(g, name)
            done.append(f"Scale '{name}' folded into the weights of {p.op} '{p.name}' before it (exact)")
            continue
        targets = [_scale_reader(g, name, c) for c in succ]
        if succ and all(t is not None for t in targets) and len(preds) == 1:
            factors = [_input_factor(g.nodes[t], s, node.out_shape) for t in targets]
            if all(f is not None for f in factors):
                for t, f in zip(targets, factors, strict=True):
                    g.nodes[t].params["weight"] = np.asarray(g.nodes[t].params["weight"], dtype=np.float64) * f
                _bypass_all(g, name)
                done.append(f"Scale '{name}' folded into the weights of {', '.join(targets)} after it (exact)")
    if done:
        g.infer_shapes()
    return done


def _scale_outputs(p: Node, s: np.ndarray) -> bool:
    """Multiply the outputs of synapse `p` by `s` (scalar or its output shape), in place, if its layout allows."""
    sf = np.broadcast_to(s, p.out_shape).astype(np.float64)
    if p.op == "Scale":
        p.params["scale"] = np.asarray(p.params["scale"], dtype=np.float64) * sf
        return True
    if p.op in DENSE:
        col = sf.reshape(-1)
    else:  # conv weights are shared over positions: one factor per output channel
        per = sf.reshape(sf.shape[0], -1)
        if not np.all(per == per[:, :1]):
            return False
        col = per[:, 0]
    w = np.asarray(p.params["weight"], dtype=np.float64)
    p.params["weight"] = w * col.reshape((-1,) + (1,) * (w.ndim - 1))
    if p.params.get("bias") is not None:
        p.params["bias"] = np.asarray(p.params["bias"], dtype=np.float64) * col
    return True


def _scale_reader(g: Graph, scale: str, c: str) -> str | None:
    """The Dense/Conv that reads only `scale` (through at most one Flatten), or None."""
    if g.nodes[c].op == "Flatten" and g.predecessors(c) == [scale] and len(g.successors(c)) == 1:
        c2 = g.successors(c)[0]
        return c2 if g.nodes[c2].op in DENSE and g.predecessors(c2) == [c] else None
    ok = g.nodes[c].op in WEIGHTED and g.nodes[c].placement == "chip" and g.predecessors(c) == [scale]
    return c if ok else None


def _input_factor(t: Node, s: np.ndarray, in_shape) -> np.ndarray | None:
    """The factor on `t`'s weight that applies `s` to its input, or None if shared conv weights forbid it."""
    sf = np.broadcast_to(s, in_shape).astype(np.float64)
    if t.op in DENSE:
        return sf.reshape(1, -1)
    per = sf.reshape(sf.shape[0], -1)
    if not np.all(per == per[:, :1]):
        return None
    w = np.asarray(t.params["weight"])
    groups = int(t.params.get("groups", 1) or 1)
    out_pg, in_pg = w.shape[0] // groups, w.shape[1]
    # weight[o, j] reads input channel (o // out_per_group) · in_per_group + j
    ch = (np.arange(w.shape[0])[:, None] // out_pg) * in_pg + np.arange(in_pg)[None, :]
    return per[:, 0][ch].reshape(w.shape[:2] + (1,) * (w.ndim - 2))


def _bypass_all(g: Graph, name: str) -> None:
    preds, succ = g.predecessors(name), g.successors(name)
    g.edges = [e for e in g.edges if name not in e]
    for p in preds:
        for c in succ:
            g.edges.append((p, c))
    del g.nodes[name]


def fold_pooling(g: Graph) -> list[str]:
    """Rewrite pooling in place so that the chip graph has only Dense/Conv synapses. Returns what was done.

    - Non-overlapping pooling (stride = kernel, no padding) followed by Conv2d: W'[:,:,i,j] = W[:,:,i//p,j//p],
      stride·p, padding·p (exact; notes §2). Followed by Flatten → Affine/Linear: the Dense reads the
      un-pooled input with each weight repeated over its pooling window (exact).
    - Pooling straight into a neuron layer: a grouped Conv2d with constant weights (exact, any stride/padding).
    AvgPool2d is SumPool2d with weights 1/(kh·kw) (count_include_pad, as torch and NIR do).
    """
    done: list[str] = []
    for name in [n for n, v in g.nodes.items() if v.op in POOL and v.placement == "chip"]:
        node = g.nodes[name]
        k, st, pd = pool_params(node.params)
        C, H, W = node.in_shape
        factor = 1.0 / (k[0] * k[1]) if node.op == "AvgPool2d" else 1.0
        succ = g.successors(name)
        preds = g.predecessors(name)
        non_overlap = tuple(st) == tuple(k) and pd == (0, 0)
        if len(succ) == 1 and non_overlap:
            nxt = g.nodes[succ[0]]
            if nxt.op == "Conv2d" and _foldable_conv(nxt, (H, W), k):
                w = np.asarray(nxt.params["weight"], dtype=np.float64)
                nxt.params["weight"] = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3) * factor
                n_st, n_pd, _ = conv_params(nxt.params, 2)
                nxt.params["stride"] = np.asarray([s * p for s, p in zip(n_st, k, strict=True)])
                nxt.params["padding"] = np.asarray([q * p for q, p in zip(n_pd, k, strict=True)])
                _bypass(g, name, preds, succ[0])
                done.append(f"{node.op} '{name}' ({k[0]}x{k[1]}) folded into Conv2d '{succ[0]}' (exact)")
                continue
            if nxt.op == "Flatten" and len(g.successors(succ[0])) == 1:
                dense = g.nodes[g.successors(succ[0])[0]]
                if dense.op in DENSE and int(nxt.params.get("start_dim", 0)) in (0, -3):
                    Hp, Wp = H // k[0], W // k[1]
                    w = np.asarray(dense.params["weight"], dtype=np.float64).reshape(-1, C, Hp, Wp)
                    up = np.zeros((w.shape[0], C, H, W))
                    up[:, :, : Hp * k[0], : Wp * k[1]] = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3)
                    dense.params["weight"] = up.reshape(w.shape[0], -1) * factor
                    _bypass(g, name, preds, succ[0])
                    nxt.params["input_shape"] = None
                    done.append(f"{node.op} '{name}' ({k[0]}x{k[1]}) folded into {dense.op} '{dense.name}' "
                                "after Flatten (exact)")
                    continue
        if succ and all(g.nodes[s].op in CUBA for s in succ) and _merge_conv_pool(g, name, k, st, pd, factor):
            done.append(f"{node.op} '{name}' ({k[0]}x{k[1]}, stride {st[0]}x{st[1]}) merged into Conv2d "
                        f"'{preds[0]}' before it (exact: one Conv whose kernel is the sum of the shifted kernels)")
            continue
        if all(g.nodes[s].op in CUBA for s in succ):
            conv = Node(name, "Conv2d", {"weight": np.full((C, 1, k[0], k[1]), factor), "stride": np.asarray(st),
                                         "padding": np.asarray(pd), "groups": C}, placement=node.placement,
                        modality=node.modality, meta=dict(node.meta))
            g.nodes[name] = conv
            done.append(f"{node.op} '{name}' into neurons mapped to a grouped Conv2d with constant weights (exact)")
            continue
        if _dense_reader(g, name) is not None:
            continue  # merge_synapse_chains makes pooling + Dense one Dense (exact, any overlap or padding)
        why = "it overlaps or is padded" if not non_overlap else "what follows it is not a Conv2d or Flatten→Dense"
        raise UnsupportedError(
            f"node '{name}' ({node.op}): pooling cannot be folded into the chip's synapses ({why}); Lava has no "
            "pooling process. Fix: use non-overlapping pooling (stride = kernel, no padding) before a Conv2d or "
            "Flatten→Linear, or put a neuron layer right after the pooling"
        )
    if done:
        g.infer_shapes()
    return done


def _merge_conv_pool(g: Graph, name: str, k, st, pd, factor: float) -> bool:
    """Conv2d → pooling (no padding) → neurons as one Conv2d: pooled output o reads conv outputs o·sp + u,
    each reading inputs (o·sp + u)·s − p + t·d, i.e. one kernel of size (kp−1)·s + (k−1)·d + 1 holding W
    shifted by u·s for every pooling tap u, stride s·sp, the conv's padding, bias b·kp²·factor. The output
    size is the same (floor((floor(A/s) − kp + 1)/sp) = floor((A − (kp−1)s)/(s·sp))). Returns False if the
    pair does not qualify (pool padding would pad conv outputs, not inputs; the conv feeds something else)."""
    preds = g.predecessors(name)
    if len(preds) != 1 or pd != (0, 0):
        return False
    conv = g.nodes[preds[0]]
    if conv.op != "Conv2d" or conv.placement != "chip" or g.successors(conv.name) != [name] \
            or isinstance(conv.params.get("padding"), str):
        return False
    cs, cp, cd = conv_params(conv.params, 2)
    w = np.asarray(conv.params["weight"], dtype=np.float64)
    n_out, n_in, kh, kw = w.shape
    K = [(k[i] - 1) * cs[i] + ((kh, kw)[i] - 1) * cd[i] + 1 for i in range(2)]
    wn = np.zeros((n_out, n_in, K[0], K[1]))
    for u in range(k[0]):
        for v in range(k[1]):
            a, b = u * cs[0], v * cs[1]
            wn[:, :, a: a + (kh - 1) * cd[0] + 1: cd[0], b: b + (kw - 1) * cd[1] + 1: cd[1]] += w
    conv.params["weight"] = wn * factor
    conv.params["stride"] = np.asarray([cs[i] * st[i] for i in range(2)])
    conv.params["padding"] = np.asarray(cp)
    conv.params["dilation"] = np.asarray([1, 1])
    if conv.params.get("bias") is not None:
        conv.params["bias"] = np.asarray(conv.params["bias"], dtype=np.float64) * (k[0] * k[1] * factor)
    _bypass_all(g, name)
    return True


def _foldable_conv(conv: Node, hw: tuple[int, int], k: tuple[int, int]) -> bool:
    if isinstance(conv.params.get("padding"), str):
        return False
    _, pad, dil = conv_params(conv.params, 2)
    if dil != (1, 1):
        return False
    # with padding, rows the pooling dropped (H % p) would be read as data instead of zeros
    return all(p == 0 or n % kk == 0 for p, n, kk in zip(pad, hw, k, strict=True))


def _bypass(g: Graph, name: str, preds: list[str], succ: str) -> None:
    g.edges = [e for e in g.edges if name not in e]
    for p in preds:
        g.edges.append((p, succ))
    del g.nodes[name]


# ---- layer discovery ----------------------------------------------------------------------------

def _through_shapes(g: Graph, name: str, direction: str) -> str:
    """Follow Flatten nodes (one edge each) backwards or forwards."""
    while g.nodes[name].spec.family == "shape":
        nxt = g.predecessors(name) if direction == "back" else g.successors(name)
        if len(nxt) != 1:
            raise UnsupportedError(
                f"node '{name}' ({g.nodes[name].op}) has {len(nxt)} {'inputs' if direction == 'back' else 'outputs'}; "
                "on chip a Flatten must sit between exactly one source and one synapse"
            )
        name = nxt[0]
    return name


def find_layers(g: Graph, dt: float | None, fmt: NumericFormat, approx: Approx) -> dict[str, ChipLayer]:
    layers: dict[str, ChipLayer] = {}
    owner: dict[str, str] = {}
    for name, node in g.nodes.items():
        if node.placement != "chip":
            continue
        fam = node.spec.family
        if fam == "neuron":
            if node.op not in CUBA:
                raise UnsupportedError(f"node '{name}' ({node.op}): no chip neuron model")
            chains = []
            for p in g.predecessors(name):
                s = _through_shapes(g, p, "back")
                sn = g.nodes[s]
                if sn.op not in CHIP_SYNAPSES:
                    raise UnsupportedError(
                        f"node '{name}' ({node.op}) is fed by '{s}' ({sn.op}) without a synapse in between; on chip "
                        "every neuron input arrives through a Dense or Conv. Fix: insert a Linear with an identity "
                        "(or scaled identity) weight"
                    )
                if s in owner and owner[s] != name:
                    raise UnsupportedError(
                        f"synapse '{s}' feeds two neuron layers ('{owner[s]}' and '{name}'); each layer needs its own "
                        "scale. Fix: duplicate the synapse node, one per layer"
                    )
                owner[s] = name
                srcs = g.predecessors(s)
                if len(srcs) != 1:
                    raise UnsupportedError(
                        f"synapse '{s}' ({sn.op}) has {len(srcs)} inputs; on chip a synapse reads one source. "
                        "Fix: give each source its own synapse into the neuron layer"
                    )
                src = _through_shapes(g, srcs[0], "back")
                if g.nodes[src].spec.family == "synapse" and g.nodes[src].placement == "chip":
                    raise UnsupportedError(
                        f"synapse '{s}' ({sn.op}) reads synapse '{src}' ({g.nodes[src].op}) directly; the chip has no "
                        "synapse-to-synapse path. Fix: merge them into one layer, or put a neuron layer between them"
                    )
                if g.nodes[src].op in READOUTS and g.nodes[src].placement == "chip":
                    raise UnsupportedError(
                        f"synapse '{s}' ({sn.op}) reads '{src}' ({g.nodes[src].op}), a never-spiking readout; on chip "
                        "it sends nothing. Fix: make it a spiking layer (LIF/CubaLIF) or mark the readout and what "
                        "follows placement='host'"
                    )
                kind = "conv" if sn.op.startswith("Conv") else ("scale" if sn.op == "Scale" else "dense")
                chains.append(Chain(s, src, kind))
            if not chains:
                raise UnsupportedError(f"node '{name}' ({node.op}) has no input synapse")
            layers[name] = _neuron_factors(g, node, chains, dt, fmt, approx)
        elif fam == "synapse" and node.op not in CHIP_SYNAPSES:
            raise UnsupportedError(f"node '{name}' ({node.op}): no chip synapse model")
    for name, node in g.nodes.items():
        if node.placement == "chip" and node.op in CHIP_SYNAPSES and name not in owner:
            dst = [_through_shapes(g, s, "fwd") for s in g.successors(name)]
            raise UnsupportedError(
                f"synapse '{name}' ({node.op}) feeds {dst or 'nothing'} instead of a neuron layer; on chip a synapse "
                "must end in neurons. Fix: add an LI (never-spiking readout) layer after it, or mark it "
                "placement='host'"
            )
    for name in g.outputs:
        for p in g.predecessors(name):
            p2 = _through_shapes(g, p, "back")
            if g.nodes[p2].op in CHIP_SYNAPSES and g.nodes[p2].placement == "chip":
                raise UnsupportedError(f"Output '{name}' reads synapse '{p2}' directly; add an LI readout layer")
    return layers


def _flat(node: Node, key: str, n: int, default=None) -> np.ndarray:
    v = node.params.get(key, default)
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, n)
    if a.size != n:
        raise UnsupportedError(f"node '{node.name}' ({node.op}): parameter '{key}' has {a.size} values for {n} neurons")
    return a


def _decay(k: np.ndarray, name: str, what: str, approx: Approx, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """12-bit decay constant round(4096·k) and the factor it really applies."""
    one = 2**bits
    # time constants stored as float32 (NIR files) put dt/tau = 1 a few 1e-7 above 1: that is still tau = dt
    if np.any(k > 1 + 1e-6):
        raise UnsupportedError(
            f"node '{name}': dt/{what} = {float(k.max()):.7g} > 1 (dt larger than the time constant); the chip's "
            f"decay is at most {one}/{one}. Fix: a smaller dt, or a larger time constant"
        )
    k = np.minimum(k, 1.0)
    d = np.rint(k * one).astype(np.int64)
    kq = d / one
    lost = (d == 0) & (k > 0)
    if lost.any():
        approx(f"node '{name}': {what} > {one}·dt on {int(lost.sum())} neuron(s); the decay rounds to 0 (no leak)",
               f"use dt ≥ {what}/{one}")
        kq = np.where(lost, k, kq)  # keep the input gain; only the leak is lost
    return d, kq


def _scalar_if_uniform(a: np.ndarray):
    return int(a[0]) if np.all(a == a[0]) else a.astype(np.int64)


def _neuron_factors(g: Graph, node: Node, chains: list[Chain], dt, fmt: NumericFormat, approx: Approx) -> ChipLayer:
    name, op = node.name, node.op
    shape = tuple(node.out_shape)
    n = int(np.prod(shape)) if shape else 1
    if op != "Threshold" and dt is None:
        raise UnsupportedError(f"node '{name}' ({op}) needs the time step, but graph.dt is None (NIR files do not record it); "
                               "pass dt= (CLI: --dt SECONDS)")
    one = 2**fmt.decay_bits
    notes: list[str] = []
    zeros = np.zeros(n)
    v_reset = _flat(node, "v_reset", n, 0.0) if op in RESETTING else zeros
    if np.any(v_reset != 0):
        # the shift v' = v − v_reset makes every reset exact, but the chip starts at v' = 0, i.e. at v_reset
        approx(f"node '{name}' ({op}): v_reset = {float(np.abs(v_reset).max()):g} ≠ 0; the chip resets to 0, so the "
               "state is shifted by −v_reset (exact after each neuron's first spike), but it starts at v = v_reset "
               "where the float model starts at 0",
               "use v_reset = 0 with v_threshold and v_leak shifted by −v_reset, which is the same model started "
               "at its reset potential")
        notes.append("v_reset != 0: state shifted by -v_reset so that the chip's reset to 0 is exact")
    if op in MEMBRANE_ONLY:
        k = dt / _flat(node, "tau", n)
        dv, km = _decay(k, name, "tau", approx, fmt.decay_bits)
        r = _flat(node, "r", n)
        du = np.full(n, one - 1)
        gain, hgain = km * r, km * r
        leak = km * (_flat(node, "v_leak", n) - v_reset)
    elif op in CURRENT_BASED:
        km_f = dt / _flat(node, "tau_mem", n)
        ks_f = dt / _flat(node, "tau_syn", n)
        dv, km = _decay(km_f, name, "tau_mem", approx, fmt.decay_bits)
        dsyn, ks = _decay(ks_f, name, "tau_syn", approx, fmt.decay_bits)
        du = dsyn - 1
        r, w_in = _flat(node, "r", n), _flat(node, "w_in", n, 1.0)
        gain = km * r * ks * w_in
        hgain = km * r * w_in  # steady state of the bias through the current (exact only in steady state)
        leak = km * (_flat(node, "v_leak", n) - v_reset)
    elif op in ("IF", "I"):
        r = _flat(node, "r", n)
        dv, du = np.zeros(n, np.int64), np.full(n, one - 1)
        gain = hgain = dt * r
        leak = zeros
    else:  # Threshold: v = a + b each step (full decay), spike when above
        dv, du = np.full(n, one), np.full(n, one - 1)
        gain = hgain = np.ones(n)
        leak = zeros
    if op in CUBA_SPIKING:
        thr = _flat(node, "threshold" if op == "Threshold" else "v_threshold", n)
        vth_f = thr - v_reset
        if np.any(vth_f < 0):
            raise UnsupportedError(
                f"node '{name}' ({op}): threshold below the reset potential (v_th - v_reset = {float(vth_f.min()):g}); "
                "the chip's threshold is unsigned. Fix: v_th >= v_reset"
            )
    else:
        vth_f = None
    lay = ChipLayer(name, op, shape, chains, _scalar_if_uniform(np.asarray(du)), _scalar_if_uniform(np.asarray(dv)),
                gain, hgain, leak, vth_f, notes=notes)
    if op in RESETTING:
        lay.rule = neuron_rule(g, node)
        lay.rule["pending_reset"] = lay.rule["pending_reset"] and lay.rule["reset"] == "subtract" \
            and not lay.rule["reset_delay"]
        if lay.rule["reset"] == "subtract" and np.any(v_reset != 0):
            raise UnsupportedError(
                f"node '{name}' ({op}): reset by subtraction with v_reset = {float(np.abs(v_reset).max()):g}; the "
                "chip state is shifted by v_reset, so subtracting v_threshold is not defined there. Fix: v_reset = 0 "
                "(a subtracting neuron never resets to v_reset)")
    # the Affine/Conv biases of all chains, per neuron, λ-free, in weight units per step
    b = np.zeros(n)
    for c in chains:
        sn = g.nodes[c.syn]
        bias = sn.params.get("bias") if sn.op in BIASED else None
        if bias is None:
            continue
        bias = np.asarray(bias, dtype=np.float64)
        if sn.op.startswith("Conv"):
            bias = np.repeat(bias.reshape(-1), int(np.prod(sn.out_shape[1:])))
        b = b + bias.reshape(-1)
    if op in CURRENT_BASED and np.any(b != 0):
        # NIR adds the bias to the current: u gets k_s·w_in·b per step, i.e. gain·b in a_in units (exact)
        lay.ubias_f = gain * b
        lay.bias_f = leak
    else:
        lay.bias_f = leak + hgain * b
    for c in chains:
        if c.kind == "conv":
            gc = gain.reshape(shape)
            if gc.ndim >= 2 and not np.allclose(gc, gc.reshape(gc.shape[0], -1)[:, :1].reshape(
                    (gc.shape[0],) + (1,) * (gc.ndim - 1))):
                approx(f"node '{name}' ({op}): time constants or r differ within a channel, but conv '{c.syn}' "
                       "shares its weights across positions; the per-channel mean gain is used",
                       "use per-channel parameters after a convolution")
    return lay


def effective_weight(g: Graph, lay: ChipLayer, c: Chain) -> np.ndarray:
    """The chain's float weight with the layer's per-neuron gain folded in (λ-free), in the node's layout.

    A chain reading a host node receives integer payloads value/scale (node.meta["payload"]), so its
    weights carry the payload scale."""
    sn = g.nodes[c.syn]
    pay = g.nodes[c.src].meta.get("payload") if g.nodes[c.src].placement == "host" else None
    if pay is not None:
        return _effective_weight(sn, lay, c) * float(pay["scale"])
    return _effective_weight(sn, lay, c)


def _effective_weight(sn: Node, lay: ChipLayer, c: Chain) -> np.ndarray:
    if c.kind == "dense":
        return np.asarray(sn.params["weight"], dtype=np.float64) * lay.gain[:, None]
    if c.kind == "scale":
        s = np.broadcast_to(np.asarray(sn.params["scale"], dtype=np.float64).reshape(-1), lay.gain.shape)
        return s * lay.gain
    w = np.asarray(sn.params["weight"], dtype=np.float64)
    gc = lay.gain.reshape(w.shape[0], -1).mean(axis=1)
    return w * gc.reshape((-1,) + (1,) * (w.ndim - 1))


def check_neuron_models(layers: dict[str, ChipLayer], spec) -> None:
    """Refuse layers that need a programmable neuron (reset by subtraction, delayed reset, v >= threshold,
    a bias into the current) on a target whose neurons are fixed-function."""
    if spec.programmable_neurons:
        return
    for name, lay in layers.items():
        if lay.custom:
            what = [f"reset={lay.rule['reset']}" if lay.rule["reset"] != "zero" else "",
                    "reset_delay" if lay.rule["reset_delay"] else "",
                    "pending reset (snnTorch reset_delay=False)" if lay.rule["pending_reset"] else "",
                    "fire_at_equal" if lay.rule["fire_at_equal"] else "",
                    "bias into the current" if lay.ubias_f is not None else ""]
            raise UnsupportedError(
                f"node '{name}' ({lay.op}): neuron model ({', '.join(w for w in what if w)}) needs programmable "
                f"neurons, which target '{spec.name}' lacks (fixed CUBA: reset to 0 in the step of the spike, "
                "v > threshold, bias into v). Fix: quantize for loihi2, or retrain with reset to zero, no reset "
                "delay, and biases folded into v_leak")
