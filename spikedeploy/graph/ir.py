"""The one internal graph every converter, backend and report shares.

A Graph holds nodes (NIR primitives plus a few host-side ops, see ops.py), identity edges (several edges
into one node are summed), several named inputs (one per modality) and outputs, and the metadata NIR
files lack: dt, reset mode, chip/host placement per node, modality, provenance.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikedeploy.checks.limits import check_shape
from spikedeploy.checks.params import check_node_params
from spikedeploy.errors import GraphError, ParameterError, ShapeError
from spikedeploy.graph.ops import CONV, DENSE, ONE_TO_ONE, OPS, POOL, Shape, is_neuron, synapse_count

RESET_MODES = ("zero", "subtract")
# Per-node neuron rule, in node.meta (graph.reset / graph.reset_delay are the defaults for nodes without one):
#   "reset": "zero" | "subtract"   v -> v_reset, or v -> v - v_threshold
#   "reset_delay": bool            the reset computed from step t's membrane is applied in step t+1 (snnTorch's
#                                  default): v[t+1] = update(v[t]) - v_th (subtract), update(v_reset) (zero)
#   "fire_at_equal": bool          spike when v >= v_th (spikingjelly) instead of v > v_th (NIR, snnTorch, Lava)
#   "pending_reset": bool          with "subtract" and no reset_delay, snnTorch's rule: p = (the previous step's
#                                  post-reset v > v_th); v = update(v) - p·v_th; s = v > v_th; v += (p - s)·v_th.
#                                  It differs from plain subtraction only when v stays above v_th after a reset
RULE_KEYS = ("reset", "reset_delay", "fire_at_equal", "pending_reset")
# Structural settings, not learned values: not counted as parameters.
_HYPERPARAMETERS = frozenset(
    {"shape", "input_shape", "out_shape", "stride", "padding", "dilation", "groups", "kernel_size", "start_dim", "end_dim",
     "program"}
)
PLACEMENTS = ("chip", "host")


@dataclass
class Node:
    name: str
    op: str
    params: dict[str, Any] = field(default_factory=dict)
    placement: str = "chip"
    modality: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    in_shape: Shape | None = None
    out_shape: Shape | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise GraphError(
                f"node '{self.name}': unknown node type '{self.op}'; supported: {', '.join(sorted(OPS))}"
            )
        if OPS[self.op].family == "host":
            self.placement = "host"
        if self.placement not in PLACEMENTS:
            raise GraphError(f"node '{self.name}': placement must be one of {PLACEMENTS}, got '{self.placement}'")
        spec = OPS[self.op]
        for k, v in spec.optional.items():
            self.params.setdefault(k, v)
        for k, v in list(self.params.items()):
            if v is not None and not isinstance(v, str | np.ndarray):
                self.params[k] = np.asarray(v)

    @property
    def spec(self):
        return OPS[self.op]


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    dt: float | None = None
    reset: str = "zero"
    reset_delay: bool = False
    meta: dict[str, Any] = field(default_factory=dict)  # provenance and anything else worth carrying

    # ---- construction -------------------------------------------------------------------------
    def add(self, node: Node) -> Node:
        if node.name in self.nodes:
            raise GraphError(f"duplicate node name '{node.name}'")
        self.nodes[node.name] = node
        return node

    def connect(self, src: str, dst: str) -> None:
        for n in (src, dst):
            if n not in self.nodes:
                raise GraphError(f"edge ({src} -> {dst}) names node '{n}', which is not in the graph")
        if (src, dst) in self.edges:
            raise GraphError(f"duplicate edge ({src} -> {dst})")
        self.edges.append((src, dst))

    @classmethod
    def chain(cls, *nodes: Node, **kw) -> Graph:
        g = cls(**kw)
        for n in nodes:
            g.add(n)
        for a, b in zip(nodes[:-1], nodes[1:], strict=False):
            g.connect(a.name, b.name)
        return g

    def copy(self) -> Graph:
        return copy.deepcopy(self)

    # ---- structure ----------------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        return [n for n, v in self.nodes.items() if v.op == "Input"]

    @property
    def outputs(self) -> list[str]:
        return [n for n, v in self.nodes.items() if v.op == "Output"]

    def predecessors(self, name: str) -> list[str]:
        return [a for a, b in self.edges if b == name]

    def successors(self, name: str) -> list[str]:
        return [b for a, b in self.edges if a == name]

    def order(self) -> tuple[list[str], list[tuple[str, str]]]:
        """Evaluation order and back edges.

        A back edge closes a cycle; simulations feed it the previous step's value. Nodes are visited
        depth-first from the inputs in insertion order, so the result is deterministic.
        """
        succ: dict[str, list[str]] = {n: [] for n in self.nodes}
        for a, b in self.edges:
            succ[a].append(b)
        state: dict[str, int] = {}
        post: list[str] = []
        back: list[tuple[str, str]] = []
        inputs = self.inputs
        first = set(inputs)
        roots = inputs + [n for n in self.nodes if n not in first]
        for r in roots:
            if r in state:
                continue
            stack = [(r, iter(succ[r]))]
            state[r] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    post.append(node)
                    stack.pop()
                elif state.get(nxt) == 1:
                    back.append((node, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(succ[nxt])))
        return post[::-1], back

    def components(self) -> list[list[str]]:
        """Weakly connected components, each in insertion order (e.g. one per independent encoder)."""
        comp: dict[str, int] = {}
        nbrs: dict[str, set[str]] = {n: set() for n in self.nodes}
        for a, b in self.edges:
            nbrs[a].add(b)
            nbrs[b].add(a)
        out: list[list[str]] = []
        for n in self.nodes:
            if n in comp:
                continue
            comp[n] = len(out)
            todo, members = [n], {n}
            while todo:
                for m in nbrs[todo.pop()]:
                    if m not in comp:
                        comp[m] = len(out)
                        members.add(m)
                        todo.append(m)
            out.append([x for x in self.nodes if x in members])
        return out

    def subgraph(self, names) -> Graph:
        """The nodes `names` and the edges among them, with the graph's metadata."""
        keep = set(names)
        g = Graph(dt=self.dt, reset=self.reset, reset_delay=self.reset_delay, meta=copy.deepcopy(self.meta))
        for n in self.nodes:
            if n in keep:
                g.nodes[n] = copy.deepcopy(self.nodes[n])
        g.edges = [(a, b) for a, b in self.edges if a in keep and b in keep]
        return g

    # ---- shapes and validation ----------------------------------------------------------------
    def infer_shapes(self) -> Graph:
        order, back = self.order()
        backset = set(back)
        into: dict[str, list[str]] = {n: [] for n in self.nodes}  # one pass: linear in edges, not nodes x edges
        for a, b in self.edges:
            if (a, b) not in backset:
                into[b].append(a)
        for name in order:
            node = self.nodes[name]
            preds = into[name]
            shapes = [self.nodes[p].out_shape for p in preds]
            shapes = [s for s in shapes if s is not None]
            spec = node.spec
            if spec.max_inputs == 0 and preds:
                raise GraphError(f"node '{name}' (Input) has incoming edges from {preds}")
            in_shape: Shape = ()
            if shapes:
                in_shape = tuple(shapes[0])
                if spec.family != "host":
                    for p, s in zip(preds, shapes, strict=False):
                        if int(np.prod(s)) != int(np.prod(in_shape)):
                            raise ShapeError(
                                f"node '{name}' ({node.op}) sums inputs of different shapes: "
                                f"'{preds[0]}' gives {list(in_shape)}, '{p}' gives {list(s)}"
                            )
            node.in_shape = in_shape
            if spec.infer is None:  # host ops carry their output shape explicitly
                out = node.params.get("out_shape")
                node.out_shape = tuple(int(x) for x in np.asarray(out).ravel()) if out is not None else in_shape
            else:
                node.out_shape = tuple(int(x) for x in spec.infer(node, in_shape))
            check_shape(node.out_shape, f"node '{name}' ({node.op})", empty_ok=node.op != "Input")
        for a, b in back:
            sa, sb = self.nodes[a].out_shape, self.nodes[b].in_shape
            if sa and sb and int(np.prod(sa)) != int(np.prod(sb)):
                raise ShapeError(f"recurrent edge ({a} -> {b}): '{a}' gives {list(sa)}, '{b}' takes {list(sb)}")
        return self

    def validate(self) -> Graph:
        """Check structure, parameters and shapes; raise a GraphError naming the node on failure."""
        if not self.inputs:
            raise GraphError("graph has no Input node")
        if not self.outputs:
            raise GraphError("graph has no Output node")
        into_input = [(a, b) for a, b in self.edges if b in self.nodes and self.nodes[b].op == "Input"]
        if into_input:
            a, b = into_input[0]
            raise GraphError(f"edge ({a} -> {b}) leads into Input node '{b}'; an Input takes no edges, remove it")
        if self.reset not in RESET_MODES:
            raise GraphError(f"reset mode must be one of {RESET_MODES}, got '{self.reset}'")
        if self.dt is not None and not (np.isfinite(self.dt) and self.dt > 0):
            raise ParameterError(f"dt must be a positive finite number, got {self.dt}")
        for name, node in self.nodes.items():
            for k in node.spec.required:
                if k not in node.params or node.params[k] is None:
                    raise ParameterError(f"node '{name}' ({node.op}): missing parameter '{k}'")
            check_node_params(name, node)
            for k, v in node.params.items():
                if isinstance(v, np.ndarray) and v.dtype.kind in "fiu" and not np.all(np.isfinite(v)):
                    if k in ("tau", "r") and node.op in ("IF",) and np.all(np.isfinite(v) | (v == np.inf)):
                        continue  # an IF's r = inf (no leak term) is how some exporters write it
                    raise ParameterError(
                        f"node '{name}' ({node.op}): parameter '{k}' has non-finite values (NaN or inf); "
                        "fix the exporter or the checkpoint"
                    )
            for k in node.spec.positive:
                v = np.asarray(node.params[k], dtype=float)
                if np.any(v <= 0):
                    raise ParameterError(
                        f"node '{name}' ({node.op}): parameter '{k}' must be > 0, got min {float(v.min()):g}"
                    )
            if is_neuron(node.op) and node.meta.get("reset", "zero") not in RESET_MODES:
                raise ParameterError(f"node '{name}' ({node.op}): meta reset must be one of {RESET_MODES}, "
                                     f"got '{node.meta['reset']}'")
            if is_neuron(node.op):
                shapes = {np.shape(node.params[k]) for k in node.spec.required if k in node.params}
                shapes.discard(())
                shapes.discard((1,))
                if len(shapes) > 1:
                    raise ParameterError(
                        f"node '{name}' ({node.op}): parameter shapes disagree: {sorted(map(list, shapes))}"
                    )
        reach = self._reachable()
        missing = [n for n in self.nodes if n not in reach]
        if missing:
            raise GraphError(
                f"node(s) {missing} cannot be reached from any Input; connect them or remove them"
            )
        _, back = self.order()
        for a, b in back:
            if not any(self.nodes[n].spec.stateful for n in self._cycle_nodes(a, b)):
                raise GraphError(
                    f"cycle through edge ({a} -> {b}) passes through no stateful node (neuron or delay); "
                    "an algebraic loop cannot be simulated"
                )
        self.infer_shapes()
        return self

    def _reachable(self) -> set[str]:
        return self._closure(self.inputs, self.successors)

    def _cycle_nodes(self, a: str, b: str) -> list[str]:
        """Nodes on some path b -> ... -> a (which with edge a -> b forms the cycle)."""
        return sorted(self._closure([b], self.successors) & self._closure([a], self.predecessors))

    @staticmethod
    def _closure(start, neighbours) -> set[str]:
        seen = set(start)
        todo = list(seen)
        while todo:
            for m in neighbours(todo.pop()):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    # ---- statistics ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Per-node and total counts: neurons, synapses, parameters, fan-in, fan-out."""
        if any(n.out_shape is None for n in self.nodes.values()):
            self.infer_shapes()
        rows = {}
        for name, node in self.nodes.items():
            neurons = int(np.prod(node.out_shape)) if is_neuron(node.op) else 0
            syn = synapse_count(node, node.in_shape or (), node.out_shape or ()) if node.spec.family == "synapse" else 0
            params = int(sum(np.size(v) for k, v in node.params.items()
                             if isinstance(v, np.ndarray) and k not in _HYPERPARAMETERS))
            fan_in, fan_out = _fan(node, syn)
            rows[name] = {
                "op": node.op,
                "shape": list(node.out_shape or ()),
                "neurons": neurons,
                "synapses": syn,
                "parameters": params,
                "fan_in": fan_in,
                "fan_out": fan_out,
                "placement": node.placement,
                "modality": node.modality,
            }
        total = {k: sum(r[k] for r in rows.values()) for k in ("neurons", "synapses", "parameters")}
        total["nodes"] = len(rows)
        total["edges"] = len(self.edges)
        total["host_nodes"] = sum(1 for n in self.nodes.values() if n.placement == "host")
        return {"nodes": rows, "total": total}


def neuron_rule(graph: Graph, node: Node) -> dict[str, Any]:
    """A neuron node's reset and firing rule: its own meta where set, else the graph-wide defaults."""
    m = node.meta
    return {"reset": str(m.get("reset", graph.reset)), "reset_delay": bool(m.get("reset_delay", graph.reset_delay)),
            "fire_at_equal": bool(m.get("fire_at_equal", False)), "pending_reset": bool(m.get("pending_reset", False))}


def set_dt(graph: Graph, dt: float) -> Graph:
    """Give a graph its time step (NIR files carry none); refuse to silently change a recorded one."""
    dt = float(dt)
    if not (np.isfinite(dt) and dt > 0):
        raise ParameterError(f"dt must be a positive number of seconds, got {dt}")
    if graph.dt is not None and not np.isclose(graph.dt, dt, rtol=1e-12, atol=0):
        raise ParameterError(f"the graph records dt = {graph.dt:g} s, the command asks for {dt:g} s; "
                             "drop --dt to use the recorded one")
    graph.dt = dt
    return graph


def _fan(node: Node, synapses: int) -> tuple[int, int]:
    """Largest fan-in of a target neuron and fan-out of a source neuron of a synapse node."""
    p = node.params
    if node.op in DENSE:
        w = np.asarray(p["weight"])
        nz = w != 0
        return int(nz.sum(axis=1).max(initial=0)), int(nz.sum(axis=0).max(initial=0))
    if node.op in CONV:
        w = np.asarray(p["weight"])
        fi = int(np.prod(w.shape[1:]))
        return fi, int(w.shape[0] // max(int(p.get("groups", 1)), 1) * np.prod(w.shape[2:]))
    if node.op in POOL:
        k = np.atleast_1d(p["kernel_size"])
        n = int(np.prod(k)) if k.size > 1 else int(k[0]) ** 2
        return n, 1
    if node.op in ONE_TO_ONE:
        return 1, 1
    return 0, 0
