"""NIR in and out: `nir.NIRGraph` objects and `.nir` (HDF5) files <-> Graph.

Every NIR primitive maps to the Graph op of the same name with the same parameter names (ops.py), so
parameters pass through untouched, dtype included. What NIR cannot say is carried in NIR `metadata`
under the key "spikedeploy" (graph level and node level), which other tools ignore:

    graph:  dt, reset, reset_delay, node_order and edges (JSON, exact order), meta (graph.meta, JSON),
            host (host-side nodes, see below)
    node:   placement, modality, meta (JSON), none (parameters that were None), shapes (original
            shapes of parameters NIR made us broadcast, e.g. a scalar v_reset)

NIR metadata cannot hold None, so None values are skipped (and listed under "none" for parameters).

Host-side ops (ops.HOST_OPS) are not NIR primitives. They are cut out of the NIR graph: each edge
between a chip node and a host node becomes an NIR Output (chip -> host) or Input (host -> chip) node
named "<src>-><dst>", and the host nodes, their parameters and all edges go into the graph metadata.
Other tools therefore see a valid NIR graph of the chip part with extra inputs/outputs at the cuts;
`read_nir` reassembles the full graph exactly.

Reading is tolerant of files other tools wrote (the NIR paper's files): HDF5 is read with h5py
directly (not `nir.read`, which rejects some real files and mutates graphs), nested NIRGraphs are
flattened with names "outer.inner", and known quirks are repaired with a RepairWarning and a line in
graph.meta["repairs"]. Anything else wrong raises a SpikeDeployError naming the file and the node.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spikedeploy.checks.limits import check_stored_array
from spikedeploy.checks.nir import check_nir_dataset
from spikedeploy.checks.params import check_node_params
from spikedeploy.errors import (
    FileFormatError,
    GraphError,
    RepairWarning,
    ShapeError,
    SpikeDeployError,
    UnsupportedError,
)
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.ops import CONV, DENSE, HOST_OPS, IO, OPS, POOL, RESETTING

META_KEY = "spikedeploy"
META_VERSION = 1
# Keys the reader sets on graph.meta to describe the loaded file; not written back.
_LOADER_KEYS = ("format", "source_file")

NIR_TYPES = (
    "Input", "Output", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Delay",
    "Flatten", "Threshold", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF",
)
# Ops whose parameters define their (elementwise) signal shape in NIR.
_ELEMENTWISE = ("Scale", "Delay", "Threshold", "I", "IF", "LI", "LIF", "CubaLI", "CubaLIF")
# NIR field name -> Graph parameter name where they differ.
_FIELD_RENAME = {"Input": {"shape": "shape"}, "Flatten": {"input_type": "input_shape"}}


# ================================================================================================
# JSON with exact numpy values (graph.meta, node.meta): arrays keep dtype and shape, tuples stay tuples.
# ================================================================================================
def _enc(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biufcUS":
            raise UnsupportedError(f"metadata array of dtype {x.dtype} cannot be stored in NIR metadata")
        data = x.astype(str).tolist() if x.dtype.kind in "US" else x.tolist()
        if x.dtype.kind == "c":
            data = [[v.real, v.imag] for v in x.ravel().tolist()]
        return {"__nd__": data, "dtype": x.dtype.str, "shape": list(x.shape)}
    if isinstance(x, np.generic):
        return {"__np__": _enc(np.asarray(x)), "type": "scalar"}
    if isinstance(x, tuple):
        return {"__tuple__": [_enc(v) for v in x]}
    if isinstance(x, list):
        return [_enc(v) for v in x]
    if isinstance(x, dict):
        if not all(isinstance(k, str) for k in x):
            return {"__dict__": [[_enc(k), _enc(v)] for k, v in x.items()]}
        return {k: _enc(v) for k, v in x.items()}
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise UnsupportedError(f"metadata value of type {type(x).__name__} cannot be stored in NIR metadata")


def _dec(x: Any) -> Any:
    if isinstance(x, list):
        return [_dec(v) for v in x]
    if isinstance(x, dict):
        if "__nd__" in x:
            dt = np.dtype(x["dtype"])
            if dt.kind == "c":
                a = np.array([complex(r, i) for r, i in x["__nd__"]], dtype=dt)
            else:
                a = np.array(x["__nd__"], dtype=dt)
            return a.reshape(x["shape"])
        if "__np__" in x:
            return _dec(x["__np__"])[()]
        if "__tuple__" in x:
            return tuple(_dec(v) for v in x["__tuple__"])
        if "__dict__" in x:
            return {_dec(k): _dec(v) for k, v in x["__dict__"]}
        return {k: _dec(v) for k, v in x.items()}
    return x


def dumps_exact(x: Any) -> str:
    return json.dumps(_enc(x), allow_nan=True)


def loads_exact(s: str | bytes) -> Any:
    if isinstance(s, bytes):
        s = s.decode("utf8")
    return _dec(json.loads(s))


# ================================================================================================
# Graph -> NIR
# ================================================================================================
def to_nir(graph: Graph):
    """A `nir.NIRGraph` holding `graph` (host-side nodes cut out and kept in metadata, see module doc)."""
    import nir

    g = graph.copy()
    g.validate()
    host = {n for n, v in g.nodes.items() if v.op in HOST_OPS}
    for name in g.nodes:
        if "/" in name:
            raise UnsupportedError(f"node '{name}': NIR (HDF5) node names cannot contain '/'; rename the node")

    nodes: dict[str, Any] = {}
    for name, node in g.nodes.items():
        if name in host:
            continue
        nodes[name] = _node_to_nir(nir, node)

    edges: list[tuple[str, str]] = []
    cuts: list[str] = []
    for a, b in g.edges:
        if a in host and b in host:
            continue
        if b in host:  # chip -> host: the chip part ends in an Output here
            cut = f"{a}->{b}"
            nodes[cut] = nir.Output(output_type=np.asarray(g.nodes[a].out_shape, dtype=np.int64))
            edges.append((a, cut))
            cuts.append(cut)
        elif a in host:  # host -> chip: the chip part takes an Input here
            cut = f"{a}->{b}"
            nodes[cut] = nir.Input(input_type=np.asarray(g.nodes[a].out_shape, dtype=np.int64))
            edges.append((cut, b))
            cuts.append(cut)
        else:
            edges.append((a, b))
    clash = [c for c in cuts if c in g.nodes]
    if clash:
        raise UnsupportedError(f"node name '{clash[0]}' clashes with a host-boundary node name; rename it")

    gm: dict[str, Any] = {"version": META_VERSION}
    if graph.dt is not None:
        gm["dt"] = float(graph.dt)
    gm["reset"] = graph.reset
    gm["reset_delay"] = bool(graph.reset_delay)
    gm["node_order"] = json.dumps(list(g.nodes))
    gm["edges"] = json.dumps([list(e) for e in g.edges])
    meta = {k: v for k, v in graph.meta.items() if k not in _LOADER_KEYS and k != "nir_metadata"}
    if meta:
        gm["meta"] = dumps_exact(meta)
    if host:
        gm["host"] = {"cuts": json.dumps(cuts)}
        for n in host:
            node = g.nodes[n]
            entry: dict[str, Any] = {"op": node.op, "placement": node.placement}
            if node.modality is not None:
                entry["modality"] = node.modality
            if node.meta:
                entry["meta"] = dumps_exact(node.meta)
            entry["params"] = dumps_exact({k: v for k, v in node.params.items()})
            gm["host"][n] = entry
    metadata = dict(_foreign(graph.meta.get("nir_metadata")))
    metadata[META_KEY] = gm
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata, type_check=False)


def _foreign(md: Any) -> dict:
    """Metadata another tool wrote (kept in meta['nir_metadata']) goes back out as it came."""
    if not isinstance(md, dict):
        return {}
    return {k: v for k, v in md.items() if k != META_KEY and v is not None}


def _scalarise(v: Any) -> Any:
    # nir's shape helpers index 0-d arrays and fail; numpy scalars keep the dtype and write as scalars.
    if isinstance(v, np.ndarray) and v.ndim == 0:
        return v[()]
    return v


def _node_to_nir(nir, node: Node):
    op, p = node.op, dict(node.params)
    none = sorted(k for k, v in p.items() if v is None)
    shapes: dict[str, list[int]] = {}
    out_shape = tuple(node.out_shape or ())
    in_shape = tuple(node.in_shape or ())

    if op in _ELEMENTWISE:
        for k in OPS[op].required + tuple(OPS[op].optional):
            v = p.get(k)
            if isinstance(v, np.ndarray) and v.shape != out_shape:
                shapes[k] = list(v.shape)
                p[k] = (v.reshape(out_shape) if v.size == int(np.prod(out_shape))
                        else np.broadcast_to(v, out_shape)).copy()
    kw: dict[str, Any]
    if op == "Input":
        obj = nir.Input(input_type=np.asarray(p["shape"]))
    elif op == "Output":
        obj = nir.Output(output_type=np.asarray(in_shape, dtype=np.int64))
    elif op == "Flatten":
        if p.get("input_shape") is None:
            p["input_shape"] = np.asarray(in_shape, dtype=np.int64)
        obj = nir.Flatten(input_type=np.asarray(p["input_shape"]), start_dim=_scalarise(p["start_dim"]),
                          end_dim=_scalarise(p["end_dim"]))
    elif op in CONV:
        w = p["weight"]
        if p.get("bias") is None:
            p["bias"] = np.zeros(w.shape[0], dtype=w.dtype)
        if p.get("input_shape") is None:
            p["input_shape"] = np.asarray(in_shape[1:], dtype=np.int64)
        ishp = p["input_shape"]
        kw = {k: _scalarise(p[k]) for k in ("weight", "stride", "padding", "dilation", "groups", "bias")}
        if op == "Conv1d":
            # NIR's Conv1d takes a scalar length (nir.read fails on a 1-element array)
            ishp = np.asarray(ishp)
            if ishp.shape != ():
                if "input_shape" not in none:
                    shapes["input_shape"] = list(ishp.shape)
                ishp = ishp.reshape(-1)[0]
            obj = nir.Conv1d(input_shape=ishp, **kw)
            p.pop("input_shape")
        else:
            obj = nir.Conv2d(input_shape=tuple(int(x) for x in np.asarray(ishp).ravel()), **kw)
            obj.input_shape = _scalarise(ishp)
    elif op in POOL:
        if p.get("stride") is None:
            p["stride"] = np.array(p["kernel_size"], copy=True)
        obj = getattr(nir, op)(**{k: _scalarise(p[k]) for k in ("kernel_size", "stride", "padding")})
    else:
        fields = OPS[op].required + tuple(OPS[op].optional)
        obj = getattr(nir, op)(**{k: _scalarise(p[k]) for k in fields})
    # nir's constructors may broadcast or promote (CubaLIF's w_in, Conv2d's padding); put the exact values back.
    for k, v in p.items():
        if k in ("shape",) or (op == "Flatten" and k == "input_shape"):
            continue
        if v is not None and hasattr(obj, k):
            setattr(obj, k, _scalarise(v) if op not in _ELEMENTWISE else v)

    nm: dict[str, Any] = {"placement": node.placement}
    if node.modality is not None:
        nm["modality"] = node.modality
    own = {k: v for k, v in node.meta.items() if k != "nir_metadata"}
    if own:
        nm["meta"] = dumps_exact(own)
    if none:
        nm["none"] = json.dumps(none)
    if shapes:
        nm["shapes"] = json.dumps(shapes)
    md = dict(_foreign(node.meta.get("nir_metadata")))
    md[META_KEY] = nm
    obj.metadata = md
    return obj


def write_nir(graph: Graph, path: str | Path) -> None:
    """Write `graph` to a .nir file atomically (nir.write into a temp file, then rename)."""
    import nir

    from spikedeploy.io.atomic import atomic_path

    ng = to_nir(graph)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            nir.write(tmp, ng)
    except (TypeError, ValueError) as e:
        raise UnsupportedError(f"{path}: NIR cannot store this graph ({e}); check node parameters and metadata") from e


# ================================================================================================
# NIR -> Graph
# ================================================================================================
def from_nir(nir_graph, *, source: str | None = None) -> Graph:
    """Graph from an in-memory `nir.NIRGraph` (nested graphs flattened as "outer.inner")."""
    d = _nir_obj_to_dict(nir_graph)
    where = source or "NIR graph"
    g = _build(d, where, repairs=[])
    g.meta.setdefault("provenance", {"format": "nir", "source": source} if source else {"format": "nir"})
    return g


def read_nir(path: str | Path) -> Graph:
    """Graph from a .nir file; known quirks of other tools' files are repaired with a RepairWarning."""
    from spikedeploy.io.graph_files import read_hdf5

    path = Path(path)
    version, d = read_hdf5(path, what="a NIR (.nir) file", group="node", hint="write it with nir.write",
                           read=lambda f: (_decode(f["version"][()]) if "version" in f else None,
                                           _h5_to_dict(f["node"])))
    repairs: list[str] = []
    g = _build(d, str(path), repairs)
    g.meta["format"] = "nir"
    g.meta["source_file"] = str(path)
    g.meta.setdefault("provenance", {"format": "nir", "file": path.name, "nir_version": version})
    # The reset rule comes from the file's parameters and spikedeploy's metadata (per node and graph-wide),
    # never from its name: a foreign NIR file states reset to v_reset, and that is what is loaded.
    if repairs:
        g.meta["repairs"] = list(g.meta.get("repairs", [])) + [r for r in repairs if r not in g.meta.get("repairs", [])]
        for r in repairs:
            warnings.warn(r, RepairWarning, stacklevel=2)
    return g


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.ndarray) and v.dtype.kind in "OS":
        return np.array([_decode(x) for x in v.ravel()], dtype=object).reshape(v.shape)
    return v


def _h5_to_dict(group) -> dict:
    import h5py

    out: dict[str, Any] = {}
    for k, item in group.items():
        if isinstance(item, h5py.Group):
            out[k] = _h5_to_dict(item)
        elif not isinstance(item, h5py.Dataset):  # a dangling link or a named datatype in a damaged file
            raise KeyError(f"'{k}' in {group.name} cannot be read")
        else:
            check_stored_array(item.file.filename, item.name, item.shape or (), item.dtype.itemsize)
            out[k] = _decode(item[()])
            check_nir_dataset(item.file.filename, item.name, out[k])
    return out


def _nir_obj_to_dict(node) -> dict:
    """The same dict a .nir file gives for this node (field names, `shape` for Input/Output)."""
    import dataclasses

    import nir

    t = type(node).__name__
    if isinstance(node, nir.NIRGraph):
        return {"type": "NIRGraph", "nodes": {k: _nir_obj_to_dict(v) for k, v in node.nodes.items()},
                "edges": [tuple(e) for e in node.edges], "metadata": dict(node.metadata or {})}
    d: dict[str, Any] = {"type": t, "metadata": dict(getattr(node, "metadata", None) or {})}
    if t == "Input":
        d["shape"] = node.input_type["input"]
        return d
    if t == "Output":
        d["shape"] = node.output_type["output"]
        return d
    if t == "Flatten":
        d["input_type"] = node.input_type["input"]
    for f in dataclasses.fields(node):
        if f.name in ("input_type", "output_type", "metadata"):
            continue
        d[f.name] = getattr(node, f.name)
    return d


def _md_to_plain(md: Any) -> dict:
    return md if isinstance(md, dict) else {}


def _build(d: dict, where: str, repairs: list[str]) -> Graph:
    """Flatten the (possibly nested) NIR dict and build a validated Graph."""
    if d.get("type") != "NIRGraph" or not isinstance(d.get("nodes"), dict):
        raise FileFormatError(f"{where}: top-level node is '{d.get('type')}', not a NIRGraph")
    flat_nodes: dict[str, dict] = {}
    flat_edges: list[tuple[str, str]] = []
    _flatten(d, "", where, flat_nodes, flat_edges, repairs, top=True)

    md = _md_to_plain(d.get("metadata"))
    ours = _md_to_plain(md.get(META_KEY))
    g = Graph()
    host = _md_to_plain(ours.get("host"))
    cuts = set(json.loads(_decode(host["cuts"]))) if "cuts" in host else set()

    declared_out: dict[str, Any] = {}
    for name, nd in flat_nodes.items():
        if name in cuts:
            continue
        node, decl = _dict_to_node(name, nd, where)
        if decl is not None:
            declared_out[name] = decl
        g.nodes[name] = node
    for name, entry in host.items():
        if name == "cuts":
            continue
        g.nodes[name] = _host_node(name, _md_to_plain(entry), where)

    # Graph-level settings: ours first, else the plain keys other exporters write (nir-export.md §5.1).
    dt = ours.get("dt", md.get("dt"))
    g.dt = float(dt) if dt is not None else None
    reset = _decode(ours.get("reset", md.get("reset", "zero")))
    if reset not in ("zero", "subtract"):
        raise FileFormatError(f"{where}: metadata reset mode '{reset}' is not 'zero' or 'subtract'")
    g.reset = str(reset)
    g.reset_delay = bool(ours.get("reset_delay", md.get("reset_delay", False)))
    if "meta" in ours:
        g.meta = loads_exact(_decode(ours["meta"]))
    foreign = {k: v for k, v in md.items() if k != META_KEY}
    if foreign:
        g.meta["nir_metadata"] = foreign

    # Edges: ours record the exact order (and the host edges); else the file's, minus the cut nodes.
    nir_edges = [(a, b) for a, b in flat_edges]
    edges = nir_edges
    if "edges" in ours:
        stored = [tuple(e) for e in json.loads(_decode(ours["edges"]))]
        chip_stored = {(a, b) for a, b in stored if a in g.nodes and b in g.nodes}
        chip_file = set()
        for a, b in nir_edges:
            if a in cuts or b in cuts:
                continue
            chip_file.add((a, b))
        if all(a in g.nodes and b in g.nodes for a, b in stored) and {
            (a, b) for a, b in chip_stored if g.nodes[a].op not in HOST_OPS and g.nodes[b].op not in HOST_OPS
        } == chip_file:
            edges = stored
        else:
            repairs.append(f"{Path(where).name}: edges were edited after spikedeploy wrote the file; "
                           "using the file's edges")
            edges = [e for e in nir_edges if e[0] not in cuts and e[1] not in cuts]
    else:
        edges = [e for e in nir_edges if e[0] not in cuts and e[1] not in cuts]
    for a, b in edges:
        try:
            g.connect(a, b)
        except GraphError as e:
            raise FileFormatError(f"{where}: {e}") from e

    if "node_order" in ours:
        order = json.loads(_decode(ours["node_order"]))
        if sorted(order) == sorted(g.nodes):
            g.nodes = {n: g.nodes[n] for n in order}

    _repair_flatten(g, where, repairs)
    try:
        g.validate()
    except SpikeDeployError as e:
        raise type(e)(f"{where}: {e}") from e
    _check_outputs(g, declared_out, where, repairs)
    return g


def _flatten(d: dict, prefix: str, where: str, nodes: dict, edges: list, repairs: list[str], top: bool):
    """Add this (sub)graph's nodes to `nodes` (prefixed), its edges to `edges`.

    Returns (inputs, outputs): for a subgraph, the internal nodes each of its Input nodes feeds and each
    of its Output nodes is fed by, so that the parent can rewire its edges through them.
    """
    local = d["nodes"]
    raw_edges = [(_decode(a), _decode(b)) for a, b in _edge_list(d.get("edges"), where, prefix)]
    raw_edges = _repair_edge_names(raw_edges, local, where, prefix, repairs)

    sub_io: dict[str, tuple[dict, dict]] = {}
    for name, nd in local.items():
        if not isinstance(nd, dict) or "type" not in nd:
            raise FileFormatError(f"{where}: node '{prefix}{name}' has no 'type'")
        if _decode(nd["type"]) == "NIRGraph":
            sub_io[name] = _flatten(nd, f"{prefix}{name}.", where, nodes, edges, repairs, top=False)
        elif top or _decode(nd["type"]) not in IO:
            nodes[f"{prefix}{name}"] = nd

    def resolve(x: str, side: int) -> list[str]:
        """Edge end `x` (a node, a subgraph, or subgraph.port) as flat node names; side 0: inputs, 1: outputs."""
        if x in sub_io:
            return [n for v in sub_io[x][side].values() for n in v]
        base, _, port = x.rpartition(".")
        if base in sub_io and port in sub_io[base][side]:
            return sub_io[base][side][port]
        return [f"{prefix}{x}"]

    def sources(a: str) -> list[str]:
        return resolve(a, 1)

    def targets(b: str) -> list[str]:
        return resolve(b, 0)

    ins: dict[str, list[str]] = {}
    outs: dict[str, list[str]] = {}
    for a, b in raw_edges:
        ta = _decode(local[a]["type"]) if a in local else None
        tb = _decode(local[b]["type"]) if b in local else None
        if not top and ta == "Input":
            if tb == "Output":
                raise UnsupportedError(f"{where}: subgraph '{prefix[:-1]}' connects its input '{a}' straight "
                                       f"to its output '{b}'; remove the subgraph")
            ins.setdefault(a, []).extend(targets(b))
            continue
        if not top and tb == "Output":
            outs.setdefault(b, []).extend(sources(a))
            continue
        for s in sources(a):
            for t in targets(b):
                if (s, t) not in edges:
                    edges.append((s, t))
    return ins, outs


def _edge_list(e: Any, where: str, prefix: str) -> list[tuple[Any, Any]]:
    if e is None:
        return []
    arr = np.asarray(e, dtype=object)
    if arr.size == 0:
        return []
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise FileFormatError(f"{where}: edges of graph '{prefix[:-1] or '(top)'}' have shape {list(arr.shape)}, "
                              "expected (n, 2)")
    out = []
    for a, b in arr.tolist():
        try:
            a, b = (x.decode("utf8") if isinstance(x, bytes) else x for x in (a, b))
        except UnicodeDecodeError:
            raise FileFormatError(f"{where}: an edge of graph '{prefix[:-1] or '(top)'}' names a node in bytes that "
                                  "are not UTF-8; the file is damaged") from None
        if not (isinstance(a, str) and isinstance(b, str)):
            raise FileFormatError(f"{where}: edge ({a!r:.30}, {b!r:.30}) of graph '{prefix[:-1] or '(top)'}' does "
                                  "not name two nodes")
        out.append((a, b))
    return out


def _repair_edge_names(edges, local: dict, where: str, prefix: str, repairs: list[str]):
    """snnTorch's subgraph export names the inner node 'lif1' but its edges say 'lif' (nir.read rejects it).

    An unknown name is repaired when exactly one node of the same graph is named by no edge and one name
    starts with the other; anything else is an error naming the edge.
    """
    names = set(local)
    used = {x for e in edges for x in e}
    unknown = sorted(x for x in used if x not in names and x.rpartition(".")[0] not in names)
    if not unknown:
        return edges
    unused = sorted(names - used)
    mapping = {}
    for u in unknown:
        cands = [n for n in unused if n.startswith(u) or u.startswith(n)]
        if len(cands) != 1 or cands[0] in mapping.values():
            where_g = f"subgraph '{prefix[:-1]}'" if prefix else "the graph"
            raise FileFormatError(
                f"{where}: an edge in {where_g} names node '{u}', which does not exist "
                f"(nodes: {', '.join(sorted(names))}); fix the edges"
            )
        mapping[u] = cands[0]
        repairs.append(
            f"{Path(where).name}: edges of {'subgraph ' + repr(prefix[:-1]) if prefix else 'the graph'} name "
            f"node '{u}', which does not exist; connected to '{cands[0]}' instead (nir.read rejects this file)"
        )
    return [(mapping.get(a, a), mapping.get(b, b)) for a, b in edges]


def _dict_to_node(name: str, nd: dict, where: str) -> tuple[Node, Any]:
    t = _decode(nd["type"])
    if t not in NIR_TYPES:
        hint = " (a host-side op; spikedeploy writes those into metadata, not as NIR nodes)" if t in HOST_OPS else ""
        raise GraphError(f"{where}: node '{name}': unknown NIR node type '{t}'{hint}; "
                         f"NIR 1.0 knows {', '.join(NIR_TYPES)}")
    spec = OPS[t]
    md = _md_to_plain(nd.get("metadata"))
    ours = _md_to_plain(md.get(META_KEY))
    rename = _FIELD_RENAME.get(t, {})
    params: dict[str, Any] = {}
    declared = None
    if t == "Output":
        declared = nd.get("shape")
    for k in spec.required + tuple(spec.optional):
        src = next((f for f, g in rename.items() if g == k), k)
        if src in nd:
            params[k] = nd[src]
        elif k in spec.required:
            raise FileFormatError(f"{where}: node '{name}' ({t}) lacks its '{src}' parameter")
    if t in RESETTING and "v_reset" not in nd:
        params["v_reset"] = np.zeros_like(np.asarray(nd["v_threshold"]))  # as nir.read does
    for k in ("padding", "stride", "dilation", "groups", "kernel_size"):
        if isinstance(params.get(k), str):
            params[k] = _padding_number(name, t, params, where) if k == "padding" else None
            if params[k] is None:
                raise FileFormatError(f"{where}: node '{name}' ({t}): '{k}' is the string '{nd[k]}'")
    for k, v in list(params.items()):
        if isinstance(v, np.ndarray) and v.dtype == object or isinstance(v, str | bytes):
            raise FileFormatError(f"{where}: node '{name}' ({t}): parameter '{k}' is not numeric")
    for k in json.loads(_decode(ours["none"])) if "none" in ours else ():
        params[k] = None
    for k, shp in (json.loads(_decode(ours["shapes"])).items() if "shapes" in ours else ()):
        if params.get(k) is not None:
            params[k] = _unbroadcast(np.asarray(params[k]), tuple(shp))
    node = Node(name, t, params=params)
    try:
        check_node_params(name, node)
    except SpikeDeployError as e:
        raise type(e)(f"{where}: {e}") from None
    # Node() turns numbers into arrays; keep 0-d numpy values as 0-d arrays of the same dtype
    if "placement" in ours:
        node.placement = str(_decode(ours["placement"]))
    if "modality" in ours:
        node.modality = str(_decode(ours["modality"]))
    if "meta" in ours:
        node.meta = loads_exact(_decode(ours["meta"]))
    foreign = {k: v for k, v in md.items() if k != META_KEY}
    if foreign:
        node.meta["nir_metadata"] = foreign
    return node, declared


def _padding_number(name: str, t: str, params: dict, where: str):
    """NIR allows padding='same'/'valid'; the Graph holds numbers (symmetric padding only)."""
    mode = params["padding"]
    nd = 1 if t == "Conv1d" else 2
    if mode == "valid":
        return np.zeros(nd, dtype=np.int64) if nd == 2 else np.int64(0)
    if mode != "same":
        raise FileFormatError(f"{where}: node '{name}' ({t}): padding '{mode}' is not 'same', 'valid' or a number")
    w = np.asarray(params["weight"])
    k = np.asarray(w.shape[2:], dtype=np.int64)
    dil = np.resize(np.atleast_1d(np.asarray(params.get("dilation", 1), dtype=np.int64)), nd)
    st = np.resize(np.atleast_1d(np.asarray(params.get("stride", 1), dtype=np.int64)), nd)
    total = dil * (k - 1)
    if np.any(st != 1) or np.any(total % 2):
        raise UnsupportedError(
            f"{where}: node '{name}' ({t}): padding='same' with kernel {k.tolist()}, dilation {dil.tolist()}, "
            f"stride {st.tolist()} needs asymmetric padding, which the graph cannot hold; re-export with numeric padding"
        )
    pad = total // 2
    return pad if nd == 2 else pad[0]


def _unbroadcast(v: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if v.shape == shape:
        return v
    if v.size == int(np.prod(shape)):
        return v.reshape(shape)
    idx = []
    lead = v.ndim - len(shape)
    for i in range(v.ndim):
        j = i - lead
        idx.append(slice(0, 1) if j < 0 or shape[j] == 1 else slice(None))
    return np.ascontiguousarray(v[tuple(idx)]).reshape(shape)


def _host_node(name: str, entry: dict, where: str) -> Node:
    op = _decode(entry.get("op"))
    if op not in HOST_OPS:
        raise FileFormatError(f"{where}: host node '{name}' in metadata has unknown op '{op}'")
    params = loads_exact(_decode(entry["params"])) if "params" in entry else {}
    node = Node(name, op, params=params, placement=str(_decode(entry.get("placement", "host"))))
    if "modality" in entry:
        node.modality = str(_decode(entry["modality"]))
    if "meta" in entry:
        node.meta = loads_exact(_decode(entry["meta"]))
    return node


def _repair_flatten(g: Graph, where: str, repairs: list[str]) -> None:
    """A Flatten written with PyTorch's batch-inclusive start_dim (1 for "all but batch") breaks the next
    dense layer; NIR's shapes exclude the batch. Repair when start_dim-1 makes exactly the size needed."""
    for name, node in g.nodes.items():
        if node.op != "Flatten" or node.params.get("input_shape") is None:
            continue
        shp = tuple(int(x) for x in np.asarray(node.params["input_shape"]).ravel())
        a = int(node.params["start_dim"])
        b = int(node.params["end_dim"])
        if a <= 0 or b != -1 or len(shp) < 2:
            continue
        succ = [g.nodes[s] for s in g.successors(name)]
        need = {int(s.params["weight"].shape[1]) for s in succ if s.op in DENSE}
        if a == 1 and need == {int(np.prod(shp))}:
            node.params["start_dim"] = np.asarray(a - 1, dtype=np.asarray(node.params["start_dim"]).dtype)
            repairs.append(f"{Path(where).name}: Flatten '{name}' has start_dim={a} counting the batch dimension; "
                           f"NIR shapes exclude it, so start_dim={a - 1} is used")


def _check_outputs(g: Graph, declared: dict[str, Any], where: str, repairs: list[str]) -> None:
    for name, decl in declared.items():
        if decl is None:
            continue
        d = tuple(int(x) for x in np.asarray(decl).ravel())
        got = tuple(g.nodes[name].in_shape or ())
        if d == got:
            continue
        if int(np.prod(d)) == int(np.prod(got)):
            repairs.append(
                f"{Path(where).name}: Output '{name}' declares shape {list(d)} but receives {list(got)}; "
                f"using {list(got)} (nir.read rejects this file)"
            )
        else:
            raise ShapeError(f"{where}: Output '{name}' declares shape {list(d)} but receives {list(got)}")


__all__ = ["from_nir", "to_nir", "read_nir", "write_nir", "dumps_exact", "loads_exact"]
