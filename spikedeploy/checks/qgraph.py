"""What a quantized graph file must hold, checked as it is loaded: a well-formed graph (Graph.validate:
structure, shapes, real finite parameters) and integer parameters that are real, finite and non-empty,
for nodes that exist."""

from __future__ import annotations

import math

import numpy as np

from spikedeploy.errors import FileFormatError, SpikeDeployError


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


# quantized parameters that are numbers (or arrays of numbers), whichever target wrote them
_STEPS_Q = {"bias_onset", "v_init_step", "reset_interval", "reset_offset"}  # a step count: a number
_NUMERIC_Q = {"weight", "weight_exp", "num_weight_bits", "bias_mant", "bias_exp", "du", "dv", "vth", "delay", *_STEPS_Q}
_MAY_BE_NONE = {"delay"}
_SCALAR_Q = {"weight_exp", "num_weight_bits", "bias_exp", "du", "dv", "vth", *_STEPS_Q}  # a number or a numpy array
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
        if not isinstance(q, dict):
            raise FileFormatError(f"{path}: quantized parameters of node '{node}' are not an object")
        w = g.nodes[node].params.get("weight")
        if "weight" in q and isinstance(w, np.ndarray) and (
                not isinstance(q["weight"], np.ndarray) or q["weight"].shape != w.shape):
            raise FileFormatError(f"{path}: node '{node}' quantized weight has shape {list(np.shape(q['weight']))}, "
                                  f"the graph's weight {list(w.shape)}; they must agree")
        for key, v in q.items():
            if key in _NUMERIC_Q and (v is None and key not in _MAY_BE_NONE or isinstance(v, str | bytes | bool | dict)
                                      or key in _SCALAR_Q and isinstance(v, list | tuple)):
                raise FileFormatError(f"{path}: node '{node}' quantized '{key}' is {v!r:.40}; expected a number or array")
            if key in _STEPS_Q and np.ndim(v):
                raise FileFormatError(f"{path}: node '{node}' quantized '{key}' is {v!r:.40}; expected one step number")
            _check_value(path, f"node '{node}' quantized '{key}'", v)
            if key in _NUMERIC_Q and v is not None:
                bound = 64 if key.endswith("_exp") else 2**48
                if np.any(np.abs(np.asarray(v, dtype=np.float64)) > bound):
                    raise FileFormatError(f"{path}: node '{node}' quantized '{key}' exceeds {bound:,} in magnitude; "
                                          "no target has such values")
    for node, s in qg.scale.items():
        if isinstance(s, dict | list | tuple | np.ndarray):
            continue  # per-channel or structured scales: their arrays are checked as values
        if isinstance(s, bool) or not isinstance(s, (int, float, np.number)) or not math.isfinite(float(s)) or s <= 0:
            raise FileFormatError(f"{path}: scale of node '{node}' is {s!r:.40}; expected a positive finite number")


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
