"""What a lava-dl netx layer's datasets may hold, checked right after the file is read and before any of
it is converted: real finite numbers, decays and thresholds in the ranges Lava's LIF gives them meaning,
1-D positive shapes, non-negative delays (lava-fixed-point.md, "netx format" and "LIF")."""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import FileFormatError

# iDecay and vDecay are 12-bit decay constants: 0 (iDecay 0 is du = -1, no current memory) to 4096 (no
# memory); vThMant is a threshold mantissa, never negative, and above 2**17 a neuron can no longer spike
# (lava-fixed-point.md), so 2**24 leaves room for netx's "never spikes" value 1 << 17.
_NEURON_RANGES = {"iDecay": (0, 4096), "vDecay": (0, 4096), "vThMant": (0, 2**24), "refDelay": (0, 2**16)}
_TEXT_KEYS = {"type"}
# datasets spikedeploy reads as numbers (others, such as an SDNN neuron's 'activation', may be text)
_NUMERIC_KEYS = {"weight", "weight_rec", "bias", "delay", "shape", "stride", "padding", "dilation", "groups",
                 "iDecay", "vDecay", "vThMant", "refDelay", "inFeatures", "outFeatures"}


def check_netx_layers(layers: list[dict], path) -> None:
    for i, lc in enumerate(layers):
        t = np.asarray(lc.get("type", b"")).ravel()
        kind = t[0].decode("ascii", "replace") if t.size and isinstance(t[0], bytes) else str(t[0] if t.size else "")
        _check_group(lc, path, i, "", kind)


def _check_group(d: dict, path, i: int, prefix: str, kind: str) -> None:
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            _check_group(v, path, i, f"{name}/", kind)
            continue
        if k in _TEXT_KEYS:
            continue
        a = np.asarray(v)
        where = f"{path}: layer {i} ('{name}')"
        if a.dtype.kind in "SUO" and k not in _NUMERIC_KEYS:
            continue
        if a.dtype.kind not in "biuf":
            raise FileFormatError(f"{where}: dtype {a.dtype} is not a real number type; the file is damaged")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise FileFormatError(f"{where}: holds NaN or infinite values; netx parameters must be finite")
        if k in _NEURON_RANGES:
            lo, hi = _NEURON_RANGES[k]
            # decays may be one per neuron (slayer exports them so when its neurons do not share parameters)
            per_neuron = k in ("iDecay", "vDecay") and a.ndim == 1 and a.size >= 1
            if (a.size != 1 and not per_neuron) or a.ndim > 1 or np.any(a < lo) or np.any(a > hi) \
                    or np.any(a != np.round(a)):
                what = "integers (one, or one per neuron)" if k in ("iDecay", "vDecay") else "one integer"
                raise FileFormatError(f"{where}: is {a.ravel()[:4].tolist()}; expected {what} in {lo}..{hi}")
        elif k == "shape":
            if a.ndim != 1 or a.size == 0 or np.any(a < 1) or np.any(a != np.round(a)):
                raise FileFormatError(f"{where}: is {a.tolist()}; expected a list of positive integers")
        elif k == "delay":
            if np.any(a < 0):
                raise FileFormatError(f"{where}: holds negative delays (min {a.min()}); delays are >= 0 steps")
            if a.ndim > 2:
                raise FileFormatError(f"{where}: has {a.ndim} dimensions; a delay is a scalar, a vector or (out, in)")
        elif k in ("weight", "weight_rec", "bias") and a.size == 0:
            raise FileFormatError(f"{where}: is an empty array")
        if k in ("weight", "weight_rec") and kind != "input" and a.ndim not in (1, 2, 4, 5):
            raise FileFormatError(f"{where}: has shape {list(a.shape)}; a dense weight is (out, in), a conv weight "
                                  "(out, in, kH, kW[, kT])")
        if k == "weight" and kind in ("dense", "dense_rec") and "shape" in d:
            n = int(np.prod(np.asarray(d["shape"]), dtype=np.float64))
            if n < 1 or a.size < n or a.size % n:
                raise FileFormatError(f"{where}: holds {a.size} values, which is not a whole number of rows for the "
                                      f"layer's {n} neurons")
