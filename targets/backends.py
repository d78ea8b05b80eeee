"""The fixed-point simulation backends, by name: what `simulate --backend` and a target's `simulators` list.

The core never imports a backend's modules: it asks this registry for a backend by name and calls its entry
point, imported on first use (Lava takes seconds to import and may not be installed). Every entry point has
the contract of `simulate_emulator`: `fn(qgraph, inputs, *, steps, probes, progress) -> Run`, computed in the
arithmetic of the target the QGraph was quantized for. A backend that computes one arithmetic only says so in
`arithmetic`, and a QGraph of another arithmetic is refused before it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from spikedeploy.errors import SpikeDeployError


@dataclass(frozen=True)
class Backend:
    name: str
    entry: str  # "package.module:function"
    description: str
    arithmetic: str | None = None  # the one target arithmetic it computes (a target name); None: any
    checks: str | None = None  # "module:function" -> {name: {"ok", "label", "required", "summary", ...}}
    # "module:function": qgraph, probes= -> a compiled program that `entry` takes in place of the QGraph for
    # 0/1 spike inputs, so that a run made of many calls (chunks of a dataset) prepares the network once
    compile: str | None = None

    def load(self) -> Callable:
        return _resolve(self.entry)

    def load_compile(self) -> Callable | None:
        return _resolve(self.compile) if self.compile else None


_BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("emulator", "spikedeploy.targets.emulator.engine:simulate_emulator",
                "batched fixed-point emulator, in the QGraph's own target arithmetic; Lava's bit for bit on Loihi 2",
                checks="spikedeploy.targets.emulator.kernels:checks",
                compile="spikedeploy.targets.emulator.engine:compile_emulator"),
        Backend("lava", "spikedeploy.targets.lava.backend:simulate_lava",
                "Lava 0.10 Loihi2SimCfg(select_tag='fixed_pt'), one sample at a time", arithmetic="loihi2",
                checks="spikedeploy.targets.lava.selftest:checks"),
    )
}
FLOAT = "float"  # the float reference (spikedeploy.simulate.float_ref), which runs the float Graph


# the emulator's compiled kernels also convert float spikes to int8 in one pass (input_stream.check_chunk)
AS_INT8 = "spikedeploy.targets.emulator.kernels:as_int8"


def as_int8_kernel() -> Callable:
    """(x, out) -> True when x [T, ...] (float) went into out as int8, False when a value does not fit, None
    when the kernel cannot take x (not built, another dtype, steps not contiguous): see kernels.as_int8."""
    return _resolve(AS_INT8)


def _resolve(entry: str) -> Callable:
    module, func = entry.split(":")
    return getattr(importlib.import_module(module), func)


def backend_checks() -> dict[str, dict]:
    """Every backend's installation checks (`spikedeploy doctor`), by check name."""
    out: dict[str, dict] = {}
    for b in _BACKENDS.values():
        if b.checks:
            out.update(_resolve(b.checks)())
    return out


def register_backend(backend: Backend) -> Backend:
    """Make a fixed-point backend selectable by name (`simulate --backend NAME`, a target's `simulators`)."""
    if backend.name == FLOAT or backend.name in ("emulator", "lava"):
        raise SpikeDeployError(f"backend name '{backend.name}' is a built-in backend's; choose another name")
    _BACKENDS[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """Every backend `simulate` accepts: the float reference, then the fixed-point backends."""
    return (FLOAT, *_BACKENDS)


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise SpikeDeployError(f"unknown backend '{name}'; choose one of {', '.join(backend_names())}")
    return _BACKENDS[name]
