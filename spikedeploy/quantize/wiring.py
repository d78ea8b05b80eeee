"""Exact rewrites that give a graph the chip's wiring: every neuron input through a synapse, every synapse
into neurons, one neuron layer per synapse.

NIR graphs (NIR's own test suite builds them this way) may feed a neuron straight from an Input, let an
Output read a synapse, or let one synapse feed two neuron layers or another synapse. On chip (Lava) a
neuron's input arrives only through a synapse process, a synapse process ends in neurons, and each layer has
its own scale. Each rewrite here is an identity of the graph's float semantics, chip synapse delays
included (`simulate_float(..., synapse_delay=True)`), and is listed in the quantized graph's rewrites:

- `readouts`: an Output reading a chip synapse chain reads an LI with τ = dt, r = 1, v_leak = 0 instead:
  v[t] = v[t−1] + (dt/τ)·(−v[t−1] + x[t]) = x[t] (full decay, dv = 4096 on chip), and LI never spikes.
  The synapse chain's one step of delay is the same, since the LI adds none.
- `input_synapses`: a chip neuron fed directly by an Input (or any node that is not a synapse) gets an
  identity Scale (weight 1 per element) in between. In the zero-delay graph it is an identity; in the chip
  graph it is the synapse process that carries the input, one step, which the chip adds for any input.
- `duplicate_shared`: a chip synapse feeding several neuron layers or synapses is copied, one per reader
  (weights are per layer on chip: each layer has its own scale).
"""

from __future__ import annotations

import numpy as np

from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.ops import CUBA


def _fresh(g: Graph, base: str) -> str:
    name = base
    while name in g.nodes:
        name += "_"
    return name


def _synapse_chain_end(g: Graph, name: str) -> bool:
    """`name` is a chip synapse, or a shape node (Flatten) whose source is one."""
    node = g.nodes[name]
    while node.spec.family == "shape" and len(g.predecessors(node.name)) == 1:
        node = g.nodes[g.predecessors(node.name)[0]]
    return node.placement == "chip" and node.spec.family == "synapse"


def readouts(g: Graph) -> list[str]:
    if g.dt is None:
        return []  # LI needs dt; the layer check then says the graph needs one
    done = []
    for out in g.outputs:
        for p in [p for p in g.predecessors(out) if _synapse_chain_end(g, p)]:
            shape = tuple(g.nodes[p].out_shape)
            n = int(np.prod(shape)) if shape else 1
            li = _fresh(g, f"{out}.readout")
            params = {"tau": np.full(shape, float(g.dt)), "r": np.ones(shape), "v_leak": np.zeros(shape)}
            g.add(Node(li, "LI", params, placement="chip", modality=g.nodes[p].modality))
            g.edges[g.edges.index((p, out))] = (li, out)
            g.connect(p, li)
            done.append(f"Output '{out}' read synapse '{p}': LI readout '{li}' ({n} neurons, tau = dt, r = 1: "
                        "v = its input each step) in between (exact)")
    if done:
        g.infer_shapes()
    return done


def input_synapses(g: Graph) -> list[str]:
    done = []
    for name in [n for n, v in g.nodes.items() if v.placement == "chip" and v.op in CUBA]:
        for p in g.predecessors(name):
            if _synapse_chain_end(g, p):
                continue
            shape = tuple(g.nodes[p].out_shape)
            s = _fresh(g, f"{name}.from_{p}")
            g.add(Node(s, "Scale", {"scale": np.ones(shape)}, placement="chip", modality=g.nodes[name].modality))
            g.edges[g.edges.index((p, name))] = (p, s)
            g.connect(s, name)
            done.append(f"{g.nodes[name].op} '{name}' was fed by {g.nodes[p].op} '{p}' without a synapse: identity "
                        f"Scale '{s}' in between (exact)")
    if done:
        g.infer_shapes()
    return done


def copy_synapse(g: Graph, node: Node, base: str, *, unbiased: bool = False) -> str:
    """A copy of chip synapse `node` under a fresh name (no edges); `unbiased`: without its bias (an Affine
    becomes a Linear), for every copy but one of a synapse whose sum is split."""
    params = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in node.params.items()}
    op = node.op
    if unbiased:
        op = "Linear" if op == "Affine" else op
        if op == "Linear":
            params.pop("bias", None)
        elif params.get("bias") is not None:
            params["bias"] = None
    c = _fresh(g, base)
    g.add(Node(c, op, params, placement="chip", modality=node.modality, meta=dict(node.meta)))
    return c


def split_synapse(g: Graph, name: str, ends: dict[str, str], *, upstream: bool) -> list[str]:
    """Move each edge between synapse `name` and an end (a source when `upstream`, else a reader) to a copy of
    the synapse named as `ends` says; each copy keeps the synapse's other edges. Copies of a split sum
    (upstream) carry no bias: the original keeps it, so the sum is counted once."""
    node = g.nodes[name]
    others = g.successors(name) if upstream else g.predecessors(name)
    copies = []
    for end, base in ends.items():
        c = copy_synapse(g, node, base, unbiased=upstream)
        edge = (end, name) if upstream else (name, end)
        g.edges[g.edges.index(edge)] = (end, c) if upstream else (c, end)
        for o in others:
            g.connect(c, o) if upstream else g.connect(o, c)
        copies.append(c)
    return copies


def duplicate_shared(g: Graph) -> list[str]:
    done = []
    for name in [n for n, v in g.nodes.items() if v.placement == "chip" and v.spec.family == "synapse"
                 and v.op != "Delay"]:
        node = g.nodes[name]
        readers = [s for s in g.successors(name) if g.nodes[s].placement == "chip"
                   and (g.nodes[s].op in CUBA or g.nodes[s].spec.family == "synapse")]
        if len(readers) < 2 or len(readers) != len(g.successors(name)):
            continue
        copies = split_synapse(g, name, {r: f"{name}.to_{r}" for r in readers[1:]}, upstream=False)
        done.append(f"{node.op} '{name}' fed {len(readers)} readers: one copy per reader ({name}, "
                    f"{', '.join(copies)}; exact)")
    if done:
        g.infer_shapes()
    return done
