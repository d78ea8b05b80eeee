"""What a quantized graph file must hold, checked as it is loaded: a well-formed graph (Graph.validate:
structure, shapes, real finite parameters) and integer parameters that are real, finite and non-empty,
for nodes that exist, each field of the type its kind declares (spikedeploy/graph/qparams.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spikedeploy.errors import FileFormatError, SpikeDeployError
from spikedeploy.graph.qparams import FoldedParams, SynapseParams


def check_header_types(header: dict, path) -> None:
    """The JSON header's containers have the types the loader indexes into."""
    g = header.get("graph")
    ok = isinstance(g, dict) and isinstance(g.get("nodes"), list) and isinstance(g.get("edges"), list) \
        and isinstance(header.get("q"), dict) and isinstance(header.get("scale", {}), dict)
    if not ok:
        raise FileFormatError(f"{path}: QGraph header lacks its graph, nodes, edges or q tables; write it again "
                              "with `spikedeploy quantize -o`")
    names = []
    for i, nd in enumerate(g["nodes"]):
        if not isinstance(nd, dict) or not isinstance(nd.get("name"), str) or not isinstance(nd.get("op"), str) \
                or not isinstance(nd.get("params"), dict) or not isinstance(nd.get("meta", {}), dict):
            raise FileFormatError(f"{path}: QGraph node {i} is malformed (name, op, params and meta must be a "
                                  "string, a string and two objects)")
        for key in ("placement", "modality"):
            if nd.get(key) is not None and not isinstance(nd.get(key), str):
                raise FileFormatError(f"{path}: QGraph node '{nd['name']}': {key} {nd.get(key)!r:.40} is not a string")
        for key in ("in_shape", "out_shape"):
            s = nd.get(key)
            if s is not None and not (isinstance(s, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                                                    for x in s)):
                raise FileFormatError(f"{path}: QGraph node '{nd['name']}': {key} {s!r:.40} is not a list of integers")
        names.append(nd["name"])
    if len(set(names)) != len(names):
        raise FileFormatError(f"{path}: QGraph has duplicate node names")
    for e in g["edges"]:
        if not (isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) and x in names for x in e)):
            raise FileFormatError(f"{path}: QGraph edge {e!r:.60} does not join two of its nodes")
    for key in ("meta",):
        if not isinstance(g.get(key, {}), dict) or not isinstance(header.get(key, {}), dict):
            raise FileFormatError(f"{path}: QGraph {key} is not an object")
    if not isinstance(header.get("deviations", []), list) or not all(isinstance(x, str) for x in header.get("deviations", [])):
        raise FileFormatError(f"{path}: QGraph deviations are not a list of strings")
    if not isinstance(header.get("target"), str):
        raise FileFormatError(f"{path}: QGraph target is {header.get('target')!r:.40}; expected a target name")


_MAX_DT = 1e3  # seconds per step: far above any neuromorphic time step (typically 1e-3)


def validate_qgraph(qg, path) -> None:
    g = qg.graph
    if g.dt is not None and (isinstance(g.dt, bool) or not isinstance(g.dt, (int, float, np.number))
                             or not 0 < float(g.dt) <= _MAX_DT):
        raise FileFormatError(f"{path}: QGraph dt is {g.dt!r:.40}; expected a number of seconds in "
                              f"(0, {_MAX_DT:g}] or null")
    if g.reset not in ("zero", "subtract"):
        raise FileFormatError(f"{path}: QGraph reset is {g.reset!r:.40}; expected 'zero' or 'subtract'")
    for name, node in g.nodes.items():
        for k in ("weight", "bias"):
            v = node.params.get(k)
            if v is not None and not isinstance(v, np.ndarray):
                raise FileFormatError(f"{path}: node '{name}' parameter '{k}' is {v!r:.40}, not an array")
    try:
        g.validate()
    except SpikeDeployError as e:
        raise FileFormatError(f"{path}: {e}") from None
    for node, q in qg.q.items():
        if node not in g.nodes:
            raise FileFormatError(f"{path}: quantized parameters for node '{node}', which the graph does not have")
        w = g.nodes[node].params.get("weight")
        if isinstance(q, SynapseParams) and isinstance(w, np.ndarray) and (
                not isinstance(q.weight, np.ndarray) or q.weight.shape != w.shape):
            raise FileFormatError(f"{path}: node '{node}' quantized weight has shape {list(np.shape(q.weight))}, "
                                  f"the graph's weight {list(w.shape)}; they must agree")
        for f in dataclasses.fields(q):
            _check_field(path, node, f, getattr(q, f.name))
        if isinstance(q, SynapseParams) and q.delay is not None:
            d = np.asarray(q.delay)
            if d.shape != np.shape(q.weight) or d.dtype.kind not in "iu" and np.any(d != np.rint(d)) or np.any(d < 0):
                raise FileFormatError(f"{path}: node '{node}' quantized delay has shape {list(d.shape)} (min "
                                      f"{d.min(initial=0):g}); it must be whole steps >= 0, one per synapse, in the "
                                      f"weight's shape {list(np.shape(q.weight))}")
        if isinstance(q, FoldedParams) and not isinstance(qg.q.get(q.folded_into), SynapseParams):
            raise FileFormatError(f"{path}: node '{node}' quantized 'folded_into' names '{q.folded_into:.40}', "
                                  "which has no synapse parameters; it must name the synapse that holds the delays")
    for node, s in qg.scale.items():
        if isinstance(s, dict | list | tuple | np.ndarray):
            continue  # per-channel or structured scales: their arrays are checked as values
        if isinstance(s, bool) or not isinstance(s, (int, float, np.number)) or not math.isfinite(float(s)) or s <= 0:
            raise FileFormatError(f"{path}: scale of node '{node}' is {s!r:.40}; expected a positive finite number")


def _check_field(path, node: str, f, v) -> None:
    """One field of a node's quantized parameters against its type in spikedeploy/graph/qparams.py."""
    where = f"node '{node}' quantized '{f.name}'"
    kind, optional = f.metadata["type"], f.metadata["optional"]
    if v is None:
        if not optional:
            raise FileFormatError(f"{path}: {where} is null; it needs a value")
        return
    if kind == "text":
        choices = f.metadata["choices"]
        if not isinstance(v, str) or choices and v not in choices:
            want = " | ".join(repr(c) for c in choices) if choices else "a node name"
            raise FileFormatError(f"{path}: {where} is {v!r:.40}; expected {want}")
    elif kind == "flag":
        if not isinstance(v, bool | np.bool_):
            raise FileFormatError(f"{path}: {where} is {v!r:.40}; expected true or false")
    elif kind == "names":
        if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
            raise FileFormatError(f"{path}: {where} is {v!r:.40}; expected a list of node names")
    else:
        if isinstance(v, str | bytes | bool | dict | np.bool_) or f.metadata["scalar"] and isinstance(v, list | tuple):
            raise FileFormatError(f"{path}: {where} is {v!r:.40}; expected a number or array")
        if f.metadata["step"] and np.ndim(v):
            raise FileFormatError(f"{path}: {where} is {v!r:.40}; expected one step number")
        _check_value(path, where, v)
        try:
            a = np.asarray(v, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise FileFormatError(f"{path}: {where} is {v!r:.40}; expected a number or array") from None
        bound = 64 if f.name.endswith("_exp") else 2**48
        if np.any(np.abs(a) > bound):
            raise FileFormatError(f"{path}: {where} exceeds {bound:,} in magnitude; no target has such values")


def _check_value(path, where: str, v) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            _check_value(path, f"{where}.{k}", x)
    elif isinstance(v, list | tuple):
        for x in v:
            _check_value(path, where, x)
    elif isinstance(v, np.ndarray | np.generic):
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise FileFormatError(f"{path}: {where} has dtype {a.dtype}; expected integers or real numbers")
        if a.ndim and a.size == 0:
            raise FileFormatError(f"{path}: {where} is an empty array")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise FileFormatError(f"{path}: {where} holds NaN or infinite values")
    elif isinstance(v, float) and not math.isfinite(v):
        raise FileFormatError(f"{path}: {where} is {v}; expected a finite number")
