"""A parametric fixed-point neuromorphic target for feasibility studies of chips that do not exist yet.

Every number can be set from a TOML or JSON file; what the file leaves out keeps the default below. The
defaults are Loihi-1-sized (nengo-loihi limits, Davies et al. 2018 energies) and are all marked as
estimates, because they describe no real "fixedpoint" chip. Example `chip.toml`:

    name = "edge-chip"
    description = "4-bit weights, 256 neurons per core"
    cores_per_chip = 64
    max_chips = 4

    [numeric]               # any NumericFormat field
    weight_bits = 4

    [core]                  # per-core limits
    neurons = 256
    synapse_memory_bits = 262144
    input_axons = 1024
    output_axons = 1024
    conv_weight_sharing = true

    [energy]                # joules per event; static power in watts
    synop = 5e-12
    static_power_chip = { value = 0.01, source = "vendor datasheet rev 2" }

    [timing]                # seconds per event
    barrier = 2e-7

    [host]
    mac = 4.6e-12

    [core_sources]          # where each [core] figure comes from (default: "<file>: user value")
    neurons = "vendor datasheet rev 2"
    estimate = false

    [capabilities]          # what the cores cannot compute at all (default: no restriction)
    neuron_ops = ["IF", "LIF"]
    synapse_ops = ["Conv2d", "SumPool2d"]
    recurrent = false
    max_fan_in = 256
    max_fan_out = 64
    graded_spikes = false

    simulators = ["emulator"]
    programmable_neurons = false

A value in [energy], [timing], [host] and [capabilities] is a plain value (its source becomes
"<file>: user value") or a table {value, source, estimate}. [core] holds plain values; their sources go in
[core_sources] (`neurons = "Davies 2018: 1,024 per core"`), where estimate = true marks the limits as
estimates. The built-in chips without a module of their own (truenorth, spinnaker2, xylo, speck) are such
files in this folder; what they leave out keeps the defaults below, marked as borrowed Loihi 1 figures.
Use it with `get_target("fixedpoint:chip.toml")` or `load_fixedpoint_target("chip.toml")`.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

from spikedeploy.errors import FileFormatError, SpikeDeployError
from spikedeploy.targets.loihi1 import SPEC as LOIHI1
from spikedeploy.targets.spec import HOST_45NM, Capabilities, NumericFormat, TargetSpec, Value, borrowed

_NL = "default (Loihi 1 limit, nengo-loihi block.py)"

DEFAULT_ENERGY = borrowed(LOIHI1.energy, "default (Loihi 1 figure)")
DEFAULT_TIMING = borrowed(LOIHI1.timing, "default (Loihi 1 figure)")
DEFAULT_HOST = dict(HOST_45NM)

SPEC = TargetSpec(
    name="fixedpoint",
    description="Parametric fixed-point target (defaults: Loihi-1-sized cores; load a chip file to change them)",
    numeric=NumericFormat(),
    # Loihi 1's limits, marked as defaults of this target rather than measured figures for it
    core=replace(LOIHI1.core, sources={k: _NL for k in ("neurons", "synapse_memory_bits", "input_axons",
                                                        "output_axons")}, estimate=True),
    cores_per_chip=128,
    max_chips=32,
    energy=dict(DEFAULT_ENERGY),
    timing=dict(DEFAULT_TIMING),
    host=dict(DEFAULT_HOST),
    simulators=("emulator",),
)

_TOP = {"name", "description", "cores_per_chip", "max_chips", "numeric", "core", "core_sources", "energy", "timing",
        "host", "capabilities", "simulators", "programmable_neurons"}
_CORE_KEYS = ("neurons", "synapse_memory_bits", "input_axons", "output_axons", "conv_weight_sharing")
_UNITS = {"energy": "J", "timing": "s", "host": None}


def load_fixedpoint_target(path: str | Path) -> TargetSpec:
    """Read a chip description (TOML or JSON) and return its TargetSpec; defaults fill what it omits."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"target file '{path}' not found; give the path of a .toml or .json chip file")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        else:
            import tomllib

            data = tomllib.loads(path.read_text())
    except Exception as e:  # noqa: BLE001 - any parse error becomes one clear message
        raise FileFormatError(f"target file '{path}': cannot parse ({e})") from e
    if not isinstance(data, dict):
        raise FileFormatError(f"target file '{path}': top level must be a table/object")
    from spikedeploy.checks.target_file import check_chip_data

    check_chip_data(data, path)
    unknown = set(data) - _TOP
    if unknown:
        raise FileFormatError(f"target file '{path}': unknown keys {sorted(unknown)}; allowed: {sorted(_TOP)}")
    src = f"{path.name}: user value"

    def _int(section: str, key: str, v, minimum: int = 1) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise FileFormatError(f"target file '{path}': [{section}] {key} must be an integer >= {minimum}, got {v!r}")
        return v

    numeric = SPEC.numeric
    if "numeric" in data:
        known = {f.name: f for f in fields(NumericFormat)}
        kw = {}
        for k, v in data["numeric"].items():
            if k not in known:
                raise FileFormatError(f"target file '{path}': [numeric] unknown key '{k}'; allowed: {sorted(known)}")
            kw[k] = v
        numeric = replace(numeric, **kw)
        if numeric.weight_bits < 1 or numeric.weight_bits > 32:
            raise FileFormatError(f"target file '{path}': [numeric] weight_bits must be 1..32, got {numeric.weight_bits}")

    def _sourced(section: str, key: str, v):
        """A plain value (its source: this file) or a table {value, source, estimate}."""
        if isinstance(v, dict):
            if "value" not in v or set(v) - {"value", "source", "estimate"}:
                raise FileFormatError(f"target file '{path}': [{section}] {key} table takes value, source, estimate")
            return v["value"], str(v.get("source", src)), bool(v.get("estimate", False))
        return v, src, False

    core = SPEC.core
    if "core" in data or "core_sources" in data:
        kw, sources = {}, dict(core.sources)
        for k, v in data.get("core", {}).items():
            if k in _CORE_KEYS[:4]:
                kw[k] = _int("core", k, v)
            elif k == "conv_weight_sharing":
                kw[k] = bool(v)
            else:
                raise FileFormatError(
                    f"target file '{path}': [core] unknown key '{k}'; allowed: neurons, synapse_memory_bits, "
                    "input_axons, output_axons, conv_weight_sharing"
                )
            sources[k] = src
        cited = data.get("core_sources", {})
        if not isinstance(cited, dict):
            raise FileFormatError(f"target file '{path}': [core_sources] must be a table")
        for k, v in cited.items():
            if k == "estimate" and isinstance(v, bool):
                kw["estimate"] = v
            elif k in _CORE_KEYS:
                if not isinstance(v, str):
                    raise FileFormatError(f"target file '{path}': [core_sources] {k} must be a string, got {v!r:.40}")
                sources[k] = v
            else:
                raise FileFormatError(f"target file '{path}': [core_sources] '{k}' names no [core] figure; allowed: "
                                      f"{', '.join(_CORE_KEYS)}, estimate = true/false")
        core = replace(core, sources=sources, **kw)

    tables = {}
    for section, defaults in (("energy", DEFAULT_ENERGY), ("timing", DEFAULT_TIMING), ("host", DEFAULT_HOST)):
        out = dict(defaults)
        for k, v in data.get(section, {}).items():
            unit = _UNITS[section] or (defaults[k].unit if k in defaults else "J")
            if section == "energy" and k.startswith("static"):
                unit = "W"
            if isinstance(v, dict):
                if "value" not in v:
                    raise FileFormatError(f"target file '{path}': [{section}] {k} table needs a 'value'")
                val = Value(float(v["value"]), v.get("unit", unit), str(v.get("source", src)), bool(v.get("estimate", False)))
            elif isinstance(v, int | float) and not isinstance(v, bool):
                val = Value(float(v), unit, src)
            else:
                raise FileFormatError(f"target file '{path}': [{section}] {k} must be a number or a table, got {v!r}")
            if not val.value >= 0:
                raise FileFormatError(f"target file '{path}': [{section}] {k} must be >= 0, got {val.value}")
            out[k] = val
        tables[section] = out

    capabilities = _capabilities(path, data.get("capabilities", {}), _sourced)
    sims = data.get("simulators", list(SPEC.simulators))
    if not isinstance(sims, list) or not all(isinstance(x, str) for x in sims):
        raise FileFormatError(f"target file '{path}': simulators must be a list of backend names, got {sims!r}")
    try:
        return TargetSpec(
            name=str(data.get("name", "fixedpoint")),
            description=str(data.get("description", f"fixed-point target from {path.name}")),
            numeric=numeric,
            core=core,
            cores_per_chip=_int("top", "cores_per_chip", data.get("cores_per_chip", SPEC.cores_per_chip)),
            max_chips=_int("top", "max_chips", data.get("max_chips", SPEC.max_chips)),
            energy=tables["energy"],
            timing=tables["timing"],
            host=tables["host"],
            simulators=tuple(sims),
            programmable_neurons=bool(data.get("programmable_neurons", False)),
            capabilities=capabilities,
        )
    except TypeError as e:
        raise SpikeDeployError(f"target file '{path}': {e}") from e


def _capabilities(path: Path, table, sourced) -> Capabilities:
    if not isinstance(table, dict):
        raise FileFormatError(f"target file '{path}': [capabilities] must be a table")
    known = {f.name for f in fields(Capabilities)} - {"sources"}
    kw, sources = {}, {}
    for k, raw in table.items():
        if k not in known:
            raise FileFormatError(f"target file '{path}': [capabilities] unknown key '{k}'; allowed: {sorted(known)}")
        v, sources[k], _ = sourced("capabilities", k, raw)
        if k in ("neuron_ops", "synapse_ops"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise FileFormatError(f"target file '{path}': [capabilities] {k} must be a list of op names, got {v!r}")
            v = tuple(v)
        elif k in ("recurrent", "graded_spikes"):
            if not isinstance(v, bool):
                raise FileFormatError(f"target file '{path}': [capabilities] {k} must be true or false, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise FileFormatError(f"target file '{path}': [capabilities] {k} must be an integer >= 1, got {v!r}")
        kw[k] = v
    return Capabilities(**kw, sources=sources)
