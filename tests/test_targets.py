"""Targets as plug-ins: a toy chip defined in this one file runs quantize -> simulate -> partition -> report ->
compare in its own arithmetic and with its own constants; real chips refuse what they cannot compute in one
line naming node, chip and limit; `compare` prices and times each chip by formulas checked by hand."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from placement_checker import check_placement

from spikedeploy.errors import FileFormatError, SpikeDeployError, UnsupportedError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.partition.placer import partition
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.report.build import build_report
from spikedeploy.report.compare import compare_targets
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.targets.emulator import simulate_emulator
from spikedeploy.targets.spec import (
    BUILTIN,
    Capabilities,
    CoreLimits,
    NumericFormat,
    TargetSpec,
    Value,
    get_target,
    register_target,
    target_names,
    unregister_target,
)

SRC = "test_targets.py: toy figure"
TOY = TargetSpec(
    name="toy",
    description="a toy chip: 10-bit state, 6-bit weights, 16 neurons per core, 2 cores per chip",
    numeric=NumericFormat(weight_bits=6, state_bits=10, vth_bits=8, act_shift=2, bias_mant_bits=8),
    core=CoreLimits(neurons=16, synapse_memory_bits=1 << 16, input_axons=64, output_axons=64,
                    sources={"neurons": SRC}),
    cores_per_chip=2,
    max_chips=4,
    # only static power and the barrier cost anything, so energy and latency can be computed by hand
    energy={k: Value(0.0, "J", SRC) for k in ("synop", "neuron_update", "spike_in_core", "spike_between_cores",
                                             "spike_between_chips")} | {"static_power_chip": Value(1.0, "W", SRC)},
    timing={k: Value(0.0, "s", SRC) for k in ("synop", "neuron_update", "spike_in_core", "spike_between_cores",
                                             "spike_between_chips")} | {"barrier": Value(1e-3, "s", SRC)},
    host={"mac": Value(0.0, "J", SRC), "mac_time": Value(0.0, "s", SRC), "round_trip": Value(0.0, "s", SRC)},
    simulators=("emulator",),
    capabilities=Capabilities(neuron_ops=("IF", "I"), sources={"neuron_ops": SRC}),
)


@pytest.fixture()
def toy():
    register_target(TOY)
    yield TOY
    unregister_target("toy")


def _if(name, n):
    return Node(name, "IF", {"r": np.ones(n), "v_threshold": np.ones(n)})


def _net() -> Graph:
    """in(8) -> fc1 -> h (40 IF) -> fc2 -> o (4 IF) -> out: 44 neurons, two synapse hops."""
    rng = np.random.default_rng(0)
    return Graph.chain(Node("in", "Input", {"shape": [8]}), Node("fc1", "Linear", {"weight": rng.normal(size=(40, 8))}),
                       _if("h", 40), Node("fc2", "Linear", {"weight": rng.normal(size=(4, 40))}), _if("o", 4),
                       Node("out", "Output"), dt=1.0).validate()


def test_the_registry_resolves_builtins_registered_targets_and_refuses_unknown_names(toy):
    assert set(BUILTIN) >= {"loihi2", "loihi1", "spinnaker2", "truenorth", "xylo", "speck", "fixedpoint"}
    assert get_target("toy") is TOY and "toy" in target_names() and get_target(TOY) is TOY
    for name in BUILTIN:
        assert get_target(name).name == name
    with pytest.raises(SpikeDeployError, match="built-in target's"):
        register_target(get_target("loihi1"))
    with pytest.raises(SpikeDeployError, match=r"unknown target 'nochip'; available: loihi2.*toy"):
        get_target("nochip")
    with pytest.raises(SpikeDeployError, match="cannot import module 'no.such_chip'"):
        get_target("no.such_chip")
    # a module path naming a module that defines SPEC is a target: here the built-in Loihi 1 module
    assert get_target("spikedeploy.targets.loihi1").name == "loihi1"


def test_every_builtin_constant_names_a_source():
    for name in BUILTIN:
        t = get_target(name)
        for table in (t.energy, t.timing, t.host):
            for k, v in table.items():
                assert v.source.strip(), f"{name}: {k} has no source"
                if "estimate" in v.source.lower():
                    assert v.estimate, f"{name}: {k} says estimate but is not marked as one"
        assert set(t.core.sources) >= {"neurons", "synapse_memory_bits"}, name


def test_a_toy_target_runs_the_whole_pipeline_in_its_own_arithmetic(toy):
    g = _net()
    x = (np.random.default_rng(1).random((10, 3, 8)) < 0.4).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qg = quantize(g, "toy")
    assert qg.target == "toy" and qg.meta["numeric"]["state_bits"] == 10
    # 6-bit mixed-sign mantissas on Loihi's grid (the sign costs the LSB): even values up to 62, not 8-bit's 254
    w = np.asarray(qg.q["fc1"].weight)
    assert int(np.abs(w).max()) == 62 and np.all(w % 2 == 0)
    run = simulate(qg, {"in": x}, probes=["h"])
    assert run.meta["arith"] == "toy"
    # v saturates at the toy's 10-bit bound ±511 (vth 16 << 2 = 64 is far below it, negative inputs reach it),
    # where Loihi 2's 24-bit arithmetic, run on the same integers, goes on and spikes differently
    v = run.traces["h"]["v"]
    assert np.abs(v).max() == 511 and run.meta["v_saturations"]["h"] > 0
    wide = simulate_emulator(qg, {"in": x}, probes=["h"], mode="loihi2")
    assert np.abs(wide.traces["h"]["v"]).max() > 511 and (wide.traces["h"]["v"] != v).any()

    pl = partition(g, "toy", run=run, qgraph=qg)
    check_placement(g, pl, TOY, qgraph=qg)
    # 44 neurons, 16 per core: h needs ceil(40/16) = 3 cores, o one more unless it shares h's last core
    assert pl.lower_bound == 3 and pl.cores_used in (3, 4) and pl.chips == math.ceil(pl.cores_used / 2)

    rep = build_report(g, "toy", run=run, placement=pl, qgraph=qg)
    assert rep["target"]["name"] == "toy"
    consts = {c["name"]: c for c in rep["assumptions"]["constants"]}
    assert consts["P_static_per_chip"]["source"] == SRC and consts["t_barrier"]["value"] == 1e-3
    # by hand: T = 10 steps of 1 ms (only the barrier costs time), 1 W per chip used
    assert rep["latency_per_inference_s"] == pytest.approx(10e-3)
    assert rep["energy_per_inference_j"] == pytest.approx(1.0 * pl.chips * 10e-3)

    res = compare_targets(g, ["toy", "loihi2"], inputs={"in": x}, labels=np.array([0, 1, 2]),
                          metric=lambda outs: float(np.asarray(outs["out"]).sum()))
    row = {r["target"]: r for r in res["targets"]}["toy"]
    assert row["fits"] and row["why_not"] == [] and row["task"]["arith"] == "toy"
    # an example's metric (here: output spikes) is scored on the chip's own run of T + depth steps
    assert row["task"]["metric_quant"] == float(simulate(qg, {"in": x}, steps=12).outputs["out"].sum())
    # by hand: T = 10 input steps, depth 2 synapse hops, 1 ms per step (only the barrier costs time), 1 W per chip
    assert row["steps"] == 10 and row["depth"] == 2
    assert row["latency_s"] == pytest.approx(12e-3) and row["throughput_per_s"] == pytest.approx(100.0)
    # energy covers the sample's whole response: T + depth = 12 steps of the chips' static power
    assert row["energy_steps"] == 12 and row["energy_j"] == pytest.approx(1.0 * row["chips"] * 12e-3)
    assert not row["energy_estimated"] and not row["timing_estimated"]


def test_a_toy_target_refuses_a_neuron_model_it_lacks_in_one_line(toy):
    g = Graph.chain(Node("in", "Input", {"shape": [2]}), Node("fc", "Linear", {"weight": np.ones((3, 2))}),
                    Node("lif", "LIF", {"tau": np.full(3, 2.0), "r": np.ones(3), "v_leak": np.zeros(3),
                                        "v_threshold": np.ones(3)}), Node("out", "Output"), dt=1.0).validate()
    for call in (lambda: quantize(g, "toy"), lambda: partition(g, "toy")):
        with pytest.raises(UnsupportedError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "node 'lif' (LIF)" in msg and "'toy'" in msg and "IF, I" in msg
    # a report does not refuse: it lists the breach as a violation
    assert any("node 'lif'" in v for v in partition(g, "toy", strict=False).violations)


# ---- what real chips cannot compute ------------------------------------------------------------------

def _conv_net(neuron="IF") -> Graph:
    p = {"r": np.ones((4, 6, 6)), "v_threshold": np.ones((4, 6, 6))}
    if neuron == "LIF":
        p.update(tau=np.full((4, 6, 6), 2.0), v_leak=np.zeros((4, 6, 6)))
    return Graph.chain(Node("in", "Input", {"shape": [1, 8, 8]}),
                       Node("conv", "Conv2d", {"weight": np.ones((4, 1, 3, 3))}), Node("n1", neuron, p),
                       Node("out", "Output"), dt=1.0).validate()


@pytest.mark.parametrize("chip,graph,needle", [
    ("speck", _net, "node 'fc1' (Linear): target 'speck' lowers only the synapse ops Conv2d"),
    ("speck", lambda: _conv_net("LIF"), "node 'n1' (LIF): target 'speck' implements only the neuron models IF"),
    ("truenorth", lambda: _conv_net("LIF"), "node 'n1' (LIF): target 'truenorth' implements only"),
    ("xylo", lambda: Graph.chain(Node("in", "Input", {"shape": [2]}), Node("a", "Linear", {"weight": np.ones((3, 2))}),
                                 _if("h", 3), Node("b", "Linear", {"weight": np.ones((65, 3))}), _if("o", 65),
                                 Node("out", "Output"), dt=1.0).validate(),
     "node 'b' (Linear): fan-out 65 per neuron of 'h' exceeds target 'xylo' limit 64"),
    ("truenorth", lambda: Graph.chain(Node("in", "Input", {"shape": [300]}),
                                      Node("fc", "Linear", {"weight": np.ones((2, 300))}), _if("h", 2),
                                      Node("out", "Output"), dt=1.0).validate(),
     "node 'fc' (Linear): fan-in 300 per neuron exceeds target 'truenorth' limit 256"),
])
def test_real_chips_refuse_what_they_cannot_compute_in_one_line(chip, graph, needle):
    with pytest.raises(UnsupportedError) as e:
        quantize(graph(), chip)
    assert "\n" not in str(e.value) and needle in str(e.value)


def test_speck_refuses_recurrence_and_graded_values_loihi2_takes_both():
    g = Graph(dt=1.0)
    for n in (Node("in", "Input", {"shape": [1, 4, 4]}), Node("c1", "Conv2d", {"weight": np.ones((1, 1, 1, 1))}),
              Node("n1", "IF", {"r": np.ones((1, 4, 4)), "v_threshold": np.ones((1, 4, 4))}),
              Node("c2", "Conv2d", {"weight": np.ones((1, 1, 1, 1))}), Node("out", "Output")):
        g.add(n)
    for a, b in (("in", "c1"), ("c1", "n1"), ("n1", "c2"), ("c2", "n1"), ("n1", "out")):
        g.connect(a, b)
    g.validate()
    from spikedeploy.targets.capabilities import capability_breaches

    assert capability_breaches(g, "speck") == [
        "node 'n1' (IF): recurrent edge c2 -> n1, but target 'speck' runs feed-forward networks only "
        "(sinabs exceptions.py: InvalidLayerLoop)"]
    assert capability_breaches(g, "loihi2") == []
    li = Graph.chain(Node("in", "Input", {"shape": [1, 4, 4]}), Node("c1", "Conv2d", {"weight": np.ones((1, 1, 1, 1))}),
                     Node("li", "LI", {"tau": np.full((1, 4, 4), 2.0), "r": np.ones((1, 4, 4)),
                                       "v_leak": np.zeros((1, 4, 4))}),
                     Node("c2", "Conv2d", {"weight": np.ones((1, 1, 1, 1))}),
                     Node("n", "IF", {"r": np.ones((1, 4, 4)), "v_threshold": np.ones((1, 4, 4))}),
                     Node("out", "Output"), dt=1.0).validate()
    assert any("node 'c2' (Conv2d): reads the analog values of LI 'li' (graded spikes), but target 'speck'" in b
               for b in capability_breaches(li, "speck"))


def test_a_chip_file_can_restrict_capabilities(tmp_path):
    f = tmp_path / "chip.toml"
    f.write_text('name = "edge"\n[capabilities]\nneuron_ops = ["IF"]\nmax_fan_in = 4\nrecurrent = false\n')
    t = get_target(f"fixedpoint:{f}")
    assert t.capabilities.neuron_ops == ("IF",) and t.capabilities.max_fan_in == 4
    assert t.capabilities.sources["max_fan_in"] == "chip.toml: user value"
    with pytest.raises(UnsupportedError, match="node 'fc1' .Linear.: fan-in 8 per neuron exceeds target 'edge' limit 4"):
        quantize(_net(), t)
    f.write_text('[core]\nneurons = 512\n[core_sources]\nneurons = "datasheet rev 2"\nestimate = true\n')
    t = get_target(f"fixedpoint:{f}")
    assert t.core.neurons == 512 and t.core.sources["neurons"] == "datasheet rev 2" and t.core.estimate
    f.write_text('[core_sources]\nneurones = "typo"\n')
    with pytest.raises(FileFormatError, match=r"\[core_sources\] 'neurones' names no \[core\] figure"):
        get_target(f"fixedpoint:{f}")
    f.write_text('[capabilities]\nmax_fan_in = "many"\n')
    with pytest.raises(FileFormatError, match=r"\[capabilities\] max_fan_in must be an integer >= 1, got 'many'"):
        get_target(f"fixedpoint:{f}")


# ---- the command ------------------------------------------------------------------------------------

def _sd(*args):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SPIKEDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikedeploy", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_compare_prints_one_row_per_chip_and_writes_html(tmp_path):
    from spikedeploy.converters.nir import write_nir

    nir, x, y, html = tmp_path / "g.nir", tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "c.html"
    write_nir(_net(), nir)
    np.save(x, (np.random.default_rng(1).random((10, 3, 8)) < 0.4).astype(np.float32))
    np.save(y, np.array([0, 1, 2]))
    chip = tmp_path / "edge.toml"
    chip.write_text('name = "edge"\n[numeric]\nstate_bits = 12\nweight_bits = 4\n')
    r = _sd("compare", nir, "--dt", 1, "--targets", f"loihi2,speck,fixedpoint:{chip}", "--input", x,
            "--labels", y, "--html", html, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    rows = {row["target"]: row for row in res["targets"]}
    assert list(rows) == ["loihi2", "speck", "edge"]
    assert rows["loihi2"]["fits"] and rows["edge"]["fits"] and not rows["speck"]["fits"]
    assert rows["edge"]["task"]["arith"] == "edge" and rows["speck"]["task"] is None
    assert "lowers only the synapse ops" in rows["speck"]["why_not"][0]
    text = html.read_text()
    assert "<table>" in text and "speck" in text and "Davies et al." in text
    r = _sd("compare", nir, "--dt", 1, "--targets", "loihi2,nochip")
    assert r.returncode == 1 and "unknown target 'nochip'" in r.stderr and "Traceback" not in r.stderr
    r = _sd("compare", nir, "--dt", 1, "--targets", ",")  # found by the fuzzer: an empty table, exit 0
    assert r.returncode == 1 and r.stderr.strip() == "error: --targets: empty list; give at least one value"
    r = _sd("compare", nir, "--dt", 1, "--labels", y)
    assert r.returncode == 2 and "--labels needs --input" in r.stderr


def test_compare_on_lavadl_pilotnet_runs_the_netx_graph_as_read_on_loihi2_and_requantizes_elsewhere(lavadl_netx_dir):
    from spikedeploy.converters.netx import read_netx

    qg = read_netx(lavadl_netx_dir / "gts" / "pilotnet_lif" / "network.net")
    res = compare_targets(qg, ["loihi2", "loihi1", "speck"], steps=16)
    rows = {r["target"]: r for r in res["targets"]}
    # Loihi 2 runs the file's own integers; its input layer takes a_in directly, which other chips cannot
    assert rows["loihi2"]["fits"] and rows["loihi2"]["rewrites"] == [] and rows["loihi2"]["approximations"] == []
    assert rows["loihi1"]["rewrites"] == ["'input' -> '0.neuron': identity synapse '0.neuron.input_synapse' inserted "
                                          "(the neuron sees its input one step later)"]
    assert not rows["speck"]["fits"] and rows["speck"]["why_not"][0].startswith(
        "node '0.neuron' (CubaLIF): target 'speck' implements only the neuron models IF")
    for r in rows.values():
        assert r["steps"] == 16 and r["latency_s"] == pytest.approx((16 + r["depth"]) * r["time_per_step_s"])
        assert r["throughput_per_s"] == pytest.approx(1 / (16 * r["time_per_step_s"]))


def test_simulate_refuses_a_backend_the_qgraphs_target_does_not_list(toy):
    g = _net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for target in ("toy", "loihi1"):
            qg = quantize(g, target)
            with pytest.raises(SpikeDeployError) as e:
                simulate(qg, {"in": np.zeros((2, 1, 8), np.float32)}, backend="lava")
            assert str(e.value) == (f"backend 'lava' cannot simulate target '{target}' (the QGraph's); it runs on: "
                                    "emulator")


def test_compare_runs_a_given_qgraph_as_it_is_on_its_own_target():
    from spikedeploy.quantize.fidelity import fidelity

    g = _net()
    x = (np.random.default_rng(1).random((10, 3, 8)) < 0.4).astype(np.float32)
    qg = quantize(g, "loihi2", weight_bits=2)  # not what compare's own quantization would choose
    res = compare_targets(qg, ["loihi2", "loihi1"], inputs={"in": x})
    rows = {r["target"]: r for r in res["targets"]}
    want = fidelity(g, qg, {"in": x})["fidelity"]["dice_min"]
    assert rows["loihi2"]["task"]["dice_min"] == want and rows["loihi2"]["rewrites"] == []
    # loihi1 re-quantizes the float graph with its full 8-bit weights
    assert rows["loihi1"]["task"]["dice_min"] == fidelity(g, quantize(g, "loihi1"), {"in": x})["fidelity"]["dice_min"]
    assert rows["loihi1"]["task"]["dice_min"] != want


@pytest.mark.filterwarnings("ignore::UserWarning")  # the toy chip's 10-bit u wraps; the test compares backends
def test_a_backend_registered_by_name_runs_through_simulate_and_is_offered_to_targets(toy):
    """A backend is a name and an entry point: simulate resolves it through the registry, never by import."""
    from dataclasses import replace

    from spikedeploy.targets.backends import Backend, backend_names, get_backend, register_backend

    calls = []

    def counting(qg, inputs, **kw):  # the emulator, counted: the same Run, so the test can check equality
        calls.append(qg.target)
        return simulate_emulator(qg, inputs, **kw)

    sys.modules[__name__].counting = counting
    backend = Backend("counting", f"{__name__}:counting", "the emulator, counted (test)")
    register_backend(backend)
    with pytest.raises(SpikeDeployError, match="backend name 'lava' is a built-in backend's"):
        register_backend(replace(backend, name="lava"))
    register_target(replace(TOY, name="toy2", simulators=("emulator", "counting")))
    try:
        assert "counting" in backend_names() and get_backend("counting") == backend
        qg = quantize(_net(), "toy2")
        x = {"in": (np.random.default_rng(2).random((6, 2, 8)) < 0.5).astype(np.float32)}
        a = simulate(qg, x, backend="counting")
        b = simulate(qg, x, backend="emulator")
        assert calls == ["toy2"] and a.counts.keys() == b.counts.keys()
        assert all(np.array_equal(a.counts[k], b.counts[k]) for k in a.counts)
        with pytest.raises(SpikeDeployError) as e:
            simulate(quantize(_net(), "toy"), x, backend="counting")  # toy lists the emulator only
        assert "backend 'counting' cannot simulate target 'toy'" in str(e.value)
        with pytest.raises(SpikeDeployError, match=r"unknown backend 'nope'; choose one of float, emulator, lava"):
            simulate(qg, x, backend="nope")
    finally:
        unregister_target("toy2")
        from spikedeploy.targets import backends

        backends._BACKENDS.pop("counting", None)


def test_the_core_and_the_converters_import_no_backend_internals():
    """spikedeploy/ and converters/ reach backends only through targets/backends.py (by name)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    banned = ("spikedeploy.targets.emulator", "spikedeploy.targets.lava", "lava")
    found = []
    for f in [*root.joinpath("spikedeploy").rglob("*.py"), *root.joinpath("converters").rglob("*.py")]:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{f.relative_to(root)}: {n}" for n in names
                      if any(n == b or n.startswith(b + ".") for b in banned)]
    assert found == []
