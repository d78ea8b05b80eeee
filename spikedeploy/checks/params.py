"""The types and sizes a node's parameters may have, checked once when a graph is validated, so that no
backend meets a complex weight, a string threshold or a bias of the wrong length.

Graph.validate calls `check_node_params` for every node, whichever file the graph came from.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import ParameterError
from spikedeploy.graph.ops import BIASED

# integer structure parameters and the least value each may take
_STRUCTURE = {"stride": 1, "dilation": 1, "groups": 1, "kernel_size": 1, "padding": 0, "shape": 1,
              "input_shape": 1, "out_shape": 1, "start_dim": None, "end_dim": None}
_MAX_STRUCTURE = 2**24
_SCALARS = {"groups", "start_dim", "end_dim"}
_MAX_NDIM = 4  # Conv2d weights (out, in, kH, kW) are the largest rank a node holds


def check_node_params(name: str, node) -> None:
    """Refuse a parameter that is not a finite real number or array, a structure parameter that is not a
    small integer, or a bias whose length differs from the layer's outputs."""
    where = f"node '{name}' ({node.op})"
    for k, v in node.params.items():
        if v is None or node.spec.family == "host":
            continue
        if isinstance(v, (str, bytes)):
            raise ParameterError(f"{where}: parameter '{k}' is the string {v[:20]!r}; expected a number or an array")
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise ParameterError(f"{where}: parameter '{k}' has dtype {a.dtype}; expected real numbers "
                                 "(complex, string and object values are refused)")
        if a.ndim > _MAX_NDIM:
            raise ParameterError(f"{where}: parameter '{k}' has {a.ndim} dimensions {list(a.shape)}; at most "
                                 f"{_MAX_NDIM} are meaningful")
        if k in _STRUCTURE:
            _check_structure(where, k, a, _STRUCTURE[k])
        elif a.size == 0 and k != "bias":
            raise ParameterError(f"{where}: parameter '{k}' is an empty array")
    _check_bias(where, node)


def _check_structure(where: str, k: str, a: np.ndarray, least: int | None) -> None:
    if a.ndim > 1 or a.size == 0:
        raise ParameterError(f"{where}: '{k}' has shape {list(a.shape)}; expected a number or a list of numbers")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or np.any(a != np.round(a)):
            raise ParameterError(f"{where}: '{k}' is {a.tolist()}; expected whole numbers")
    if k in _SCALARS and a.ndim != 0:
        raise ParameterError(f"{where}: '{k}' is {a.tolist()}; expected a single number")
    if least is not None and a.size and (a.min() < least or a.max() > _MAX_STRUCTURE):
        raise ParameterError(f"{where}: '{k}' is {a.tolist()}; each value must lie in {least}..{_MAX_STRUCTURE:,}")


def _check_bias(where: str, node) -> None:
    b, w = node.params.get("bias"), node.params.get("weight")
    if b is None or w is None or node.op not in BIASED:
        return
    b, w = np.asarray(b), np.asarray(w)
    if w.ndim < 2:
        return
    if node.op != "Affine" and b.size != w.shape[0]:  # torch's conv takes exactly one bias per channel
        raise ParameterError(f"{where}: bias has {b.size} values but the weight {list(w.shape)} gives "
                             f"{w.shape[0]} channels; they must agree")
    if b.ndim == 0 or b.size == 1:
        return
    if node.op == "Affine" and b.size != w.shape[0]:
        raise ParameterError(f"{where}: bias has {b.size} values but the weight {list(w.shape)} gives {w.shape[0]} "
                             "outputs; they must agree")
    if node.op != "Affine" and b.shape[0] != w.shape[0]:
        raise ParameterError(f"{where}: bias has {b.shape[0]} channels but the weight {list(w.shape)} gives "
                             f"{w.shape[0]}; they must agree")
