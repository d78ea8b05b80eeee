"""One entry point for every simulation backend: `simulate(graph_or_qgraph, inputs, backend=...)`.

Backends:
- float:    the float reference (torch), on the float Graph.
- emulator: the batched fixed-point emulator, bit-exact with Lava in Loihi 2 mode, on a QGraph, in the
            arithmetic of the target the QGraph was quantized for.
- lava:     Lava's Loihi2SimCfg(select_tag="fixed_pt"), on a QGraph, one sample at a time.

A float Graph given to a fixed-point backend is quantized first (max-abs per layer) and the Run says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spikedeploy.errors import SpikeDeployError, TargetLimitError
from spikedeploy.graph.ir import Graph
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.simulate.result import Run, model_layout
from spikedeploy.targets.backends import FLOAT, get_backend


def simulate(model: Graph | QGraph, inputs: Mapping[str, np.ndarray], *, backend: str = "emulator",
             target: str | None = None, steps: int | None = None, probes=(), progress=None) -> Run:
    """Run `model` on `inputs` ({input name: [T, B, ...]}, or a file per input as `input_stream` reads them,
    streamed a chunk of samples at a time) with one backend. progress(fraction done), when
    given, is called as the run advances (per step, chunk or sample, by backend).

    target: the target a float Graph is quantized for (default loihi2). A QGraph runs in the arithmetic of
    the target it was quantized for; a `target` that names another arithmetic is refused.
    """
    if backend != FLOAT:
        get_backend(backend)  # an unknown name is refused before anything is quantized
    if any(isinstance(v, (str, Path)) for v in inputs.values()):  # files: read a chunk of samples at a time
        from spikedeploy.simulate.input_stream import simulate_files

        return simulate_files(model, inputs, backend=backend, target=target, steps=steps, probes=probes,
                              progress=None if progress is None else lambda done, total: progress(done / total))
    if isinstance(model, QGraph) and backend != FLOAT:
        _check_target(model, target, backend)
    graph = model.graph if isinstance(model, QGraph) else model
    if backend == FLOAT:
        from spikedeploy.simulate.float_ref import simulate_float

        return simulate_float(graph, inputs, steps=steps, probes=probes, progress=progress)
    qg, note = as_fixed_point(model, target, backend)
    chip = get_backend(backend).load()  # computes in the arithmetic of the QGraph's own target
    from spikedeploy.simulate.hybrid import has_host_part, run_hybrid

    if has_host_part(qg.graph):
        def stage(sub, xs, steps, probes):
            return chip(sub, xs, steps=steps, probes=probes)

        run = run_hybrid(qg, inputs, stage, steps=steps, probes=probes, fixed_point=True, progress=progress,
                         backend=backend)
    else:
        run = chip(qg, inputs, steps=steps, probes=probes, progress=progress)
    if note:
        run.meta.setdefault("notes", []).append(note)
    return model_layout(qg.graph, run)


def as_fixed_point(model: Graph | QGraph, target: str | None, backend: str) -> tuple[Graph | QGraph, str | None]:
    """The model a fixed-point backend runs (a float Graph quantized max-abs per layer), and a note saying so;
    quantized once when a run is made of several calls."""
    if backend == FLOAT or isinstance(model, QGraph):
        return model, None
    from spikedeploy.quantize.quantizer import quantize

    target = target or "loihi2"
    return quantize(model, target), f"float graph quantized for {target} with max-abs scaling before simulation"


def _check_target(qg: QGraph, target: str | None, backend: str) -> None:
    """A QGraph's own target decides its arithmetic: refuse a --target that says otherwise, and Lava (which
    computes Loihi 2's arithmetic only) for a QGraph of another arithmetic."""
    from spikedeploy.targets.loihi_arith import arith_for

    own = arith_for(qg)
    if target is not None and arith_for(target) != own:
        raise TargetLimitError(
            f"target '{target}' contradicts the QGraph, which was quantized for '{qg.target}' "
            f"({own.state_bits}-bit state, {own.weight_bits}-bit weights); drop --target, or quantize again for '{target}'")
    try:
        from spikedeploy.targets.spec import get_target

        spec = get_target(qg.target)
    except SpikeDeployError:  # a chip file's name cannot be looked up again; its recorded arithmetic decides
        spec = None
    if spec is not None and spec.simulators and backend not in spec.simulators:
        raise TargetLimitError(
            f"backend '{backend}' cannot simulate target '{qg.target}' (the QGraph's); it runs on: "
            f"{', '.join(spec.simulators)}")
    only = get_backend(backend).arithmetic
    if only is not None and own != arith_for(only):
        raise TargetLimitError(
            f"backend '{backend}' computes {only}'s arithmetic only, but the QGraph was quantized for '{qg.target}' "
            f"({own.state_bits}-bit state, {own.weight_bits}-bit weights); use --backend emulator")


def parse_input_args(graph: Graph, specs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`X.npy` for a single-input graph, or `NAME=X.npy` per input."""
    named_specs(graph, specs)
    return load_named_arrays(specs, default_name=graph.inputs[0] if graph.inputs else "input")


def named_specs(graph: Graph, specs: tuple[str, ...]) -> dict[str, str]:
    """{input name: what follows NAME=} of `X` (single-input graph) or `NAME=X` per input."""
    if len(graph.inputs) != 1:
        bare = [s for s in specs if "=" not in s]
        if bare:
            raise SpikeDeployError(f"--input {bare[0]}: the graph has several inputs {graph.inputs}; write NAME={bare[0]}")
    default = graph.inputs[0] if graph.inputs else "input"
    return dict(s.split("=", 1) if "=" in s else (default, s) for s in specs)


def load_named_arrays(specs, *, default_name: str = "input", option: str = "--input") -> dict[str, np.ndarray]:
    """NAME=X.npy pairs (a bare X.npy gets `default_name`) loaded without pickle."""
    res: dict[str, np.ndarray] = {}
    for s in specs:
        name, path = s.split("=", 1) if "=" in s else (default_name, s)
        p = Path(path)
        if not p.is_file():
            raise SpikeDeployError(f"{option} {s}: file {p} not found" if not p.exists() else
                                   f"{option} {s}: {p} is not a regular file; give a .npy array file")
        from spikedeploy.checks.sim_inputs import check_array_file

        res[name] = check_array_file(np.load, p, f"{option} {s}")
    return res


def random_inputs(graph: Graph, *, steps: int, batch: int, density: float = 0.15, seed: int = 0) -> dict[str, np.ndarray]:
    """Bernoulli spike inputs for each Input node, deterministic under the seed."""
    graph.infer_shapes()
    rng = np.random.default_rng(seed)
    return {n: (rng.random((steps, batch, *graph.nodes[n].out_shape)) < density).astype(np.float32)
            for n in graph.inputs}
