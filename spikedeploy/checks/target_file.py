"""What a chip file (`--target chip.toml`, a parametric fixedpoint target) may hold, checked right after
it is parsed: every section a table, every number of the right type, finite and in a sane range."""

from __future__ import annotations

import math

from spikedeploy.errors import FileFormatError

# [numeric]: (least, greatest) of each integer field; bools and the rounding name are checked by type
_NUMERIC_INT = {"weight_bits": (1, 32), "weight_exp_min": (-32, 32), "weight_exp_max": (-32, 32),
                "state_bits": (2, 64), "vth_bits": (1, 64), "decay_bits": (1, 32), "bias_mant_bits": (1, 64),
                "bias_exp_min": (-32, 32), "bias_exp_max": (-32, 32), "act_shift": (0, 32),
                "conv_acc_bits": (2, 64), "max_delay": (0, 2**16)}
_NUMERIC_BOOL = {"mixed_sign_drops_lsb"}
_ROUNDING = {"trunc", "nearest"}
_MAX_COUNT = 2**40  # per-core resources: far beyond any chip's
_MAX_CHIPS = 10**6  # Intel's Hala Point holds 1,152 Loihi 2 chips
_MAX_CONSTANT = 1e6  # joules, seconds or watts per event or step: no real constant comes near


def check_chip_data(data: dict, path) -> None:
    where = f"target file '{path}'"
    for section in ("numeric", "core", "energy", "timing", "host"):
        if section in data and not isinstance(data[section], dict):
            raise FileFormatError(f"{where}: [{section}] must be a table, got {data[section]!r:.40}")
    for key in ("cores_per_chip", "max_chips"):
        if key in data:
            _int(where, "top", key, data[key], 1, _MAX_CHIPS if key == "max_chips" else _MAX_COUNT)
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise FileFormatError(f"{where}: {key} must be a string, got {data[key]!r:.40}")
    for k, v in data.get("numeric", {}).items():
        if k in _NUMERIC_INT:
            _int(where, "numeric", k, v, *_NUMERIC_INT[k])
        elif k in _NUMERIC_BOOL and not isinstance(v, bool):
            raise FileFormatError(f"{where}: [numeric] {k} must be true or false, got {v!r:.40}")
        elif k == "rounding" and v not in _ROUNDING:
            raise FileFormatError(f"{where}: [numeric] rounding must be one of {sorted(_ROUNDING)}, got {v!r:.40}")
    num = data.get("numeric", {})
    for lo, hi in (("weight_exp_min", "weight_exp_max"), ("bias_exp_min", "bias_exp_max")):
        if lo in num and hi in num and num[lo] > num[hi]:
            raise FileFormatError(f"{where}: [numeric] {lo} ({num[lo]}) is above {hi} ({num[hi]})")
    for k, v in data.get("core", {}).items():
        if k == "conv_weight_sharing":
            if not isinstance(v, bool):
                raise FileFormatError(f"{where}: [core] conv_weight_sharing must be true or false, got {v!r:.40}")
        else:
            _int(where, "core", k, v, 1, _MAX_COUNT)
    for section in ("energy", "timing", "host"):
        for k, v in data.get(section, {}).items():
            value = v.get("value") if isinstance(v, dict) else v
            if isinstance(v, dict) and not isinstance(v.get("unit", ""), str) or \
                    isinstance(v, dict) and not isinstance(v.get("source", ""), str):
                raise FileFormatError(f"{where}: [{section}] {k}: unit and source must be strings")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 <= value <= _MAX_CONSTANT:
                raise FileFormatError(f"{where}: [{section}] {k} must be a finite number in 0..{_MAX_CONSTANT:g}, "
                                      f"got {value!r:.40}")


def _int(where: str, section: str, key: str, v, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise FileFormatError(f"{where}: [{section}] {key} must be an integer in {lo}..{hi:,}, got {v!r:.40}")
