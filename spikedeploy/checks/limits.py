"""Sizes a file may declare, checked before memory is allocated for them.

A 16 KB netx file whose input layer says `shape = [1e9]` would otherwise make the reader allocate
gigabytes of per-neuron parameters before any check runs (and a compressed HDF5 dataset of zeros can
unpack to gigabytes). These limits are far above any network a neuromorphic system holds today, so they
only stop files whose sizes are nonsense.
"""

from __future__ import annotations

import math

from spikedeploy.errors import FileFormatError, ShapeError

# Estimate, not a hardware figure: 16 Loihi 2 chips' worth of neurons (1,048,576 each, Intel's Loihi 2
# brief; see ../shared/notes/hardware-and-anchors.md) in a single layer; each neuron costs the readers
# about 50 bytes of float64 parameters, so a layer at the limit takes under 1 GiB.
MAX_LAYER_NEURONS = 16 * 2**20
# Estimate: one array stored in a graph, run or quantized file (a 32k x 32k float16 weight matrix is 2 GiB)
MAX_ARRAY_BYTES = 2 * 2**30


def check_shape(shape, where: str, empty_ok: bool = False) -> tuple[int, ...]:
    """A node's declared shape: every size a positive integer, the element count within MAX_LAYER_NEURONS
    (an empty shape only where `empty_ok`: an Input must say how many values it takes)."""
    try:
        dims = tuple(int(x) for x in shape)
    except (TypeError, ValueError, OverflowError):
        raise ShapeError(f"{where}: shape {shape!r} is not a list of integers") from None
    if not dims and not empty_ok:
        raise ShapeError(f"{where}: shape is empty; give the number of inputs, e.g. [784]")
    if any(d < 1 for d in dims):
        raise ShapeError(f"{where}: shape {list(dims)} has a size below 1; every dimension must be >= 1")
    n = math.prod(dims)
    if n > MAX_LAYER_NEURONS:
        raise ShapeError(f"{where}: shape {list(dims)} declares {n:,} elements, more than the {MAX_LAYER_NEURONS:,} "
                         "one layer may hold (spikedeploy.checks.limits.MAX_LAYER_NEURONS); the file's shape is wrong")
    return dims


def check_stored_array(path, name: str, shape, itemsize: int) -> None:
    """An array a file declares (HDF5 dataset, .npz member), before it is read into memory."""
    try:
        n = math.prod(int(x) for x in shape) * int(itemsize)
    except (TypeError, ValueError, OverflowError):
        raise FileFormatError(f"{path}: array '{name}' has an unreadable shape {shape!r}") from None
    if n > MAX_ARRAY_BYTES:
        raise FileFormatError(f"{path}: array '{name}' of shape {list(shape)} would take {n / 2**30:,.1f} GiB in memory, "
                              f"more than the {MAX_ARRAY_BYTES / 2**30:.0f} GiB limit "
                              "(spikedeploy.checks.limits.MAX_ARRAY_BYTES); the file is damaged or not a network")
