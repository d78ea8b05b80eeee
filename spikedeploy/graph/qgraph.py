"""QGraph: a Graph with integer parameters for one target.

The structure (nodes, edges, shapes, metadata) is the float Graph's. Integer parameters live per node in
`q[node_name]`, with these keys (all numpy integer arrays or Python ints):

synapse nodes (Affine, Linear, Conv2d, Conv1d, Scale, pooling folded by the quantizer):
    weight          integer mantissas, same layout as the float weight
    weight_exp      int; the *sum* is shifted by it (left if > 0, floored right if < 0)
    num_weight_bits int (Loihi 2: 8)
    sign_mode       "mixed" | "exc" | "inh" | None (None: derived from the weights, as Lava does)
    delay           optional int array (out, in) of per-synapse delays in steps (DelayDense)
neuron nodes (LIF, IF, CubaLIF, LI, CubaLI, Threshold):
    du, dv          int (or per-neuron int arrays); 12-bit decays, 4096 = full decay
    vth             int (threshold mantissa; the comparison is v > vth << 6)
    bias_mant       int array (per neuron), stored as int16 on Loihi 2
    bias_exp        int
    optional, for spikedeploy's programmable neuron (targets/lava/neurons.py), absent means Lava's LIF:
    reset           "zero" | "subtract" (v -= vth << 6 on a spike)
    reset_delay     bool: the reset decided from the previous step's v is applied before/after this step's update
    fire_at_equal   bool: spike when v >= vth << 6 (i.e. v > (vth << 6) - 1)
    pending_reset   bool (with "subtract", no reset_delay): snnTorch's p = previous v fires; v -= p·th before
                    the spike test, v += (p - s)·th after it
    u_bias          int array (per neuron) added to u every step with a_in << 6 (CubaLIF synapse bias)

`scale[node_name]` is λ for each neuron node: v_int = 2^act_shift·λ·v_float, act_shift being the target's
(6 on Loihi: v_int = 64·λ·v_float, see lava-fixed-point.md §2); `state_scale(node)` gives the factor.
`deviations` lists every approximation the quantizer recorded (with --allow-approximate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spikedeploy.graph.ir import Graph


@dataclass
class QGraph:
    graph: Graph
    target: str
    q: dict[str, dict[str, Any]] = field(default_factory=dict)
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
            if fam == "synapse" and self.q.get(name, {}).get("folded_into"):
                kinds[name] = "flatten"
        return kinds
