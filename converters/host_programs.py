"""Executable host nodes: every host-side node of an exported graph gets a small ONNX program of its own.

Why: the backends run graphs whose host nodes sit between chip parts (spike × spike attention between two
spiking layers, an ANN front end before the first one). A host node's program computes its value, for one
time step, from the values of chip spiking neurons and Inputs (never from other host nodes: host ops
upstream of it are re-computed inside it), so a backend can run the graph stage by stage in any order its
edges allow (`spikedeploy.simulate.hybrid`). The program is stored in the node itself, so it survives NIR and
quantized-graph files:

    node.params["program"]   ONNX model bytes (uint8), batch dimension dynamic (backends fold T into it)
    node.meta["program"]     {"inputs": [graph node names], "input_shapes": [...], "out_shape": [...],
                              "macs": host MACs per sample and step, "ops": the torch ops it runs}
    node.meta["payload"]     for a host node read by chip nodes: how its float values cross onto the chip
                              (see `payload_encoding`)

Chip synapses whose value only host ops read (a Linear that feeds a gate product) are re-computed inside the
programs and move to the host: their placement becomes "host".
"""

from __future__ import annotations

import operator
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from spikedeploy.converters.onnx import (
    MAX_ABS_DIFF,
    _as_tensor,
    _compare,
    _ident,
    _torch_export,
    private_names,
)
from spikedeploy.errors import UnsupportedError
from spikedeploy.simulate.hybrid import payload_encoding

PROGRAM_KEY = "program"


def _boundary(traced, plan, graph) -> dict[str, str]:
    """fx values a host program may read: spikes of chip neurons and the model's inputs."""
    nodes = {n.name: n for n in traced.gm.graph.nodes}
    out: dict[str, str] = {}
    for g, f in plan.spikes.items():
        if g not in graph.nodes or graph.nodes[g].placement != "chip":
            continue
        out[f] = g
        for u in nodes[f].users:
            if u.op == "call_function" and u.target is operator.getitem and u.args[1] == 0:
                out[u.name] = g
    for g, f in plan.defining.items():
        if g in graph.nodes and graph.nodes[g].op == "Input":
            out[f] = g
    return out


def _slice(gm: fx.GraphModule, out_fx: str, boundary: dict[str, str]):
    """The fx nodes computing `out_fx` from boundary values, in program order, and the boundary values read."""
    nodes = {n.name: n for n in gm.graph.nodes}
    need: set[str] = set()
    reads: list[str] = []
    todo = [nodes[out_fx]]
    while todo:
        n = todo.pop()
        if n.name in need or n.name in reads:
            continue
        if n.name in boundary:
            reads.append(n.name)
            continue
        if n.op == "placeholder":
            raise UnsupportedError(f"host node reads fx value '{n.name}', which is neither a model input nor "
                                   "the spikes of a chip neuron")
        need.add(n.name)
        todo.extend(n.all_input_nodes)
    order = [n for n in gm.graph.nodes if n.name in need]
    pos = {name: i for i, name in enumerate(nodes)}
    reads.sort(key=pos.__getitem__)
    return order, reads


def _macs(gm: fx.GraphModule, order: list[fx.Node], records0: dict[str, Any]) -> tuple[int, list[str]]:
    """Multiply-accumulates per sample of the program's ops (matmuls and Linear/Conv layers exactly,
    elementwise ops one per output element)."""
    total, ops = 0, []
    for n in order:
        v = _as_tensor(records0.get(n.name)) if n.name in records0 else None
        if not isinstance(v, torch.Tensor) or n.op in ("get_attr",):
            continue
        per = int(v[0].numel()) if v.dim() >= 1 else 1
        tgt = n.target
        name = tgt if isinstance(tgt, str) else getattr(tgt, "__name__", str(tgt))
        if n.op == "call_module":
            m = gm.get_submodule(tgt)
            name = type(m).__name__
            w = getattr(m, "weight", None)
            if isinstance(m, torch.nn.Linear):
                per = per * m.in_features
            elif isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d) and w is not None:
                per = per * int(np.prod(w.shape[1:]))
        elif name in ("matmul", "bmm", "mm") or tgt is operator.matmul:
            a = _as_tensor(records0.get(n.args[0].name)) if isinstance(n.args[0], fx.Node) else None
            if isinstance(a, torch.Tensor) and a.dim() >= 1:
                per = per * int(a.shape[-1])
            name = "matmul"
        elif n.op == "call_method" and name in ("transpose", "permute", "reshape", "view", "flatten",
                                                 "contiguous", "unsqueeze", "squeeze", "size"):
            per = 0  # index bookkeeping
        total += per
        if per:
            ops.append(name)
    return total, sorted(set(ops))


def attach_host_programs(traced, plan, graph, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Give every host-side node of `graph` its program (see the module doc). Returns a summary with the
    largest difference between onnxruntime and torch over the recorded steps."""
    gm = traced.gm
    boundary = _boundary(traced, plan, graph)
    worst = 0.0
    done = []
    for name, node in list(graph.nodes.items()):
        if node.placement != "host" or node.spec.family != "host":
            continue
        out_fx = plan.from_host.get(name)
        if out_fx is None:
            out_fx = next((f for o, f in plan.outputs.items() if name in graph.predecessors(o)), None)
        if out_fx is None:
            out_fx = plan.defining.get(name)
        if out_fx is None:
            continue
        order, reads = _slice(gm, out_fx, boundary)
        new = fx.Graph()
        env: dict[str, fx.Node] = {}
        in_names = []
        for f in reads:
            nm = _ident(boundary[f])
            while nm in in_names:
                nm += "_"
            in_names.append(nm)
            env[f] = new.placeholder(nm)
        for n in order:
            env[n.name] = new.node_copy(n, lambda a, env=env: env[a.name])
        out_node = env[out_fx]
        if node.meta.get("channel_first"):  # tokens [N, D] handed to the chip as [D, N]
            out_node = new.call_method("contiguous", (new.call_method("transpose", (out_node, -2, -1)),))
        new.output(out_node)
        private_names(new)
        inner = fx.GraphModule(gm, new).eval()
        gathers = [plan.layouts.get(boundary[f]) for f in reads]
        if any(boundary[f] in plan.slices for f in reads):
            raise UnsupportedError(f"host node '{name}' reads a neuron layer split over a torch.cat; concatenate "
                                   "after the host op instead")
        hm = _InChipLayout(inner, gathers).eval()
        example = tuple(_to_chip_layout(_as_tensor(records[0][f]), g) for f, g in zip(reads, gathers, strict=True))
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "host.onnx"
            try:
                _torch_export(hm, example, in_names, ["out"], path, dynamo=False)
                import onnxruntime as ort

                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                chip_records = [{**r, **{f: _to_chip_layout(_as_tensor(r[f]), g) for f, g in zip(reads, gathers, strict=True)}}
                                for r in records[:3]]
                diff, _ = _compare(sess, hm, chip_records, list(zip(in_names, reads, strict=True)), [("out", out_fx)])
            except UnsupportedError:
                raise
            except Exception as e:
                why = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
                raise UnsupportedError(
                    f"{node.meta.get('torch', node.op)}: neither the chip nor the host can run it (ONNX export fails: "
                    f"{type(e).__name__}: {why[0] if why else ''}); on chip: Linear, Conv1d/2d, AvgPool2d, BatchNorm "
                    "(folded), +, torch.cat, constant scales, layout ops, spike AND/OR, snnTorch and spikingjelly "
                    "neurons; on the host: any ONNX-exportable op that treats each sample on its own. Fix: replace "
                    "it, or compute it outside the model") from e
            blob = path.read_bytes()
        _check_per_sample(hm, example, name, node)
        if diff > MAX_ABS_DIFF:
            raise UnsupportedError(f"host node '{name}': onnxruntime differs from torch by {diff:.3g} "
                                   f"(limit {MAX_ABS_DIFF:g})")
        worst = max(worst, diff)
        out = _as_tensor(records[0][out_fx])
        if node.meta.get("channel_first"):
            out = out.transpose(-2, -1)
        macs, ops = _macs(gm, order, records[0])
        node.params[PROGRAM_KEY] = np.frombuffer(blob, dtype=np.uint8).copy()
        node.params["out_shape"] = np.asarray(tuple(out.shape[1:]), dtype=np.int64)
        node.meta["program"] = {
            "inputs": [boundary[f] for f in reads],
            "input_shapes": [list(x.shape[1:]) for x in example],
            "out_shape": list(out.shape[1:]), "macs": macs, "ops": ops,
        }
        node.meta["macs"] = macs
        if any(graph.nodes[s].placement == "chip" and graph.nodes[s].op != "Output" for s in graph.successors(name)):
            vals = np.concatenate([_as_tensor(r[out_fx]).detach().double().numpy().ravel() for r in records])
            node.meta["payload"] = payload_encoding(vals)
        done.append(name)
    _move_host_only_synapses(graph)
    return {"nodes": done, "max_abs_diff": worst}


class _InChipLayout(torch.nn.Module):
    """A host program that takes chip values in the chip's layout: a neuron layer in a permuted token view
    (Plan.layouts) arrives flat in chip order and is gathered back into the torch layout first."""

    def __init__(self, inner: fx.GraphModule, gathers: list):
        super().__init__()
        self.inner = inner
        self.n = len(gathers)
        self.shapes = []
        for i, g in enumerate(gathers):
            self.register_buffer(f"idx{i}", None if g is None else torch.as_tensor(np.asarray(g).ravel(), dtype=torch.long))
            self.shapes.append(None if g is None else tuple(np.asarray(g).shape))

    def forward(self, *xs):
        ys = []
        for i, x in enumerate(xs):
            idx = getattr(self, f"idx{i}")
            ys.append(x if idx is None else x.index_select(1, idx).reshape(x.shape[0], *self.shapes[i]))
        return self.inner(*ys)


def _to_chip_layout(x: torch.Tensor, idx) -> torch.Tensor:
    """torch-layout values [B, ...] of a neuron in a permuted view, as the chip holds them (flat, chip order)."""
    if idx is None:
        return x
    flat = x.reshape(x.shape[0], -1)
    out = torch.empty_like(flat)
    out[:, torch.as_tensor(np.asarray(idx).ravel(), dtype=torch.long)] = flat
    return out


def _check_per_sample(hm, example, name, node) -> None:
    """Backends fold time steps into the batch, so a host op must treat each sample on its own: the
    result for [x; x] must be [y; y]."""
    with torch.no_grad():
        y = _as_tensor(hm(*example))
        yy = _as_tensor(hm(*(torch.cat([t, t]) for t in example)))
    if yy.shape[0] != 2 * y.shape[0] or not torch.allclose(yy, torch.cat([y, y]), atol=MAX_ABS_DIFF):
        raise UnsupportedError(
            f"host node '{name}' ({node.meta.get('torch', node.op)}): its result for one sample depends on the "
            "other samples of the batch (a recurrent layer fed a 2-D tensor treats the batch as a sequence); a "
            "host op must treat each sample on its own. Fix: give it a [B, L, ...] input or compute it outside "
            "the model")


def _move_host_only_synapses(graph) -> None:
    """Chip synapse/shape nodes read only by host nodes run inside the host programs: place them on the host."""
    changed = True
    while changed:
        changed = False
        for name, node in graph.nodes.items():
            if node.placement != "chip" or node.spec.family not in ("synapse", "shape"):
                continue
            succ = graph.successors(name)
            if succ and all(graph.nodes[s].placement == "host" and graph.nodes[s].op != "Output" for s in succ):
                node.placement = "host"
                node.meta["host_reason"] = "read only by host ops; computed inside their programs"
                changed = True


def insert_host_synapses(graph) -> list[str]:
    """A chip neuron reads a host value through an identity synapse (on chip every neuron input arrives
    through one); the synapse also carries the payload scale. Exact: Scale(1) changes no value."""
    from spikedeploy.graph.ir import Node

    done = []
    for a, b in list(graph.edges):
        na, nb = graph.nodes[a], graph.nodes[b]
        if na.placement == "host" and na.op != "Output" and nb.placement == "chip" and nb.spec.family == "neuron":
            name = f"{a}->{b}"
            graph.add(Node(name, "Scale", {"scale": np.asarray(1.0)}, modality=nb.modality,
                           meta={"host_boundary": True}))
            i = graph.edges.index((a, b))
            graph.edges[i:i + 1] = [(a, name), (name, b)]
            done.append(f"identity synapse '{name}' between host node '{a}' and neuron '{b}' (exact)")
    return done
