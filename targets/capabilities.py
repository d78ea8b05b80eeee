"""What a target's cores cannot compute at all: one line per breach, naming the node, the chip and the limit.

Sizes (neurons, synaptic memory, axons per core) are the partitioner's business; this module answers the
questions no placement can fix: a neuron model the chip does not implement, a synapse op it cannot lower
(dense layers on a conv-only chip), a recurrent edge, a fan-in beyond what one neuron can receive, and a
chip synapse reading non-binary values (graded spikes) on a chip whose spikes are binary.
"""

from __future__ import annotations

from spikedeploy.errors import UnsupportedError
from spikedeploy.graph.ir import Graph
from spikedeploy.graph.ops import IO


def _chip(graph: Graph, name: str) -> bool:
    node = graph.nodes[name]
    return node.placement == "chip" and node.op not in IO


def _value_source(graph: Graph, name: str, preds_of: dict[str, list[str]] | None = None) -> str:
    """The node whose values reach `name` through shape-only nodes (Flatten); `preds_of` (node ->
    predecessors) saves a scan of every edge per call on large graphs."""
    seen = set()
    while name not in seen:
        seen.add(name)
        preds = preds_of[name] if preds_of is not None else graph.predecessors(name)
        if len(preds) != 1 or graph.nodes[preds[0]].spec.family != "shape":
            return preds[0] if len(preds) == 1 else name
        name = preds[0]
    return name


def capability_breaches(graph: Graph, target) -> list[str]:
    """Every breach of `target`'s Capabilities by `graph`'s chip nodes, one line each (empty: none)."""
    from spikedeploy.targets.spec import get_target

    spec = get_target(target)
    cap = spec.capabilities
    src = cap.sources
    if any(n.out_shape is None for n in graph.nodes.values()):
        graph.infer_shapes()
    out: list[str] = []

    def why(key: str) -> str:
        return f" ({src[key]})" if key in src else ""

    stats = graph.stats()["nodes"] if (cap.max_fan_in, cap.max_fan_out) != (None, None) else {}
    preds_of: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds_of[b].append(a)
    for name, node in graph.nodes.items():
        if not _chip(graph, name):
            continue
        fam = node.spec.family
        if fam == "neuron" and cap.neuron_ops is not None and node.op not in cap.neuron_ops:
            out.append(f"node '{name}' ({node.op}): target '{spec.name}' implements only the neuron models "
                       f"{', '.join(cap.neuron_ops)}{why('neuron_ops')}")
        if fam == "synapse":
            if cap.synapse_ops is not None and node.op not in cap.synapse_ops:
                out.append(f"node '{name}' ({node.op}): target '{spec.name}' lowers only the synapse ops "
                           f"{', '.join(cap.synapse_ops)}{why('synapse_ops')}")
            if cap.max_fan_in is not None and stats[name]["fan_in"] > cap.max_fan_in:
                out.append(f"node '{name}' ({node.op}): fan-in {stats[name]['fan_in']} per neuron exceeds target "
                           f"'{spec.name}' limit {cap.max_fan_in}{why('max_fan_in')}")
            s = _value_source(graph, name, preds_of)
            sn = graph.nodes[s]
            if (cap.max_fan_out is not None and s != name and _chip(graph, s) and sn.spec.family == "neuron"
                    and stats[name]["fan_out"] > cap.max_fan_out):
                out.append(f"node '{name}' ({node.op}): fan-out {stats[name]['fan_out']} per neuron of '{s}' exceeds "
                           f"target '{spec.name}' limit {cap.max_fan_out}{why('max_fan_out')}")
            if not cap.graded_spikes:
                graded = sn.placement == "host" or (sn.spec.family == "neuron" and not sn.spec.spiking)
                if graded and s != name:
                    what = "a host node's values" if sn.placement == "host" else f"the analog values of {sn.op}"
                    out.append(f"node '{name}' ({node.op}): reads {what} '{s}' (graded spikes), but target "
                               f"'{spec.name}' sends binary spikes only{why('graded_spikes')}")
    if not cap.recurrent:
        for a, b in graph.order()[1]:
            if _chip(graph, a) and _chip(graph, b):
                out.append(f"node '{b}' ({graph.nodes[b].op}): recurrent edge {a} -> {b}, but target "
                           f"'{spec.name}' runs feed-forward networks only{why('recurrent')}")
    return out


def check_capabilities(graph: Graph, target) -> None:
    """Raise UnsupportedError with the first breach (and how many more there are)."""
    breaches = capability_breaches(graph, target)
    if breaches:
        more = f" (and {len(breaches) - 1} more breach(es); `spikedeploy compare` lists them)" if len(breaches) > 1 else ""
        raise UnsupportedError(breaches[0] + more)
