"""Branch alignment: make every merge of branches arrive in the same step on chip.

On chip every synapse adds one step of delay (lava-fixed-point.md; `simulate_float(..., synapse_delay=True)`
reproduces it): a chain of synapse ops (Flatten passing through) delivers at step t what it computed at
t − 1. A node that sums branches with different numbers of synapse hops — a residual `x + f(x)`, the AND of
two branches — would then add values from different steps, which the zero-delay graph (and the trained
model) never does. `align_branches` inserts relay neurons (identity Scale → Threshold(0.5): a spike in, the
same spike out one step later; exact for 0/1 spikes) on the shorter branches, so that the chip run equals the
zero-delay run delayed by `chip_delay(graph)[node]` steps at every node.

The shift is exact for networks whose layers start from rest and have no constant drive (bias, v_leak):
a constant drive acts from step 0 on chip, before the delayed signal arrives.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import UnsupportedError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.simulate.float_ref import synaptic_nodes

# A relay sees 0 or 1 through its identity synapse and spikes on strictly greater: any threshold in [0, 1)
# passes a spike; the midpoint keeps the largest margin once the weight is quantized.
RELAY_THRESHOLD = 0.5
_CHAIN = ("synapse", "shape")


def _arrivals(g: Graph) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Per node: its delay in steps, and per predecessor the step its value arrives in (back edges, which
    carry one step in both the zero-delay and the chip run, are left out)."""
    syn = synaptic_nodes(g)
    order, back = g.order()
    backset = set(back)
    delay: dict[str, int] = {}
    arrive: dict[str, dict[str, int]] = {}
    for n in order:
        fam = g.nodes[n].spec.family
        arr = {p: delay[p] + int(p in syn and fam not in _CHAIN)
               for p in g.predecessors(n) if (p, n) not in backset and p in delay}
        arrive[n] = arr
        delay[n] = max(arr.values(), default=0)
    return delay, arrive


def _misaligned(g: Graph, arrive) -> str | None:
    for n, arr in arrive.items():
        if g.nodes[n].placement == "chip" and len(set(arr.values())) > 1 \
                and all(g.nodes[p].placement == "chip" for p in arr):
            return n
    return None


def chip_delay(graph: Graph) -> dict[str, int]:
    """Steps by which each node's chip value (`simulate_float(graph, synapse_delay=True)`) lags its zero-delay
    value. Raises UnsupportedError naming the first chip node whose branches arrive in different steps
    (run `align_branches` first)."""
    delay, arrive = _arrivals(graph)
    bad = _misaligned(graph, arrive)
    if bad is not None:
        raise UnsupportedError(f"node '{bad}' ({graph.nodes[bad].op}) sums branches that arrive on chip after "
                               f"{_steps(arrive[bad])} synapse steps; fix: align_branches(graph)")
    return delay


def _steps(arr: dict[str, int]) -> str:
    return ", ".join(f"{v} ('{p}')" for p, v in arr.items())


def align_branches(graph: Graph) -> list[str]:
    """Insert relay neurons, in place, on the shorter branches of every misaligned chip merge. Returns what
    was done; raises UnsupportedError naming the node when the shorter branch does not carry 0/1 spikes
    (a graded Input, an analog readout), which a relay cannot delay exactly."""
    done: list[str] = []
    while True:
        syn = synaptic_nodes(graph)
        _, arrive = _arrivals(graph)
        n = _misaligned(graph, arrive)
        if n is None:
            break
        arr = arrive[n]
        late = max(arr.values())
        for p, t in arr.items():
            if t < late:
                src, child = _branch_head(graph, syn, p, n, arr)
                names = _insert_relays(graph, src, child, late - t)
                done.append(f"node '{n}': {late - t} relay neuron(s) ({', '.join(names)}) on the branch from "
                            f"'{src}' (it arrived after {t} synapse steps, the other after {late}; exact for spikes)")
    if done:
        graph.infer_shapes()
    return done


def _branch_head(g: Graph, syn: set[str], p: str, n: str, arr: dict[str, int]) -> tuple[str, str]:
    """The spike source of the branch p -> n and the node it feeds: relays go on that edge, upstream of the
    branch's synapses (a synapse's output is not binary)."""
    cur, child = p, n
    while cur in syn or g.nodes[cur].spec.family == "shape":
        preds = g.predecessors(cur)
        if len(preds) != 1:
            raise UnsupportedError(
                f"node '{n}' sums branches arriving after {_steps(arr)} synapse steps, and the branch through "
                f"'{cur}' ({g.nodes[cur].op}) has {len(preds)} inputs, so no relay can delay it alone; "
                "fix: give the branch its own synapses")
        if g.successors(cur) != [child]:  # shared with other branches: this branch gets its own copy
            cur = _private_copy(g, cur, child)
        cur, child = preds[0], cur
    src = cur
    while g.nodes[src].spec.family == "shape":
        src = g.predecessors(src)[0]
    node = g.nodes[src]
    if not node.spec.spiking or node.placement != "chip":
        what = "a graded Input" if node.op == "Input" else f"{node.op}, not 0/1 spikes"
        raise UnsupportedError(
            f"node '{n}' sums branches arriving after {_steps(arr)} synapse steps on chip; the shorter one starts "
            f"at '{src}' ({what}), which relay neurons cannot delay exactly; fix: give that branch as many "
            "synapse layers as the other, or feed spikes")
    return cur, child


def _private_copy(g: Graph, name: str, child: str) -> str:
    """A copy of synapse/shape node `name` reading what it reads, feeding `child` in its place (the other
    readers keep the original): exact, at the cost of the copy's synapses."""
    import copy as _copy

    node = g.nodes[name]
    c = _unique(g, f"{name}.{child}")
    g.add(Node(c, node.op, _copy.deepcopy(node.params), placement=node.placement, modality=node.modality,
               meta={**_copy.deepcopy(node.meta), "copy_of": name}))
    for p in g.predecessors(name):
        g.connect(p, c)
    g.edges[g.edges.index((name, child))] = (c, child)
    return c


def _insert_relays(g: Graph, src: str, child: str, k: int) -> list[str]:
    node = g.nodes[src]
    idx = g.edges.index((src, child))  # keep the child's input order: float sums depend on it
    prev, names = src, []
    for i in range(k):
        s = _unique(g, f"{child}.relay{i}.syn")
        g.add(Node(s, "Scale", {"scale": np.asarray(1.0)}, modality=node.modality, meta={"relay": True}))
        r = _unique(g, f"{child}.relay{i}")
        g.add(Node(r, "Threshold", {"threshold": np.asarray(RELAY_THRESHOLD)}, modality=node.modality,
                   meta={"relay": True}))
        g.connect(prev, s)
        g.connect(s, r)
        names.append(r)
        prev = r
    g.edges[idx] = (prev, child)
    return names


def _unique(g: Graph, name: str) -> str:
    base, k = name, 1
    while name in g.nodes:
        name, k = f"{base}_{k}", k + 1
    return name
