"""Validation of the files that accompany a graph: run files (`simulate -o`) and placement files
(`partition -o`). Each is checked on its own when read (types, shapes, values) and against the graph it
is given with, so a run or placement made for another network is refused instead of priced."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spikedeploy.errors import FileFormatError


def validate_run(run, path) -> None:
    """A run file's own consistency: steps and batch positive integers, spike counts [T, B] of finite,
    non-negative real numbers, outputs real and finite with T and B leading."""
    for key in ("steps", "batch"):
        v = getattr(run, key)
        if not 1 <= v <= 10**9:
            raise FileFormatError(f"{path}: run header '{key}' is {v}; expected a positive integer")
    if not isinstance(run.backend, str):
        raise FileFormatError(f"{path}: run header 'backend' is {run.backend!r}; expected a string")
    if not isinstance(run.meta, dict):
        raise FileFormatError(f"{path}: run header 'meta' is {type(run.meta).__name__}; expected an object")
    for node, c in run.counts.items():
        _real_finite(path, f"spike counts of '{node}'", c)
        if c.shape != (run.steps, run.batch):
            raise FileFormatError(f"{path}: spike counts of '{node}' have shape {list(c.shape)}; the header says "
                                  f"[{run.steps}, {run.batch}] (steps, batch)")
        if c.size and c.min() < 0:
            raise FileFormatError(f"{path}: spike counts of '{node}' hold a negative value ({c.min()}); counts are >= 0")
    for name, y in run.outputs.items():
        _real_finite(path, f"output '{name}'", y)
        if y.ndim < 2 or y.shape[:2] != (run.steps, run.batch):
            raise FileFormatError(f"{path}: output '{name}' has shape {list(y.shape)}; expected "
                                  f"[{run.steps}, {run.batch}, ...] (steps, batch, ...)")


def check_run_matches(run, graph, path, graph_file) -> None:
    """The run was made for this graph: every counted node and output exists in it with the same size."""
    graph.infer_shapes()
    unknown = [n for n in [*run.counts, *run.outputs] if n not in graph.nodes]
    if unknown:
        raise FileFormatError(f"{path}: run names node(s) {sorted(set(unknown))[:5]} that {graph_file} does not have; "
                              "it was made for another graph, so simulate this one")
    for name, y in run.outputs.items():
        want = math.prod(graph.nodes[name].out_shape or ())
        if int(np.prod(y.shape[2:])) != want:
            raise FileFormatError(f"{path}: output '{name}' has {int(np.prod(y.shape[2:]))} values per step, but "
                                  f"{graph_file} gives {want}; the run was made for another graph")
    for name, c in run.counts.items():
        size = math.prod(graph.nodes[name].out_shape or ())
        if c.size and c.max() > size:
            raise FileFormatError(f"{path}: '{name}' spiked {c.max()} times in one step, but it has only {size} "
                                  f"neurons in {graph_file}; the run was made for another graph")


def check_placement_file(saved: Any, path, graph, graph_file) -> dict:
    """The saved placement's options, once its structure and node names are checked against the graph."""
    if not isinstance(saved, dict) or not isinstance(saved.get("options"), dict):
        raise FileFormatError(f"{path}: not a placement file from `spikedeploy partition -o` (no 'options' object)")
    opts = saved["options"]
    for key in ("chips", "max_cores"):
        v = opts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise FileFormatError(f"{path}: options.{key} is {v!r}; expected a positive integer or null")
    if not isinstance(opts.get("allocator", "greedy"), str):
        raise FileFormatError(f"{path}: options.allocator is {opts.get('allocator')!r}; expected a name")
    cores = saved.get("cores_used")
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 0:
        raise FileFormatError(f"{path}: cores_used is {cores!r}; expected a non-negative integer")
    if not isinstance(saved.get("target"), str) or not saved["target"]:
        raise FileFormatError(f"{path}: target is {saved.get('target')!r}; expected a target name")
    layers = saved.get("layers")
    if not isinstance(layers, dict):
        raise FileFormatError(f"{path}: 'layers' is missing or not an object; write it again with partition -o")
    unknown = sorted(k for k in layers if k not in graph.nodes)
    if unknown:
        raise FileFormatError(f"{path}: places layer(s) {unknown[:5]} that {graph_file} does not have; it was made "
                              "for another graph, so run partition on this one")
    graph.infer_shapes()
    for name, lay in layers.items():
        if not isinstance(lay, dict):
            raise FileFormatError(f"{path}: layer '{name}' is {lay!r:.40}, not an object; write it again with partition -o")
        n = lay.get("neurons")
        have = math.prod(graph.nodes[name].out_shape or ())
        if n != have:
            raise FileFormatError(f"{path}: layer '{name}' has {n!r} neurons in the placement but {have} in "
                                  f"{graph_file}; it was made for another graph, so run partition on this one")
    return opts


def _real_finite(path, what: str, a: np.ndarray) -> None:
    if a.dtype.kind not in "biuf":
        raise FileFormatError(f"{path}: {what} have dtype {a.dtype}; expected real numbers")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise FileFormatError(f"{path}: {what} hold NaN or infinite values")
