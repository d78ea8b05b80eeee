"""NIR Delay nodes as per-synapse delays of the Dense next to them (Lava's DelayDense).

A Delay holds one delay per element, y[t] = x[t − d]. On chip a delay belongs to a synapse: DelayDense
delivers w_ij·x_j at step t + 1 + d_ij (lava-fixed-point.md, "DelayDense"), i.e. the chain Delay → Dense (or
Dense → Delay) with the one step every synapse process adds, which is what `simulate_float(...,
synapse_delay=True)` computes for that chain. So a Delay

- after a Dense that feeds only it gives that Dense the delays d[o] per output row (post), or
- before Dense nodes that read only it gives each of them the delays d[i] per input column (pre).

A Delay next to no synapse first gets an identity Linear after it (identity_delay_synapses, in
layer_map.lower_structure): the chain Delay → Linear(I) is still one synapse process, so the graph's float
semantics, chip delays included, are unchanged. A Delay next to a Conv is refused: Lava's Conv has no delays.

While the quantizer maps layers the folded Delay nodes are taken out of the graph (`fold`; its calibration
runs the graph with them, `reinsert`); `restore` puts them back into the quantized graph with
q[delay] = FoldedParams(folded_into=synapse) and q[synapse].delay = (out, in) steps, the representation
converters/netx.py already uses, which both chip backends run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from spikedeploy.errors import TargetLimitError, UnsupportedError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.ops import CONV, CUBA, DENSE
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, FoldedParams


@dataclass
class FoldedDelay:
    node: Node  # the Delay node, as it was
    syn: str  # the Dense that carries its delays
    where: str  # "pre" (Delay → Dense) or "post" (Dense → Delay)
    steps: np.ndarray  # per element of the Delay, in steps
    edges: list[tuple[str, str]]  # the Delay's edges in the graph before it was taken out


def delay_steps(node: Node, dt: float | None, max_delay: int, target: str) -> np.ndarray:
    """The node's delays in steps (flat), refused in one line unless whole steps within the target's limit."""
    if dt is None:
        raise UnsupportedError(f"node '{node.name}' (Delay) needs the time step to turn its delays into steps, but "
                               "graph.dt is None; pass dt= (CLI: --dt SECONDS)")
    d = np.asarray(node.params["delay"], dtype=np.float64).reshape(-1) / dt
    steps = np.rint(d)
    if np.any(np.abs(d - steps) > 1e-6 * np.maximum(1.0, np.abs(d))) or np.any(steps < 0):
        raise UnsupportedError(f"node '{node.name}' (Delay): delays must be non-negative whole multiples of "
                               f"dt={dt:g}, got delay/dt up to {float(np.max(d)):g}; fix: round the delays or change dt")
    if steps.size and steps.max() > max_delay:
        raise TargetLimitError(
            f"node '{node.name}' (Delay): delay {int(steps.max())} steps exceeds the limit of {max_delay} steps per "
            f"synapse on target '{target}' (its delay field); fix: a larger dt, or a relay neuron layer that "
            "carries part of the delay")
    return steps.astype(np.int64)


def identity_delay_synapses(g: Graph) -> list[str]:
    """Give every chip Delay that touches no Dense an identity Linear after it (exact: still one synapse chain)."""
    done = []
    for name in [n for n, v in g.nodes.items() if v.op == "Delay" and v.placement == "chip"]:
        preds, succ = g.predecessors(name), g.successors(name)
        near = [g.nodes[x] for x in preds + succ]
        if any(x.placement == "chip" and x.spec.family == "synapse" for x in near):
            continue  # folded into that synapse, or refused by `fold` with the reason
        n = int(np.prod(g.nodes[name].out_shape or (1,)))
        lin = f"{name}.identity"
        while lin in g.nodes:
            lin += "_"
        g.add(Node(lin, "Linear", {"weight": np.eye(n)}, placement="chip", modality=g.nodes[name].modality))
        g.edges = [(a, b) for a, b in g.edges if a != name] + [(name, lin)] + [(lin, s) for s in succ]
        done.append(f"Delay '{name}' reads/feeds no Dense: identity Linear '{lin}' ({n}x{n}) after it, which "
                    "carries its delays (exact: the same single synapse chain)")
    if done:
        g.infer_shapes()
    return done


def _post_dense(g: Graph, name: str) -> str | None:
    preds = g.predecessors(name)
    if len(preds) != 1:
        return None
    p = g.nodes[preds[0]]
    ok = p.op in DENSE and p.placement == "chip" and g.successors(p.name) == [name]
    return p.name if ok else None


def _pre_denses(g: Graph, name: str) -> list[str]:
    succ = g.successors(name)
    ok = succ and all(g.nodes[s].op in DENSE and g.nodes[s].placement == "chip" and g.predecessors(s) == [name]
                      for s in succ)
    return list(succ) if ok else []


def fold(g: Graph, max_delay: int, target: str) -> tuple[list[FoldedDelay], list[str]]:
    """Take every chip Delay out of `g` into the Dense next to it; returns what was folded and the notes."""
    folded: list[FoldedDelay] = []
    done: list[str] = []
    for name in [n for n, v in g.nodes.items() if v.op == "Delay" and v.placement == "chip"]:
        node = g.nodes[name]
        steps = delay_steps(node, g.dt, max_delay, target)
        post, pre = _post_dense(g, name), _pre_denses(g, name)
        edges = [e for e in g.edges if name in e]
        if post is not None:
            syn_out = int(np.asarray(g.nodes[post].params["weight"]).shape[0])
            steps = np.broadcast_to(steps, (syn_out,)) if steps.size == 1 else steps
            _check_bias_onset(g, name, post, steps)
            folded.append(FoldedDelay(node, post, "post", steps, edges))
            where = f"per output of {g.nodes[post].op} '{post}' before it"
        elif pre:
            folded += [FoldedDelay(node, s, "pre", steps, edges) for s in pre]
            where = "per input of " + ", ".join(f"{g.nodes[s].op} '{s}'" for s in pre) + " after it"
        else:
            nb = [g.nodes[x] for x in g.predecessors(name) + g.successors(name)]
            conv = [x.name for x in nb if x.op in CONV]
            why = (f"it is next to {conv[0]} ({g.nodes[conv[0]].op}); Lava's Conv process has no delays (only "
                   "DelayDense does)" if conv else "the Dense next to it also reads or feeds other nodes")
            raise UnsupportedError(
                f"node '{name}' (Delay): cannot be folded into a synapse: {why}. Fix: put the delay between a "
                "neuron layer and a Linear/Affine that reads only it")
        preds, succ = g.predecessors(name), g.successors(name)
        g.edges = [e for e in g.edges if name not in e] + [(p, s) for p in preds for s in succ]
        del g.nodes[name]
        done.append(f"Delay '{name}' ({int(steps.min(initial=0))}..{int(steps.max(initial=0))} steps) folded into "
                    f"the per-synapse delays {where} (DelayDense; exact)")
    return folded, done


def _check_bias_onset(g: Graph, name: str, syn: str, steps: np.ndarray) -> None:
    """A Delay after an Affine delays its bias too; the chip's bias is the neuron's and starts in one step per
    layer, so the delays of the outputs with a bias must agree (their common delay is added to the onset)."""
    b = g.nodes[syn].params.get("bias") if g.nodes[syn].op == "Affine" else None
    if b is None:
        return
    b = np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1), steps.shape)
    d = np.unique(steps[b != 0])
    if d.size > 1:
        raise UnsupportedError(
            f"node '{name}' (Delay): delays {d.tolist()} differ between outputs of Affine '{syn}' that have a "
            "bias; the delayed bias would start in a different step per neuron, and the chip's bias starts in one "
            "step per layer. Fix: move the bias into the neurons' v_leak, or give the biased outputs one delay")
    if not d.size:
        return
    for s in g.successors(name):
        node = g.nodes[s]
        if node.op not in CUBA:
            raise UnsupportedError(f"node '{name}' (Delay): the delayed bias of Affine '{syn}' must feed neurons")
        # the layer's whole bias (v_leak's part and other synapses' biases included) starts with the delayed one
        other = [p for p in g.predecessors(s) if p != name and g.nodes[p].params.get("bias") is not None
                 and np.any(np.asarray(g.nodes[p].params["bias"]) != 0)]
        leak = [k for k in ("v_leak", "v_reset") if np.any(np.asarray(node.params.get(k, 0)) != 0)]
        if other or leak:
            raise UnsupportedError(
                f"node '{name}' (Delay): it delays the bias of Affine '{syn}' by {int(d[0])} steps, but '{s}' also "
                f"has {', '.join(other + leak)} acting from its first input, and a layer's bias starts in one step. "
                "Fix: move the delayed bias into v_leak, or put the delay before the Affine")


def reinsert(g: Graph, folded: list[FoldedDelay]) -> Graph:
    """`g` with the folded Delay nodes back in their places (in place; returns g)."""
    for f in folded:
        name = f.node.name
        if name not in g.nodes:
            g.add(copy.deepcopy(f.node))
            inner = [e for e in g.edges if (e[0], name) in f.edges and (name, e[1]) in f.edges]
            g.edges = [e for e in g.edges if e not in inner] + list(f.edges)
    if folded:
        g.infer_shapes()
    return g


def restore(qg: QGraph, folded: list[FoldedDelay]) -> None:
    """Put the folded Delay nodes back into qg.graph (passed through by the backends) and the delays into q."""
    g = reinsert(qg.graph, folded)
    for f in folded:
        name = f.node.name
        w = np.asarray(qg.q[f.syn].weight)
        d = f.steps.reshape(-1, 1) if f.where == "post" else f.steps.reshape(1, -1)
        qg.q[f.syn].delay = np.broadcast_to(d, w.shape).astype(np.int64).copy()
        qg.q[name] = FoldedParams(folded_into=f.syn)
        if f.where == "post" and g.nodes[f.syn].op == "Affine":
            b = np.broadcast_to(np.asarray(g.nodes[f.syn].params["bias"], dtype=float).reshape(-1), f.steps.shape)
            if np.any(b != 0):
                extra = int(f.steps[b != 0][0])
                for s in g.successors(name):
                    if extra and isinstance(qg.q.get(s), CubaParams):
                        qg.q[s].bias_onset = int(qg.q[s].bias_onset) + extra
