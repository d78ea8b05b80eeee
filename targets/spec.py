"""Target (TargetSpec): what a chip can compute and hold and what its events cost, each constant sourced.

One Target bundles everything the pipeline asks of a chip: its arithmetic (`numeric`, which the quantizer
and the emulator both read), its per-core limits (the partitioner's resource model), what its cores can
compute at all (`capabilities`: neuron and synapse ops, recurrence, fan-in, graded spikes), its per-event
energies and times (the estimate) and the backends that can simulate it (`simulators`).

`get_target(name)` resolves a name through the registry: the built-in chips (one module each in
`targets/`), targets registered at run time (`register_target`), a chip file (`fixedpoint:chip.toml`,
`chip.toml`, `chip.json`), or a Python module path (`mypkg.mychip`) whose module defines `SPEC`. Adding a
chip means adding one module or one file.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from spikedeploy.errors import SpikeDeployError


@dataclass(frozen=True)
class Value:
    """A number and where it comes from. `estimate=True` marks figures nobody has published."""

    value: float
    unit: str
    source: str
    estimate: bool = False


@dataclass(frozen=True)
class NumericFormat:
    """Fixed-point widths of a Loihi-style CUBA neuron target."""

    weight_bits: int = 8  # synaptic weight mantissa, sign included
    weight_exp_min: int = -8
    weight_exp_max: int = 7
    mixed_sign_drops_lsb: bool = True  # Loihi 2 / Lava: MIXED sign keeps only even 8-bit values
    state_bits: int = 24  # u and v; u wraps, v saturates
    vth_bits: int = 17  # threshold mantissa (unsigned); compared as v > vth << 6
    decay_bits: int = 12  # du, dv in 1/4096 units
    bias_mant_bits: int = 13  # signed
    bias_exp_min: int = 0
    bias_exp_max: int = 7
    act_shift: int = 6  # a_in << 6 into u
    conv_acc_bits: int = 24  # Conv's accumulator wraps at this width
    max_delay: int = 62
    rounding: str = "trunc"  # decay rounding: "trunc" toward zero (Loihi 2) or "nearest"


@dataclass(frozen=True)
class CoreLimits:
    neurons: int  # neuron compartments per core
    synapse_memory_bits: int  # synaptic memory per core
    input_axons: int
    output_axons: int
    sources: dict[str, str] = field(default_factory=dict)
    estimate: bool = False
    # A convolution stores its kernel once per core (per group of output channels) instead of one weight
    # per synapse; see spikedeploy/partition/resources.py for the memory model this switches.
    conv_weight_sharing: bool = True


@dataclass(frozen=True)
class Capabilities:
    """What a chip's cores can compute at all, beyond the sizes in CoreLimits. None: no restriction.

    `check_capabilities` (targets/capabilities.py) turns every breach into one line naming the node,
    the chip and the limit; quantize and a strict partition refuse the graph, a report lists the breaches.
    """

    neuron_ops: tuple[str, ...] | None = None  # neuron models the chip implements
    synapse_ops: tuple[str, ...] | None = None  # synapse ops it can lower (conv-only chips: no dense)
    recurrent: bool = True  # edges that close a cycle through chip nodes
    max_fan_in: int | None = None  # synapses into one neuron from one synapse node
    max_fan_out: int | None = None  # synapses out of one chip neuron through one synapse node
    graded_spikes: bool = True  # chip synapses reading non-binary values (analog layers, host payloads)
    sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    numeric: NumericFormat
    core: CoreLimits
    cores_per_chip: int
    max_chips: int
    energy: dict[str, Value]  # per-event energies (J) and static power (W)
    timing: dict[str, Value]  # per-event times (s), barrier
    host: dict[str, Value] = field(default_factory=dict)  # host-side constants (J per MAC etc.)
    simulators: tuple[str, ...] = ()  # backends that can run a QGraph for this target
    # neuron update programmable (microcode): reset by subtraction, delayed reset, v >= th, current bias
    programmable_neurons: bool = False
    capabilities: Capabilities = field(default_factory=Capabilities)

    def as_dict(self) -> dict:
        def conv(x):
            if isinstance(x, Value):
                return {"value": x.value, "unit": x.unit, "source": x.source, "estimate": x.estimate}
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            if hasattr(x, "__dataclass_fields__"):
                return {f.name: conv(getattr(x, f.name)) for f in fields(x)}
            if isinstance(x, tuple):
                return list(x)
            return x

        return conv(self)


def borrowed(values: dict[str, Value], why: str) -> dict[str, Value]:
    """Another chip's figures used for this one: same numbers, sources say so, all marked as estimates."""
    return {k: replace(v, source=f"{why}: {v.source}", estimate=True) for k, v in values.items()}


# the host side of every target: a 45 nm general-purpose core (the SNN literature's reference)
HOST_45NM = {
    "mac": Value(4.6e-12, "J", "Horowitz ISSCC 2014, 45 nm fp32 mult 3.7 + add 0.9 pJ"),
    "add": Value(0.9e-12, "J", "Horowitz ISSCC 2014, 45 nm fp32 add"),
    "mac_time": Value(1e-10, "s", "estimate: 10 GMAC/s single host core", estimate=True),
}

Target = TargetSpec  # the name the rest of the pipeline speaks of

BUILTIN = ("loihi2", "loihi1", "spinnaker2", "truenorth", "xylo", "speck", "fixedpoint")
_REGISTERED: dict[str, TargetSpec] = {}


def register_target(spec: TargetSpec) -> TargetSpec:
    """Make `spec` resolvable by its name for the rest of the process (a target defined in a script or
    test); a built-in name cannot be taken."""
    if not isinstance(spec, TargetSpec):
        raise SpikeDeployError(f"register_target needs a TargetSpec, got {type(spec).__name__}")
    if spec.name in BUILTIN:
        raise SpikeDeployError(f"target name '{spec.name}' is a built-in target's; choose another name")
    _REGISTERED[spec.name] = spec
    return spec


def unregister_target(name: str) -> None:
    _REGISTERED.pop(name, None)


def target_names() -> tuple[str, ...]:
    """Every target a plain name resolves to: the built-ins, then those registered in this process."""
    return BUILTIN + tuple(n for n in _REGISTERED if n not in BUILTIN)


def get_target(name: str | TargetSpec) -> TargetSpec:
    """A target by name (built-in or registered), a chip file, or a module path `pkg.chip` defining SPEC.

    File forms: `fixedpoint:path/to/chip.toml`, or a path ending in .toml/.json.
    """
    if isinstance(name, TargetSpec):
        return name
    name = str(name)
    if name in _REGISTERED:
        return _REGISTERED[name]
    path = None
    if name.startswith("fixedpoint:"):
        path = name.split(":", 1)[1]
    elif name.lower().endswith((".toml", ".json")):
        path = name
    if path is not None:
        from spikedeploy.targets.fixedpoint import load_fixedpoint_target

        return load_fixedpoint_target(path)
    if name not in BUILTIN and "." in name:
        return _module_target(name)
    if name not in BUILTIN:
        raise SpikeDeployError(
            f"unknown target '{name}'; available: {', '.join(target_names())}, a chip file "
            "'fixedpoint:chip.toml' (see spikedeploy.targets.fixedpoint), or a module path 'pkg.chip' defining SPEC"
        )
    return _builtin(name)


@functools.cache
def _builtin(name: str) -> TargetSpec:
    """A built-in chip: its module's SPEC, or its chip file `targets/<name>.toml`."""
    chip_file = Path(__file__).with_name(f"{name}.toml")
    if chip_file.is_file():
        from spikedeploy.targets.fixedpoint import load_fixedpoint_target

        return load_fixedpoint_target(chip_file)
    return importlib.import_module(f"spikedeploy.targets.{name}").SPEC


def _module_target(path: str) -> TargetSpec:
    try:
        mod = importlib.import_module(path)
    except ImportError as e:
        raise SpikeDeployError(f"target '{path}': cannot import module '{path}' ({e}); give a built-in target "
                               f"({', '.join(target_names())}), a chip file, or an importable module") from e
    spec = getattr(mod, "SPEC", None)
    if not isinstance(spec, TargetSpec):
        raise SpikeDeployError(f"target '{path}': module '{path}' defines no SPEC of type TargetSpec")
    return spec
