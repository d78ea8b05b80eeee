"""The quantized graph file (QGRAPH.npz): one uncompressed .npz, every array stored natively, plus a JSON
header, so it loads fast (no pickle, no decompression) and round-trips exactly, dtypes included.

Layout (format "spikedeploy-qgraph", version 2):

    __header__          uint8 array holding UTF-8 JSON:
      {"format": "spikedeploy-qgraph", "version": 1, "target": str,
       "graph": {"nodes": [{"name", "op", "params", "placement", "modality", "meta", "in_shape", "out_shape"}],
                 "edges": [[src, dst], ...], "dt", "reset", "reset_delay", "meta"},
       "q": {node: {"kind": KIND, field: value, ...}}, "scale": {node: float}, "deviations": [str], "meta": {...}}
    a/0, a/1, ...       the arrays the header refers to

Values in the header are JSON, with these tagged objects for what JSON cannot say:
    {"__array__": "a/3"}       a numpy array (any non-object dtype) stored under that key
    {"__scalar__": "a/4"}      a numpy scalar (np.int64(3), np.float32(...)), stored as a 0-d array
    {"__tuple__": [...]}       a tuple;   {"__float__": "nan" | "inf" | "-inf"}   a non-finite float
    {"__dict__": [[k, v], ...]}  a dict whose keys are not all strings, or that looks like a tag
Plain dicts, lists, str, int, float, bool and None are themselves. Readers refuse a newer major version.
Each node's q entry holds its kind and every field of that kind (spikedeploy/graph/qparams.py); version-1
files stored the fields without a kind, which the reader infers from their keys.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from typing import Any

import numpy as np

from spikedeploy.checks.npz import check_npz_members
from spikedeploy.checks.qgraph import check_header_types, validate_qgraph
from spikedeploy.errors import FileFormatError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import fields_of, from_fields
from spikedeploy.io.atomic import atomic_write

FORMAT = "spikedeploy-qgraph"
VERSION = 2
_TAGS = ("__array__", "__scalar__", "__tuple__", "__float__", "__dict__")


class _Enc:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise FileFormatError(f"{where}: object arrays cannot be stored; convert to a numeric or string dtype")
            key = f"a/{len(self.arrays)}"
            self.arrays[key] = v
            return {"__array__": key}
        if isinstance(v, np.generic):
            key = f"a/{len(self.arrays)}"
            self.arrays[key] = np.asarray(v)
            return {"__scalar__": key}
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, tuple):
            return {"__tuple__": [self(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, dict):
            if all(isinstance(k, str) for k in v) and not (len(v) == 1 and next(iter(v)) in _TAGS):
                return {k: self(x, f"{where}.{k}") for k, x in v.items()}
            return {"__dict__": [[self(k, f"{where} key"), self(x, f"{where}.{k}")] for k, x in v.items()]}
        raise FileFormatError(f"{where}: a value of type {type(v).__name__} cannot be stored in a QGraph file")


def _dec(v: Any, arrays) -> Any:
    if isinstance(v, list):
        return [_dec(x, arrays) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            (tag, x), = v.items()
            if tag == "__array__":
                return arrays[x]
            if tag == "__scalar__":
                return arrays[x][()]
            if tag == "__tuple__":
                return tuple(_dec(y, arrays) for y in x)
            if tag == "__float__":
                return float(x)
            if tag == "__dict__":
                return {_dec(k, arrays): _dec(y, arrays) for k, y in x}
        return {k: _dec(x, arrays) for k, x in v.items()}
    return v


def qgraph_to_arrays(qg: QGraph) -> dict[str, np.ndarray]:
    enc = _Enc()
    g = qg.graph
    nodes = []
    for name, n in g.nodes.items():
        nodes.append({
            "name": name, "op": n.op, "placement": n.placement, "modality": n.modality,
            "params": enc(dict(n.params), f"node '{name}' params"),
            "meta": enc(dict(n.meta), f"node '{name}' meta"),
            "in_shape": None if n.in_shape is None else [int(x) for x in n.in_shape],
            "out_shape": None if n.out_shape is None else [int(x) for x in n.out_shape],
        })
    header = {
        "format": FORMAT, "version": VERSION, "target": qg.target,
        "graph": {"nodes": nodes, "edges": [[a, b] for a, b in g.edges], "dt": enc(g.dt, "graph dt"),
                  "reset": g.reset, "reset_delay": bool(g.reset_delay), "meta": enc(dict(g.meta), "graph meta")},
        "q": {name: {"kind": p.kind, **enc(fields_of(p), f"node '{name}' q")} for name, p in qg.q.items()},
        "scale": enc(qg.scale, "scale"), "deviations": enc(list(qg.deviations), "deviations"),
        "meta": enc(dict(qg.meta), "qgraph meta"),
    }
    arrays = dict(enc.arrays)
    arrays["__header__"] = np.frombuffer(json.dumps(header, allow_nan=False).encode(), dtype=np.uint8)
    return arrays


def save_qgraph(qg: QGraph, path: str | os.PathLike, *, compress: bool = False) -> None:
    """Write `qg` to `path` (.npz) atomically. Uncompressed by default: weights are small, loads are fast."""
    arrays = qgraph_to_arrays(qg)
    with atomic_write(path, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)


def load_qgraph(path: str | os.PathLike) -> QGraph:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            if "__header__" not in z.files:
                raise FileFormatError(f"{path}: no '__header__' entry; not a spikedeploy QGraph file "
                                      "(create one with `spikedeploy quantize ... -o QGRAPH.npz`)")
            check_npz_members(z, path)
            header = json.loads(bytes(z["__header__"]).decode())
            arrays = {k: z[k] for k in z.files if k != "__header__"}
    except FileNotFoundError as e:
        raise FileFormatError(f"{path}: QGraph file not found") from e
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path}: not a readable QGraph file ({e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise FileFormatError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
    if not isinstance(header.get("version", 0), int) or isinstance(header.get("version"), bool):
        raise FileFormatError(f"{path}: QGraph version {header.get('version')!r:.40} is not an integer")
    check_header_types(header, path)
    if int(header.get("version", 0)) > VERSION:
        raise FileFormatError(f"{path}: QGraph file version {header.get('version')} is newer than this spikedeploy "
                              f"reads ({VERSION}); upgrade spikedeploy")
    try:
        gh = header["graph"]
        g = Graph(dt=_dec(gh["dt"], arrays), reset=gh["reset"], reset_delay=gh["reset_delay"],
                  meta=_dec(gh["meta"], arrays))
        for nd in gh["nodes"]:
            params = _dec(nd["params"], arrays)
            node = Node(nd["name"], nd["op"], dict(params), placement=nd["placement"], modality=nd["modality"],
                        meta=_dec(nd["meta"], arrays))
            node.params = params  # exactly what was saved, without defaults or conversions
            node.in_shape = None if nd["in_shape"] is None else tuple(nd["in_shape"])
            node.out_shape = None if nd["out_shape"] is None else tuple(nd["out_shape"])
            g.nodes[node.name] = node
        g.edges = [(a, b) for a, b in gh["edges"]]
        q = _q_params(path, _dec(header["q"], arrays), int(header.get("version", 0)))
        qg = QGraph(graph=g, target=header["target"], q=q, scale=_dec(header["scale"], arrays),
                    deviations=_dec(header["deviations"], arrays), meta=_dec(header["meta"], arrays))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FileFormatError(f"{path}: QGraph header is malformed ({type(e).__name__}: {str(e)[:200]})") from e
    validate_qgraph(qg, path)
    return qg


def _q_params(path, q: dict, version: int) -> dict:
    """Each node's decoded q entry as its dataclass; refused in one line naming the file, node and field."""
    out = {}
    for name, d in q.items():
        where = f"{path}: node '{name}'"
        if not isinstance(d, dict):
            raise FileFormatError(f"{where}: quantized parameters are {type(d).__name__}, not an object; write the "
                                  "file again with `spikedeploy quantize -o`")
        if version >= 2:
            d = dict(d)
            if "kind" not in d:
                raise FileFormatError(f"{where}: quantized parameters lack their 'kind'; write the file again with "
                                      "`spikedeploy quantize -o`")
            kind = d.pop("kind")
        else:
            kind, d = _kind_from_keys(d)
            if not kind:
                raise FileFormatError(f"{where}: the kind of quantized parameters with fields {sorted(map(str, d))} "
                                      "cannot be told from them; write the file again with `spikedeploy quantize -o`")
        try:
            out[name] = from_fields(kind, d, where)
        except ValueError as e:
            raise FileFormatError(f"{e}; write the file again with `spikedeploy quantize -o`") from None
    return out


def _kind_from_keys(d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The kind and fields of a node's parameters as version-1 quantized graph files stored them (a dict
    without a kind): the kind told by its keys, renamed keys mapped to today's fields."""
    d = dict(d)
    if "folded_into" in d:
        return "folded", d
    if "sdnn" in d:
        d["mode"] = d.pop("sdnn")
        return "sigma_delta", d
    if "rf" in d:
        d["mode"] = d.pop("rf")
        return "rf", d
    if {"du", "dv", "vth"} & set(d):
        if isinstance(d.get("input_transform"), dict):  # anything else is refused as a field cuba lacks
            t = d.pop("input_transform")
            d["input_weight"], d["input_bias"] = t.get("weight"), t.get("bias")
        return "cuba", d
    if "weight" in d:
        return "synapse", d
    return "", d
