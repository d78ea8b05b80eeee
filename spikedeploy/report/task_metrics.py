"""Task metrics for sweeps and comparisons: a small registry, so that task-specific scoring lives with its task.

A metric turns a Run's outputs ({output name: [T, B, ...]}) into one number, higher is better. The core knows
one metric, `accuracy` (labels: [B] class indices; the prediction is the argmax over the first output summed
over time, as `quantize_fidelity.fidelity` scores it). A task registers its own with `register_metric`, e.g.
examples/retrieval/metric.py registers `retrieval` (image→text R@1). `get_metric(name)` resolves:
a registered name; a bundled plug-in (BUNDLED: a name -> the module that registers it, imported on first use);
or a module path `pkg.mod` whose import registers a metric of that name or which defines METRIC.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spikedeploy.errors import SpikeDeployError

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TaskMetric:
    name: str
    label: str  # how a table or an axis names it, e.g. "image→text R@1"
    # make(graph, labels) -> score(outputs); labels is None when needs_labels is False
    make: Callable[[object, np.ndarray | None], Callable[[Outputs], float]]
    needs_labels: bool = True


_REGISTERED: dict[str, TaskMetric] = {}
# the repository's bundled tasks: importing the module registers the metric (run from the repository root)
BUNDLED = {"retrieval": "examples.retrieval.metric"}


def register_metric(metric: TaskMetric) -> TaskMetric:
    if not isinstance(metric, TaskMetric):
        raise SpikeDeployError(f"register_metric needs a TaskMetric, got {type(metric).__name__}")
    _REGISTERED[metric.name] = metric
    return metric


def metric_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys((*_REGISTERED, *BUNDLED)))


def _import(module: str, name: str):
    try:
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError:
            # as `python -m` does: modules of the current directory (examples/ in a checkout)
            if os.getcwd() in sys.path:
                raise
            sys.path.insert(0, os.getcwd())
            return importlib.import_module(module)
    except ImportError as e:
        raise SpikeDeployError(f"metric '{name}': cannot import module '{module}' ({e}); run from the repository "
                               "root, or give an importable module path that registers the metric") from e


def get_metric(name: str) -> TaskMetric:
    """A metric by name (see the module doc); unknown names fail in one line listing the known ones."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    module = BUNDLED.get(name) or (name if "." in name else None)
    if module is None:
        raise SpikeDeployError(f"unknown metric '{name}'; known: {', '.join(metric_names())}, or a module path "
                               "'pkg.mod' that registers one (spikedeploy.report.task_metrics.register_metric)")
    mod = _import(module, name)
    if name in _REGISTERED:
        return _REGISTERED[name]
    m = getattr(mod, "METRIC", None)
    if isinstance(m, TaskMetric):
        return register_metric(m)
    raise SpikeDeployError(f"metric '{name}': module '{module}' registers no metric '{name}' and defines no METRIC")


def _accuracy(graph, labels):
    out = graph.outputs[0]
    y = np.asarray(labels).reshape(-1)

    def score(outputs: Outputs) -> float:
        o = np.asarray(outputs[out])
        pred = o.sum(0).reshape(o.shape[1], -1).argmax(-1)
        return float((pred == y).mean())

    return score


register_metric(TaskMetric("accuracy", "accuracy", _accuracy))
