"""What `spikedeploy inspect` shows: a graph file's nodes, counts and chip/host split, as a dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spikedeploy.graph.ir import Graph


def describe(graph: Graph, *, fmt: str, path: str | None = None) -> dict[str, Any]:
    graph.validate()
    st = graph.stats()
    order, _ = graph.order()  # evaluation order reads better than file order (HDF5 sorts names)
    st["nodes"] = {n: st["nodes"][n] for n in order}
    return {
        "file": path,
        "format": fmt,
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "dt": graph.dt,
        "reset": graph.reset,
        "nodes": st["nodes"],
        "total": st["total"],
        "chip_nodes": [n for n, v in graph.nodes.items() if v.placement == "chip"],
        "host_nodes": [n for n, v in graph.nodes.items() if v.placement == "host"],
        "repairs": list(graph.meta.get("repairs", [])),
        "provenance": graph.meta.get("provenance"),
    }


def inspect_file(path: str | Path, *, netx_layers: int | None = None) -> dict[str, Any]:
    from spikedeploy.graph.qgraph import QGraph
    from spikedeploy.io.graph_files import load_graph

    obj = load_graph(path, netx_layers=netx_layers)
    if isinstance(obj, QGraph):
        info = describe(obj.graph, fmt=obj.meta.get("format", f"quantized ({obj.target})"), path=str(path))
        info["target"] = obj.target
        return info
    return describe(obj, fmt=obj.meta.get("format", "nir"), path=str(path))
