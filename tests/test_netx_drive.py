"""lava-dl's bias-driven netx networks run from the CLI alone (`simulate --input-bias --reset-interval`), and
reproduce lava-dl 0.6.0's recordings: tiny.net's output (gts/tinynet/output.npy, steps 2..16) and every
recorded pilotnet_lif layer's spikes per step (gts/pilotnet_lif/*.npy, from the run file's counts).
The recordings' conventions are in tests/test_emulator_vs_lavadl.py and tests/test_lavadl_lif_blocks.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from spikedeploy.cli.main import cli
from spikedeploy.simulate.result import load_run


def _t_first(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.asarray(a), -1, 0)


def simulate(*args) -> dict:
    res = CliRunner().invoke(cli, ["simulate", *map(str, args), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_tiny_net_from_the_cli(lavadl_netx_dir, tmp_path):
    gts = lavadl_netx_dir / "gts" / "tinynet"
    out = simulate(lavadl_netx_dir / "tiny.net", "--input-bias", gts / "input_bias.npy", "--reset-interval", 17,
                   "--steps", 20, "-o", tmp_path / "run.npz")
    assert any("driven by the bias image" in n for n in out["notes"]) and out["spikes"]["input"] == 0
    gt = _t_first(np.load(gts / "output.npy")[0])[1:]
    run = load_run(tmp_path / "run.npz")
    assert gt.sum() > 50
    np.testing.assert_array_equal(run.outputs["output"][2:17, 0].reshape(gt.shape), gt)
    # without the resets the network drifts from the recording (the option is what makes it match)
    simulate(lavadl_netx_dir / "tiny.net", "--input-bias", gts / "input_bias.npy", "--steps", 20,
             "-o", tmp_path / "free.npz")
    free = load_run(tmp_path / "free.npz").outputs["output"][2:17, 0].reshape(gt.shape)
    assert not np.array_equal(free, gt)


def test_pilotnet_lif_layers_from_the_cli(lavadl_netx_dir, tmp_path):
    d = lavadl_netx_dir / "gts" / "pilotnet_lif"
    steps = np.load(d / "input.npy").shape[-1]
    simulate(d / "network.net", "--input-bias", d / "image.npy", "--reset-interval", 17, "--steps", steps,
             "-o", tmp_path / "run.npz")
    run = load_run(tmp_path / "run.npz")
    from spikedeploy.converters.netx import read_netx

    g = read_netx(d / "network.net").graph
    neurons = [n for n in g.order()[0] if g.nodes[n].spec.family == "neuron"]
    names = ["input", "conv-0", "conv-1", "conv-2", "conv-3", "conv-4", "fc-0", "fc-1", "fc-2"]
    for n, name in zip(neurons, names, strict=False):
        gt = _t_first(np.load(d / f"{name}.npy"))
        per_step = np.count_nonzero(gt.reshape(gt.shape[0], -1), axis=1)
        assert per_step.sum() > 0, name
        np.testing.assert_array_equal(run.counts[n][:, 0], per_step, err_msg=name)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((5, 5)), r"shape \(5, 5\) fits neither layer '0.neuron' \(\(3, 16, 16\), CHW\) nor"),
    (np.full((3, 16, 16), 0.5), "bias mantissas must be integers"),
    (np.full((3, 16, 16), 70000), "exceed Lava's int16 range"),
])
def test_bad_bias_images_are_refused_in_one_line(lavadl_netx_dir, tmp_path, bad, message):
    np.save(tmp_path / "bad.npy", bad)
    r = subprocess.run([sys.executable, "-m", "spikedeploy", "simulate", str(lavadl_netx_dir / "tiny.net"),
                        "--input-bias", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "r.npz")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "r.npz").exists()
