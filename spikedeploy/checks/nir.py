"""What a NIR file's datasets may hold, checked as each is read: NIR has no complex-valued field, and
every declared shape (an Input's or Output's `shape`, a node's `input_type` / `output_type`) is a list of
positive whole numbers, wherever it sits (nested subgraphs included, though the reader flattens them)."""

from __future__ import annotations

import numpy as np

from spikedeploy.checks.limits import MAX_LAYER_NEURONS
from spikedeploy.errors import FileFormatError

_SHAPE_KEYS = {"shape"}
_SHAPE_GROUPS = {"input_type", "output_type"}


def check_nir_dataset(path, name: str, value) -> None:
    """`name` is the dataset's full HDF5 path, `value` what it holds."""
    parts = name.strip("/").split("/")
    is_shape = parts[-1] in _SHAPE_KEYS or len(parts) > 1 and parts[-2] in _SHAPE_GROUPS
    if isinstance(value, (str, bytes)) and not is_shape:
        return
    a = np.asarray(value)
    if a.dtype.kind == "c":
        raise FileFormatError(f"{path}: '{name}' holds complex numbers; NIR parameters are real")
    if is_shape:
        if a.dtype.kind not in "biuf" or a.ndim > 1:
            raise FileFormatError(f"{path}: shape '{name}' is not a list of numbers")
        if a.dtype.kind == "f" and (not np.isfinite(a).all() or np.any(a != np.round(a))):
            raise FileFormatError(f"{path}: shape '{name}' is {a.tolist()}; expected whole numbers")
        if parts[-1] == "shape" and a.size == 0:
            raise FileFormatError(f"{path}: shape '{name}' is empty; give the number of values, e.g. [784]")
        if a.size and a.min() < 1:
            raise FileFormatError(f"{path}: shape '{name}' is {a.tolist()}; every size must be >= 1")
        if a.size and float(np.prod(a.astype(np.float64))) > MAX_LAYER_NEURONS:
            raise FileFormatError(f"{path}: shape '{name}' is {a.tolist()}, more than the {MAX_LAYER_NEURONS:,} "
                                  "elements a layer may hold (spikedeploy.checks.limits.MAX_LAYER_NEURONS)")
