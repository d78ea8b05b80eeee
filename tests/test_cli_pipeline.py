"""export → quantize → simulate → partition → report through the CLI, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from paths import REPO

HELPERS = Path(__file__).resolve().parent / "helpers"


def sd(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "160", "PYTHONPATH": str(HELPERS)}
    env.pop("SPIKEDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikedeploy", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=cwd or REPO)


@pytest.fixture(scope="module")
def small_nir(tmp_path_factory):
    from spikedeploy.converters.nir import write_nir
    from spikedeploy.graph.ir import Graph, Node

    rng = np.random.default_rng(1)
    g = Graph.chain(
        Node("in", "Input", {"shape": [24]}),
        Node("fc1", "Affine", {"weight": rng.normal(0, 0.6, (16, 24)), "bias": np.zeros(16)}),
        Node("lif1", "LIF", {"tau": np.full(16, 0.01), "r": np.ones(16), "v_leak": np.zeros(16),
                             "v_threshold": np.full(16, 0.5)}),
        Node("fc2", "Affine", {"weight": rng.normal(0, 0.8, (6, 16)), "bias": np.zeros(6)}),
        Node("lif2", "LIF", {"tau": np.full(6, 0.01), "r": np.ones(6), "v_leak": np.zeros(6),
                             "v_threshold": np.full(6, 0.5)}),
        Node("out", "Output"), dt=1e-3)
    p = tmp_path_factory.mktemp("cli") / "small.nir"
    write_nir(g, p)
    return p


def test_quantize_simulate_partition_report(small_nir, tmp_path):
    q = tmp_path / "q.npz"
    r = sd("quantize", small_nir, "--target", "loihi2", "-o", q, "--json")
    assert r.returncode == 0, r.stderr
    fid = json.loads(r.stdout)["fidelity"]
    (tmp_path / "q.json").write_text(r.stdout)
    assert set(fid["layers"]) == {"lif1", "lif2"} and (fid["input_steps"], fid["depth"], fid["steps"]) == (50, 2, 52)
    assert fid["arith"] == "loihi2" and all(0 <= r["dice"] <= 1 for r in fid["layers"].values())

    x = (np.random.default_rng(0).random((30, 4, 24)) < 0.2).astype(np.float32)
    xp = tmp_path / "x.npy"
    np.save(xp, x)
    runs = {}
    for backend in ("emulator", "lava"):
        rp = tmp_path / f"{backend}.npz"
        r = sd("simulate", q, "--backend", backend, "--input", f"in={xp}", "-o", rp, "--json")
        assert r.returncode == 0, r.stderr
        runs[backend] = json.loads(r.stdout)
        z = np.load(rp)
        assert z["out/out"].shape[:2] == (30, 4) and z["counts/lif1"].shape == (30, 4)
    assert runs["emulator"]["spikes"] == runs["lava"]["spikes"]  # bit-exact backends agree through the CLI
    assert runs["emulator"]["spikes"]["in"] == int(x.sum())

    pl = tmp_path / "pl.json"
    r = sd("partition", q, "--run", tmp_path / "emulator.npz", "-o", pl, "--json")
    assert r.returncode == 0, r.stderr
    placed = json.loads(r.stdout)
    assert placed["cores_used"] >= placed["cores_lower_bound"] >= 1

    html = tmp_path / "r.html"
    r = sd("report", q, "--run", tmp_path / "emulator.npz", "--placement", pl, "--html", html, "--json",
           "--fidelity", tmp_path / "q.json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["fidelity"]["dice_min"] == fid["dice_min"]
    # a fidelity file of the old shape (same-bin agreement, empty bins counted) is refused in one line
    (tmp_path / "old.json").write_text(json.dumps({"fidelity": {"layers": {}, "spike_agreement": 0.93}}))
    r = sd("report", q, "--fidelity", tmp_path / "old.json")
    assert r.returncode == 1 and "no 'dice_min'" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for key in ("cores_used", "cores_lower_bound", "chips", "energy_per_inference_j", "latency_per_inference_s",
                "synops_per_inference", "spikes_per_inference", "traffic", "assumptions"):
        assert key in rep
    assert rep["spikes_per_inference"] == pytest.approx(runs["emulator"]["spikes"]["lif1"] / 4
                                                        + runs["emulator"]["spikes"]["lif2"] / 4)
    assert html.read_text().startswith("<!DOCTYPE html>") or "<html" in html.read_text()[:200]


def test_partition_too_small_system_is_one_line(small_nir):
    r = sd("partition", small_nir, "--target", "loihi2", "--max-cores", "0")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1


def test_export_entry_point_then_inspect(tmp_path):
    out = tmp_path / "m.nir"
    r = sd("export", "tiny_models:two_layer", "--input-shape", "input=12", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["neurons"] == 20 and out.exists()
    r = sd("inspect", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"]["neurons"] == 20


def test_export_refuses_no_reset_and_writes_nothing(tmp_path):
    out = tmp_path / "m.nir"
    r = sd("export", "tiny_models:no_reset", "--input-shape", "input=12", "-o", out)
    assert r.returncode == 1, r.stderr
    assert "reset_mechanism='none'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_snntorch_defaults_go_through_the_cli(tmp_path):
    """snn.Leaky(beta=0.9) as snnTorch builds it (subtract, reset_delay=True): export, quantize, simulate."""
    out, q = tmp_path / "m.nir", tmp_path / "m.q.npz"
    r = sd("export", "tiny_models:snntorch_defaults", "--input-shape", "input=12", "-o", out)
    assert r.returncode == 0, r.stderr
    from spikedeploy.io.graph_files import load_graph

    g = load_graph(out)
    assert {(v.meta["reset"], v.meta["reset_delay"]) for v in g.nodes.values() if v.op == "LIF"} == {("subtract", True)}
    r = sd("quantize", out, "-o", q)
    assert r.returncode == 0, r.stderr
    x = (np.random.default_rng(1).random((25, 2, 12)) < 0.5).astype(np.float32)
    xp = tmp_path / "x.npy"
    np.save(xp, x)
    spikes = {}
    for backend in ("emulator", "lava"):
        r = sd("simulate", q, "--backend", backend, "--input", f"input={xp}", "-o", tmp_path / f"{backend}.npz",
               "--json")
        assert r.returncode == 0, r.stderr
        spikes[backend] = json.loads(r.stdout)["spikes"]
    assert spikes["emulator"] == spikes["lava"] and spikes["emulator"]["1"] > 0
