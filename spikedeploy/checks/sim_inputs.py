"""Validation of simulation and calibration arrays: what a .npy file must hold before a backend sees it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from spikedeploy.errors import InputError


def check_array_file(load, path: Path, where: str) -> np.ndarray:
    """`load(path, allow_pickle=False)` of a .npy file, with every way a file can fail as one InputError."""
    if path.stat().st_size == 0:
        raise InputError(f"{where}: {path} is empty; expected a .npy array [T, B, ...] (numpy.save)")
    try:
        a = load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise InputError(f"{where}: {path} is not a readable .npy array file ({_first_line(e)}); "
                         "write it with numpy.save") from None
    if not isinstance(a, np.ndarray):  # an .npz archive
        a.close()
        raise InputError(f"{where}: {path} is an .npz archive, not a single .npy array; save one array per input")
    return a


def check_input_values(name: str, a: np.ndarray) -> None:
    """A simulation input must be real numbers (bool, int or float), finite, with T >= 1 and B >= 1."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"input '{name}': dtype {a.dtype} is not a real number type; give bool, int or float "
                         "spikes or currents")
    if a.ndim >= 2 and (a.shape[0] == 0 or a.shape[1] == 0):
        raise InputError(f"input '{name}': shape {list(a.shape)} has no time steps or no samples; "
                         "expected [T, B, ...] with T, B >= 1")
    if a.dtype.kind == "f" and not all(np.isfinite(b).all() for b in blocks(a)):
        bad = sum(int((~np.isfinite(b)).sum()) for b in blocks(a))
        raise InputError(f"input '{name}': {bad} value(s) are NaN or infinite; inputs must be finite")


def blocks(a: np.ndarray, size: int = 1 << 18):
    """Views of `a` along its first axis, about `size` values each: a check over them needs temporaries of
    one block, not of the whole array (and stays in the cache)."""
    if a.ndim == 0:
        yield a
        return
    step = max(1, size // max(1, a[:1].size))
    for i in range(0, a.shape[0], step):
        yield a[i:i + step]


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]
