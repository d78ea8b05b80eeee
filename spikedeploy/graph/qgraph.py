"""QGraph: a Graph with integer parameters for one target.

The structure (nodes, edges, shapes, metadata) is the float Graph's. Integer parameters live per node in
`q[node_name]`, one typed object per kind of node (synapse, folded synapse, CUBA neuron, sigma-delta
neuron, resonate-and-fire neuron): their fields, units and what the chip does with each are in
spikedeploy/graph/qparams.py.

`scale[node_name]` is λ for each neuron node: v_int = 2^act_shift·λ·v_float, act_shift being the target's
(6 on Loihi: v_int = 64·λ·v_float, see lava-fixed-point.md §2); `state_scale(node)` gives the factor.
`deviations` lists every approximation the quantizer recorded (with --allow-approximate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spikedeploy.graph.ir import Graph
from spikedeploy.graph.qparams import FoldedParams, QParams


@dataclass
class QGraph:
    graph: Graph
    target: str
    q: dict[str, QParams] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def subgraph(self, names) -> QGraph:
        """The nodes `names` with their integer parameters (e.g. one independent encoder)."""
        keep = set(names)
        return QGraph(graph=self.graph.subgraph(keep), target=self.target,
                      q={k: v for k, v in self.q.items() if k in keep},
                      scale={k: v for k, v in self.scale.items() if k in keep},
                      deviations=list(self.deviations), meta=dict(self.meta))

    def state_scale(self, node: str) -> float:
        """v_int / v_float of a neuron node: 2^act_shift·λ in the arithmetic the QGraph was quantized for
        (act_shift 6 where the QGraph records no numeric format, as netx graphs for Loihi 2)."""
        shift = int((self.meta.get("numeric") or {}).get("act_shift", 6))
        return float(2**shift) * float(self.scale[node])

    def params(self, name: str, cls: type[QParams]) -> QParams:
        """q[name], which a chip backend needs to be of kind `cls`; BackendError naming the node otherwise."""
        from spikedeploy.errors import BackendError

        q = self.q.get(name)
        if not isinstance(q, cls):
            op = self.graph.nodes[name].op
            raise BackendError(f"node '{name}' ({op}) has {'no' if q is None else q.kind} parameters in the QGraph; "
                               f"it needs {cls.kind} parameters; fix: quantize the graph again")
        return q

    def chip_kinds(self, order, backend: str) -> dict[str, str]:
        """What each node is to a chip backend: input, output, synapse, neuron, or flatten (values passed
        through: shape ops, and synapses whose q names another synapse that simulates them, as netx delays).
        Both fixed-point backends build their processes from this one classification."""
        from spikedeploy.errors import UnsupportedError
        from spikedeploy.graph.ops import OPS

        kinds = {}
        for name in order:
            node = self.graph.nodes[name]
            fam = OPS[node.op].family
            if fam == "host":
                raise UnsupportedError(
                    f"node '{name}' ({node.op}) runs on the host; {backend} cannot run it. Simulate the chip "
                    "subgraph, or simulate the whole graph (host nodes run in onnxruntime)")
            kinds[name] = {"io": node.op.lower(), "shape": "flatten"}.get(fam, fam)
            if fam == "synapse" and isinstance(self.q.get(name), FoldedParams):
                kinds[name] = "flatten"
        return kinds
