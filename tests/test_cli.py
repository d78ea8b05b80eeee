"""The CLI as a user meets it: exit codes, one-line errors naming the file, --json everywhere."""

import json
import os
import subprocess
import sys

import pytest
from paths import SHARED

NIR_FIXTURES = sorted((SHARED / "fixtures" / "nir-paper").glob("*.nir"))


def sd(*args, check=None):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SPIKEDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikedeploy", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def _one_error_line(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_version_and_help():
    r = sd("--version")
    assert r.returncode == 0 and "spikedeploy" in r.stdout
    r = sd("--help")
    for cmd in ("export", "quantize", "partition", "simulate", "report", "inspect", "targets", "doctor"):
        assert cmd in r.stdout


def test_usage_error_exits_2():
    r = sd("inspect", "--no-such-option")
    assert r.returncode == 2


def test_missing_file(tmp_path):
    p = tmp_path / "nope.nir"
    _one_error_line(sd("inspect", p), "nope.nir")


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.nir"
    p.write_bytes(os.urandom(4096))
    _one_error_line(sd("inspect", p), "noise.nir")


def test_truncated_nir(tmp_path):
    src = SHARED / "fixtures" / "nir-paper" / "cnn_sinabs.nir"
    p = tmp_path / "cut.nir"
    data = src.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _one_error_line(sd("inspect", p), "cut.nir")


def test_hdf5_neither_nir_nor_netx(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["something"] = [1, 2, 3]
    _one_error_line(sd("inspect", p), "other.h5")


@pytest.mark.parametrize("path", NIR_FIXTURES, ids=lambda p: p.name)
def test_inspect_json_every_nir_fixture(path):
    r = sd("inspect", path, "--json")
    if r.returncode == 0:
        info = json.loads(r.stdout)
        assert info["total"]["neurons"] > 0
        assert info["inputs"] and info["outputs"]
    else:
        _one_error_line(r, path.name)


LAVADL_NETS = ["tiny.net", "mnist.net", "gts/ntidigits/ntidigits.net", "gts/pilotnet_lif/network.net",
               "gts/pilotnet_sdnn/network.net"]


@pytest.mark.parametrize("rel", LAVADL_NETS)
def test_inspect_json_lavadl_nets(rel, lavadl_netx_dir):
    """Each of lava-dl's own networks loads with counts, or is refused in one line naming the file and layer."""
    path = lavadl_netx_dir / rel
    r = sd("inspect", path, "--json")
    if r.returncode == 0:
        info = json.loads(r.stdout)
        assert info["total"]["neurons"] > 0 and info["total"]["synapses"] > 0
        assert info["format"].startswith("netx") or "loihi2" in info["format"]
    else:
        _one_error_line(r, path.name, "layer")


def test_netx_layers_reads_ntidigits_from_the_command_line(lavadl_netx_dir, tmp_path):
    """ntidigits ends in an average layer netx cannot run: refused with the fix named, read with
    --netx-layers 5 (the layers lava-dl's own test runs) by inspect and simulate; other formats refuse it."""
    path = lavadl_netx_dir / "gts" / "ntidigits" / "ntidigits.net"
    _one_error_line(sd("inspect", path, "--json"), "average", "--netx-layers 5")
    r = sd("inspect", path, "--netx-layers", "5", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["total"]["neurons"] > 0
    r = sd("simulate", path, "--netx-layers", "5", "--steps", "50", "--batch", "1", "-o", tmp_path / "run.npz", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spikes"]["input"] > 0 and (tmp_path / "run.npz").exists()
    _one_error_line(sd("inspect", SHARED / "fixtures" / "nir-paper" / "two_lif_neurons.nir", "--netx-layers", "2"),
                    "two_lif_neurons.nir", "not a lava-dl netx file")


def test_inspect_table_shows_chip_host_split():
    r = sd("inspect", SHARED / "fixtures" / "nir-paper" / "two_lif_neurons.nir")
    assert r.returncode == 0, r.stderr
    assert "chip" in r.stdout and "total" in r.stdout


def test_targets_json_has_sources():
    r = sd("targets", "--json")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    assert t["loihi2"]["numeric"]["weight_bits"] == 8
    assert all(v["source"] for v in t["loihi2"]["energy"].values())


def test_doctor_reports_lava_runs_and_netx_imports():
    r = sd("doctor", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["lava_runs"]["ok"] and d["lava_runs"]["output_spikes"] > 0
    assert d["netx_imports"]["ok"]


def test_simulate_json_imports_only_what_it_uses(tmp_path):
    """Start-up is part of every command's time: rich (the tables), torch, onnx, h5py and the report modules
    stay unimported for `simulate --input X.npy --json` on a quantized graph (what the CLI speed benchmark runs)."""
    import numpy as np
    from random_qgraphs import dense_chain

    from spikedeploy.io.qgraph_file import save_qgraph

    qg, x, _ = dense_chain(3, steps=10, batch=4, sizes=[16, 12, 6])
    save_qgraph(qg, tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", x["in"].astype(np.float32))
    probe = ("import sys\nfrom spikedeploy.cli.main import cli\n"
             "try:\n    cli.main(sys.argv[1:], standalone_mode=False)\nfinally:\n"
             "    print(sorted({m.split('.')[0] if not m.startswith('spikedeploy.') else '.'.join(m.split('.')[:2])"
             " for m in sys.modules}), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", probe, "simulate", "net.npz", "--input", "x.npy", "-o", "run.npz",
                        "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    loaded = set(eval(p.stderr.strip().splitlines()[-1]))  # noqa: S307 - our own child's list
    assert {"numpy", "click", "spikedeploy.simulate"} <= loaded  # the probe sees what was imported
    assert not loaded & {"rich", "torch", "onnx", "onnxruntime", "h5py", "spikedeploy.report", "lava", "nir"}, loaded
