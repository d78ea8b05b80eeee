"""One small model per multimodal SNN family (tests/helpers/family_models.py) deploys from the CLI without
--allow-approximate: export → quantize → simulate (float, emulator, Lava) → partition → report.

References: the torch model's own outputs (the float run must equal them spike for spike), Lava's simulation
(the emulator must equal it bit for bit on every chip node: u, v and spikes at every step), and the report
schema.
"""

from __future__ import annotations

import json

import family_models as fm
import jsonschema
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from spikedeploy.cli.main import cli
from spikedeploy.converters import torch_export as tx
from spikedeploy.io.graph_files import load_graph
from spikedeploy.io.qgraph_file import load_qgraph
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.float_ref import simulate_float, synapse_depth
from spikedeploy.simulate.result import load_run

# family -> (factory, steps, {input: integer range}, host ops it keeps)
FAMILIES = {
    "spikformer_clip": ("spikformer_clip", 4, {"image": 2, "text": 2}, {"MatMul"}),  # snnTorch defaults
    "scmrl_av": ("scmrl_av", 4, {"audio": 2, "visual": 2}, {"MatMul"}),
    "cmsf_retrieval": ("cmsf_retrieval", 2, {"regions": 3, "sentence": 3}, {"MatMul"}),  # spikingjelly, T = 2
    "hybrid_ash": ("hybrid_ash", 4, {"image": 4, "text": 2}, {"HostOp", "MaxPool2d"}),  # ANN front end on host
    # spike-driven attention (masks and column sums): all on chip, its output a token view
    "spike_driven": ("spike_driven_attention", 4, {"image": 2}, set()),
}


def family_inputs(name: str, batch: int, seed: int) -> dict[str, np.ndarray]:
    factory, steps, ranges, _ = FAMILIES[name]
    shapes = getattr(fm, factory)().input_shapes
    rng = np.random.default_rng(seed)
    return {k: rng.integers(0, ranges[k], size=(steps, batch, *shapes[k])).astype(np.float32) for k in shapes}


def torch_outputs(name: str, xs: dict[str, np.ndarray], steps: int) -> list[np.ndarray]:
    """The model's outputs, step by step from rest, zero input after the given steps."""
    model = getattr(fm, FAMILIES[name][0])()
    tx.reset_neurons(model)
    outs = []
    with torch.no_grad():
        for t in range(steps):
            args = [torch.as_tensor(x[t]) if t < x.shape[0] else torch.zeros_like(torch.as_tensor(x[0]))
                    for x in xs.values()]
            y = model(*args)
            y = y if isinstance(y, tuple) else (y,)
            outs.append([(v[0] if isinstance(v, tuple) else v).double().numpy() for v in y])
    tx.reset_neurons(model)
    return [np.stack([o[i] for o in outs]) for i in range(len(outs[0]))]


def input_options(d, xs: dict[str, np.ndarray], tag: str) -> list[str]:
    """Each input saved as .npy, as the CLI's --input NAME=FILE options."""
    opts = []
    for k, x in xs.items():
        np.save(d / f"{tag}_{k}.npy", x)
        opts += ["--input", f"{k}={d / f'{tag}_{k}.npy'}"]
    return opts


def ok(args):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def deployed(request, tmp_path_factory):
    name = request.param
    factory, steps, _, _ = FAMILIES[name]
    d = tmp_path_factory.mktemp(name)
    exp = json.loads(ok(["export", f"family_models:{factory}", "-o", str(d / "m.nir"), "--steps", str(steps),
                         "--json"]))
    ok(["quantize", str(d / "m.nir"), "--target", "loihi2", "-o", str(d / "m.q.npz")])
    return name, d, exp


def test_export_is_exact_and_hosts_only_what_has_no_chip_mapping(deployed):
    name, d, exp = deployed
    hybrid = exp["check"].get("hybrid", {"identical": True, "spikes": exp["check"]["spikes"]})  # no host: one check
    assert exp["check"]["identical"] and hybrid["identical"] and hybrid["spikes"] > 0
    assert not exp["deviations"]
    qg = load_qgraph(d / "m.q.npz")
    host = {n: v.op for n, v in qg.graph.nodes.items() if v.placement == "host" and v.op != "Output"}
    # spike x spike matrix products (and the hybrid's ANN front end) have no exact chip mapping
    assert {op for op in host.values() if op != "Conv2d"} == FAMILIES[name][3], host
    if name != "hybrid_ash":
        assert any(v.op == "Conv1d" for v in qg.graph.nodes.values())  # a Linear over tokens: kernel-1 Conv1d
    if name == "spike_driven":
        assert not exp["host_nodes"] and exp["check"]["spikes"] > 0


def test_cli_float_run_equals_the_torch_model(deployed):
    name, d, _ = deployed
    xs = family_inputs(name, batch=3, seed=1)
    specs = input_options(d, xs, "f")
    ok(["simulate", str(d / "m.nir"), "--backend", "float", *specs, "-o", str(d / "float.npz")])
    run = load_run(d / "float.npz")
    ref = torch_outputs(name, xs, run.steps)
    outs = sorted(run.outputs)
    assert len(outs) == len(ref)
    for o, r in zip(outs, ref, strict=True):
        np.testing.assert_array_equal(run.outputs[o].reshape(r.shape), r, err_msg=o)
    assert sum(float(r.sum()) for r in ref) > 0


def test_chip_timing_is_the_torch_model_delayed(deployed):
    """With the chip's synapse delays and each bias held until its layer's first input (bias_onset), every
    output is the torch model's, `depth` steps late: merged branches (residuals, host attention, relays)
    arrive in step and no layer integrates a bias alone before its input arrives."""
    name, d, _ = deployed
    g = load_graph(d / "m.nir")
    xs = family_inputs(name, batch=3, seed=4)
    steps = FAMILIES[name][1]
    depth = synapse_depth(g)
    late = max(depth[o] for o in g.outputs)
    run = simulate_float(g, xs, steps=steps + late, synapse_delay=True, bias_onset=True)
    ref = torch_outputs(name, xs, steps)
    for o, r in zip(sorted(run.outputs), ref, strict=True):
        k = depth[o]
        np.testing.assert_array_equal(run.outputs[o][k:k + steps].reshape(r.shape), r, err_msg=o)


def test_emulator_equals_lava_on_every_chip_node(deployed):
    name, d, _ = deployed
    qg = load_qgraph(d / "m.q.npz")
    xs = family_inputs(name, batch=2, seed=2)
    steps = FAMILIES[name][1] + 6  # the deepest layers answer after their synapse delay
    neurons = [n for n, v in qg.graph.nodes.items() if v.placement == "chip" and v.spec.family == "neuron"]
    emu = simulate(qg, xs, backend="emulator", steps=steps, probes=neurons)
    lava = simulate(qg, xs, backend="lava", steps=steps, probes=neurons)
    for n in neurons:
        for var in ("v", "s"):
            np.testing.assert_array_equal(emu.traces[n][var], lava.traces[n][var], err_msg=f"{n}.{var}")
    for o in emu.outputs:
        np.testing.assert_array_equal(emu.outputs[o], lava.outputs[o])
    assert sum(int(emu.counts[n].sum()) for n in neurons) > 0


def test_partition_and_report(deployed):
    name, d, _ = deployed
    xs = family_inputs(name, batch=4, seed=3)
    specs = input_options(d, xs, "r")
    ok(["simulate", str(d / "m.q.npz"), "--backend", "emulator", *specs, "--steps", "10", "-o", str(d / "emu.npz")])
    ok(["partition", str(d / "m.q.npz", ), "--target", "loihi2", "--run", str(d / "emu.npz"), "-o", str(d / "p.json")])
    rep = json.loads(ok(["report", str(d / "m.q.npz"), "--target", "loihi2", "--run", str(d / "emu.npz"),
                         "--placement", str(d / "p.json"), "--html", str(d / "r.html"), "--json"]))
    from importlib.resources import files

    jsonschema.validate(rep, json.loads(files("spikedeploy.report").joinpath("schema.json").read_text()))
    split = rep["chip_host_split"]
    # attention sits inside the time loop (chip -> host -> chip each step); a front end reads only Inputs
    assert split["round_trips_per_step"] == (0 if name in ("hybrid_ash", "spike_driven") else 1)
    assert rep["fits"] and (split["host_to_chip_bits_per_step"] > 0) == (name != "spike_driven")
    assert all(o["why"] for o in split["operations"])
    assert (d / "r.html").stat().st_size > 1000


def test_percentile_quantization_with_calibration(deployed):
    """Calibration runs the whole graph (host programs included) and recalibrates the host payloads; layers
    without state (AND/OR/relay Thresholds) are calibrated from their inputs."""
    name, d, _ = deployed
    from spikedeploy.converters.nir import read_nir
    from spikedeploy.quantize.quantizer import quantize

    g = read_nir(d / "m.nir")
    qg = quantize(g, "loihi2", method="percentile", calibration=family_inputs(name, batch=4, seed=5))
    emu = simulate(qg, family_inputs(name, batch=2, seed=6), backend="emulator", steps=FAMILIES[name][1] + 6)
    assert sum(int(c.sum()) for c in emu.counts.values()) > 0


def test_cli_lava_run_equals_cli_emulator_run(deployed):
    """The CLI's own Lava run (not only the API's) gives the emulator's outputs and spike counts."""
    name, d, _ = deployed
    specs = input_options(d, family_inputs(name, batch=2, seed=7), "l")
    steps = str(FAMILIES[name][1] + 6)
    for backend in ("emulator", "lava"):
        ok(["simulate", str(d / "m.q.npz"), "--backend", backend, *specs, "--steps", steps,
            "-o", str(d / f"cli_{backend}.npz")])
    emu, lava = load_run(d / "cli_emulator.npz"), load_run(d / "cli_lava.npz")
    assert sorted(emu.counts) == sorted(lava.counts) and sum(int(c.sum()) for c in emu.counts.values()) > 0
    for k in emu.counts:
        np.testing.assert_array_equal(emu.counts[k], lava.counts[k], err_msg=k)
    for o in emu.outputs:
        np.testing.assert_array_equal(emu.outputs[o], lava.outputs[o], err_msg=o)
