"""Regression tests for the findings of issue 18: each malformed file or argument is refused in one line that
names the file (and where it can, the node or layer and the field), nothing is overwritten, nothing hangs."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from paths import FIXTURES, REPO
from qgraph_header import read_header, write_with_header

NIR = FIXTURES / "nir-paper" / "two_lif_neurons.nir"
CNN = FIXTURES / "nir-paper" / "cnn_sinabs.nir"
NETX = FIXTURES / "netx" / "nir_docs_network.net"

_spec = importlib.util.spec_from_file_location("fuzz_cli", REPO / "benchmarks" / "fuzz_cli.py")
fuzz_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_cli)


def cli(*args):
    """(outcome, exit code, last error line) of `spikedeploy *args`, in-process, as the fuzzer runs it."""
    import signal

    signal.signal(signal.SIGALRM, fuzz_cli._alarm)
    return fuzz_cli.run_cli([str(a) for a in args], 60)


def refused(*args, needles=()):
    outcome, code, line = cli(*args)
    assert outcome == "refused", (outcome, code, line)
    for n in needles:
        assert str(n) in line, line
    return line


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("edge")
    assert cli("quantize", NIR, "--dt", "1e-3", "-o", d / "g.q.npz")[0] == "success"
    assert cli("simulate", d / "g.q.npz", "--steps", "20", "--batch", "2", "-o", d / "run.npz")[0] == "success"
    assert cli("partition", d / "g.q.npz", "-o", d / "pl.json")[0] == "success"
    assert cli("quantize", CNN, "--dt", "1e-3", "-o", d / "cnn.q.npz")[0] == "success"
    assert cli("simulate", d / "cnn.q.npz", "--steps", "3", "--batch", "1", "-o", d / "cnnrun.npz")[0] == "success"
    assert cli("partition", d / "cnn.q.npz", "-o", d / "cnnpl.json")[0] == "success"
    return d


# ---- outputs: inputs are never destroyed, special files never replaced ----------------------------------------
@pytest.mark.parametrize("cmd", ["simulate", "partition", "report", "quantize"])
def test_output_equal_to_input_is_refused_and_input_survives(work, tmp_path, cmd):
    g = tmp_path / "g.q.npz"
    shutil.copyfile(work / "g.q.npz", g)
    before = g.read_bytes()
    os.link(g, tmp_path / "hard.npz")
    (tmp_path / "soft.npz").symlink_to(g)
    for out in (g, tmp_path / "hard.npz", tmp_path / "soft.npz"):
        args = {"simulate": ["simulate", g, "-o", out], "partition": ["partition", g, "-o", out],
                "report": ["report", g, "--html", out], "quantize": ["quantize", g, "-o", out]}[cmd]
        refused(*args, needles=["same file", str(out)])
    assert g.read_bytes() == before
    n = tmp_path / "m.nir"
    shutil.copyfile(NIR, n)
    refused("quantize", n, "--dt", "1e-3", "-o", n, needles=["same file"])
    assert n.read_bytes() == NIR.read_bytes()


@pytest.mark.parametrize("out", ["/dev/null", "/dev/full", "fifo", "dir"])
def test_special_output_files_are_refused_and_kept(work, tmp_path, out):
    if out == "fifo":
        out = tmp_path / "fifo"
        os.mkfifo(out)
    elif out == "dir":
        out = tmp_path
    if not os.path.exists(out):
        pytest.skip(f"{out} does not exist here")
    mode = os.stat(out).st_mode
    refused("simulate", work / "g.q.npz", "--steps", "3", "-o", out)
    refused("quantize", NIR, "--dt", "1e-3", "-o", out)
    assert os.stat(out).st_mode == mode


def test_unwritable_or_missing_output_directories_and_empty_path(work, tmp_path):
    refused("simulate", work / "g.q.npz", "-o", tmp_path / "missing" / "r.npz", needles=["does not exist"])
    refused("partition", work / "g.q.npz", "-o", "", needles=["empty output path"])
    refused("export", "tests.nowhere:model", "-o", "")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: nothing to refuse
            pytest.skip("running as root")
        refused("simulate", work / "g.q.npz", "-o", ro / "r.npz", needles=["not writable"])
    finally:
        ro.chmod(0o700)


# ---- inputs that would hang or eat memory ----------------------------------------------------------------------
def test_fifo_inputs_are_refused_at_once(work, tmp_path):
    f = tmp_path / "f.nir"
    os.mkfifo(f)
    t = time.time()
    refused("inspect", f, needles=["FIFO"])
    refused("simulate", work / "g.q.npz", "--input", f, needles=["regular file"])
    refused("partition", work / "g.q.npz", "--run", f, needles=["FIFO"])
    refused("report", work / "g.q.npz", "--placement", f, needles=["FIFO"])
    assert time.time() - t < 30


def test_subprocess_fifo_inspect_does_not_hang(tmp_path):
    f = tmp_path / "f.nir"
    os.mkfifo(f)
    r = subprocess.run([sys.executable, "-m", "spikedeploy", "inspect", str(f)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "FIFO" in r.stderr


def test_netx_absurd_input_shape_refused_before_allocating(tmp_path):
    p = tmp_path / "big.net"
    shutil.copyfile(NETX, p)
    with h5py.File(p, "r+") as f:
        del f["layer/0/shape"]
        f["layer/0/shape"] = np.array([10**9])
        del f["layer/0/weight"]
        f["layer/0/weight"] = np.ones((10**9 // 10**6, 1), np.float32)  # size check: 1000 rows, not 1e9
    line = refused("inspect", p)
    assert "big.net" in line


def test_netx_input_layer_shape_of_1e9_is_refused_naming_the_layer(tmp_path):
    from spikedeploy.converters.netx import read_netx
    from spikedeploy.errors import SpikeDeployError

    p = tmp_path / "in.net"
    with h5py.File(p, "w") as f:
        f["layer/0/type"] = np.array([b"input"])
        f["layer/0/shape"] = np.array([10**9])
        f["layer/1/type"] = np.array([b"dense"])
        f["layer/1/shape"] = np.array([2])
        f["layer/1/weight"] = np.ones((2, 3), np.float32)
    t = time.time()
    with pytest.raises(SpikeDeployError, match=r"layer 0 \(input\).*1,000,000,000 elements.*16,777,216"):
        read_netx(p)
    assert time.time() - t < 5


def test_compressed_huge_nir_dataset_refused_before_reading(tmp_path):
    p = tmp_path / "zip.nir"
    shutil.copyfile(NIR, p)
    with h5py.File(p, "r+") as f:
        del f["node/nodes/linear1/weight"]
        f.create_dataset("node/nodes/linear1/weight", shape=(2**17, 2**14), dtype=np.float64, compression="gzip",
                         chunks=(1024, 1024))  # 16 GiB of zeros in a few KB
    assert p.stat().st_size < 10**7
    refused("inspect", p, needles=["GiB", "linear1/weight"])


@pytest.mark.parametrize("args, needle", [
    (["--steps", "-1"], "--steps -1"), (["--steps", "99999999999999"], "--steps 99999999999999"),
    (["--batch", "0"], "--batch 0"), (["--density", "nan"], "--density nan"),
])
def test_bad_run_sizes(work, args, needle):
    refused("simulate", work / "g.q.npz", *args, needles=[needle])


def test_bad_input_arrays(work, tmp_path):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    refused("simulate", work / "g.q.npz", "--input", empty, needles=["empty.npy", "empty"])
    for name, a in {"nan": np.full((4, 2, 1), np.nan), "complex": np.zeros((4, 2, 1), complex),
                    "noT": np.zeros((0, 2, 1)), "text": np.array([["a"]])}.items():
        np.save(tmp_path / f"{name}.npy", a)
        refused("simulate", work / "g.q.npz", "--input", tmp_path / f"{name}.npy")


# ---- companion files ---------------------------------------------------------------------------------------------
def test_run_or_placement_of_another_graph_is_refused(work):
    refused("partition", work / "g.q.npz", "--run", work / "cnnrun.npz", needles=["cnnrun.npz", "another graph"])
    refused("report", work / "g.q.npz", "--run", work / "cnnrun.npz", needles=["cnnrun.npz", "another graph"])
    refused("report", work / "g.q.npz", "--placement", work / "cnnpl.json", needles=["cnnpl.json", "another graph"])
    assert cli("report", work / "g.q.npz", "--run", work / "run.npz", "--placement", work / "pl.json")[0] == "success"


def _rewrite_npz(src, dst, **changes):
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("value", [-1, 1j, np.nan])
def test_negative_complex_or_nan_spike_counts_are_refused(work, tmp_path, value):
    with np.load(work / "run.npz") as z:
        key = next(k for k in z.files if k.startswith("counts/"))
        c = z[key].astype(np.result_type(z[key].dtype, np.asarray(value).dtype))
    c[0, 0] = value
    _rewrite_npz(work / "run.npz", tmp_path / "bad.npz", **{key: c})
    refused("report", work / "g.q.npz", "--run", tmp_path / "bad.npz", needles=["bad.npz", key.split("/", 1)[1]])


def test_run_header_corrupt_or_non_scalar(work, tmp_path):
    _rewrite_npz(work / "run.npz", tmp_path / "a.npz", header=np.frombuffer(b"{oops", np.uint8))
    refused("partition", work / "g.q.npz", "--run", tmp_path / "a.npz", needles=["a.npz"])
    with np.load(work / "run.npz") as z:
        h = json.loads(bytes(z["header"]).decode())
    h["steps"] = [1, 2]
    _rewrite_npz(work / "run.npz", tmp_path / "b.npz", header=np.frombuffer(json.dumps(h).encode(), np.uint8))
    refused("partition", work / "g.q.npz", "--run", tmp_path / "b.npz", needles=["b.npz"])


def test_empty_or_malformed_placement(work, tmp_path):
    p = tmp_path / "p.json"
    p.write_text("")
    refused("report", work / "g.q.npz", "--placement", p, needles=["p.json"])
    saved = json.loads((work / "pl.json").read_text())
    saved["layers"]["lif1"] = "NaN"
    p.write_text(json.dumps(saved))
    refused("report", work / "g.q.npz", "--placement", p, needles=["p.json", "lif1"])


# ---- quantized graph files -------------------------------------------------------------------------------------------
def _qheader(work):
    return read_header(work / "g.q.npz")


def test_qgraph_corrupt_header_and_non_string_names(work, tmp_path):
    h, arrays = _qheader(work)
    arrays["__header__"] = np.frombuffer(b"{not json", np.uint8)
    with open(tmp_path / "a.q.npz", "wb") as f:
        np.savez(f, **arrays)
    refused("inspect", tmp_path / "a.q.npz", needles=["a.q.npz"])
    h, arrays = _qheader(work)
    h["graph"]["nodes"][0]["name"] = 7
    write_with_header(arrays, h, tmp_path / "b.q.npz")
    refused("inspect", tmp_path / "b.q.npz", needles=["b.q.npz", "node 0"])


@pytest.mark.parametrize("kind", ["nan", "complex", "empty", "text"])
def test_qgraph_bad_quantized_weights(work, tmp_path, kind):
    h, arrays = _qheader(work)
    key = h["q"]["linear1"]["weight"]["__array__"]
    a = arrays[key]
    arrays[key] = {"nan": np.full(a.shape, np.nan), "complex": a.astype(complex) + 1j, "empty": a.ravel()[:0],
                   "text": np.array(["x"] * a.size).reshape(a.shape)}[kind]
    write_with_header(arrays, h, tmp_path / "w.q.npz")
    refused("simulate", tmp_path / "w.q.npz", "--steps", "3", needles=["w.q.npz", "linear1"])


# ---- NIR files ------------------------------------------------------------------------------------------------------
def _nir(tmp_path, edit, src=NIR):
    p = tmp_path / "m.nir"
    shutil.copyfile(src, p)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


def _replace(f, name, value):
    del f[name]
    f[name] = value


@pytest.mark.parametrize("value, needle", [
    (np.array([[np.nan]]), "non-finite"), (np.array([[np.inf]]), "non-finite"), (np.array([[1 + 2j]]), "complex"),
    (np.zeros((0,)), "empty"), (np.ones((1, 1, 1, 1, 1, 1, 1, 1)), "dimensions"),
])
def test_nir_bad_weights(tmp_path, value, needle):
    p = _nir(tmp_path, lambda f: _replace(f, "node/nodes/linear1/weight", value))
    refused("inspect", p, needles=["m.nir", needle])


def test_nir_input_with_empty_shape_and_edge_into_input(tmp_path):
    p = _nir(tmp_path, lambda f: _replace(f, "node/nodes/in/shape", np.zeros((0,), np.int64)))
    refused("inspect", p, needles=["m.nir", "empty"])

    def edge_into_input(f):
        e = [[a.decode() if isinstance(a, bytes) else a for a in row] for row in f["node/edges"][()]]
        del f["node/edges"]
        f["node/edges"] = np.array(e + [["lif1", "in"]], dtype=h5py.string_dtype())
    refused("inspect", _nir(tmp_path, edge_into_input), needles=["in"])


def test_nir_string_parameter_and_zero_stride(tmp_path):
    p = _nir(tmp_path, lambda f: _replace(f, "node/nodes/lif1/tau", "nope"))
    refused("inspect", p, needles=["m.nir", "lif1"])
    conv = next(k for k in h5py.File(CNN)["node/nodes"] if "stride" in h5py.File(CNN)[f"node/nodes/{k}"])
    p = _nir(tmp_path, lambda f: _replace(f, f"node/nodes/{conv}/stride", np.array([0, 0])), src=CNN)
    refused("inspect", p, needles=["m.nir", "stride"])


def test_affine_and_conv_bias_of_wrong_length_and_groups_pair():
    from spikedeploy.errors import ParameterError
    from spikedeploy.graph.ir import Graph, Node

    def graph(node, shape):
        return Graph.chain(Node("in", "Input", params={"shape": np.array(shape)}), node, Node("out", "Output"))

    with pytest.raises(ParameterError, match=r"node 'a' \(Affine\): bias has 3 values .* 2 outputs"):
        graph(Node("a", "Affine", params={"weight": np.ones((2, 4)), "bias": np.ones(3)}), [4]).validate()
    with pytest.raises(ParameterError, match=r"node .c. \(Conv1d\): bias has 5 values"):
        graph(Node("c", "Conv1d", params={"weight": np.ones((2, 1, 3)), "bias": np.ones(5)}), [1, 8]).validate()
    with pytest.raises(ParameterError, match=r"node 'c' \(Conv2d\): 'groups' is \[1, 1\]"):
        graph(Node("c", "Conv2d", params={"weight": np.ones((2, 1, 3, 3)), "groups": np.array([1, 1])}),
              [1, 8, 8]).validate()


# ---- netx files -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, value, needle", [
    ("layer/0/neuron/iDecay", np.inf, "iDecay"), ("layer/0/neuron/iDecay", -1, "iDecay"),
    ("layer/0/neuron/vThMant", "nope", "vThMant"), ("layer/1/weight", np.full((256, 200), np.nan, np.float32), "weight"),
    ("layer/1/weight", np.ones(3, np.float32), "weight"), ("layer/0/delay", np.ones((1,) * 8), "delay"),
    ("layer/0/weight", np.zeros((256, 200), np.complex64), "weight"),
])
def test_netx_bad_layer_values(tmp_path, name, value, needle):
    p = tmp_path / "n.net"
    shutil.copyfile(NETX, p)
    with h5py.File(p, "r+") as f:
        if name in f:
            del f[name]
        f[name] = value
    refused("inspect", p, needles=["n.net", "layer", needle])


# ---- chip files -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, needle", [
    ("[numeric]\nweight_bits = 'x'\n", "weight_bits"), ("numeric = 3\n", "[numeric]"),
    ("[energy]\nsynop = nan\n", "synop"), ("[core]\nneurons = 100000000000000000000\n", "neurons"),
    ("max_chips = 0\n", "max_chips"),
])
def test_bad_chip_files(work, tmp_path, text, needle):
    t = tmp_path / "chip.toml"
    t.write_text(text)
    refused("partition", work / "g.q.npz", "--target", t, needles=["chip.toml", needle])


DELETED = object()


@pytest.mark.parametrize("path, value, needle", [
    (("graph", "dt"), 10**29, "dt"), (("deviations",), 1.5, "deviations"),
    (("q", "linear2", "num_weight_bits"), [1, 2], "num_weight_bits"),
    (("deviations",), DELETED, "deviations"),  # seed 7, case 44,537
    (("q", "lif1", "bias_onset"), [1, 2], "bias_onset"),  # seed 7, case 67,600
    (("q", "linear1", "delay"), [1, 2], "delay"),  # seed 7, case 7,929 (after typed parameters)
    (("q", "linear1", "delay"), [[-1]], "delay"),
])
def test_qgraph_header_values_found_by_the_long_fuzz_run(work, tmp_path, path, value, needle):
    h, arrays = _qheader(work)
    d = h
    for k in path[:-1]:
        d = d[k]
    if value is DELETED:
        del d[path[-1]]
    else:
        d[path[-1]] = value
    write_with_header(arrays, h, tmp_path / "h.q.npz")
    refused("inspect", tmp_path / "h.q.npz", needles=["h.q.npz", needle])


def test_hdf5_name_that_is_not_text_found_by_the_long_fuzz_run():
    """Seed 7, case 40,075: flipped bytes in a NIR file's top-level name table; h5py lists that name as bytes
    beside the str names, and the file is neither NIR nor netx."""
    f = REPO / "tests" / "data" / "bytes_name.nir"
    refused("simulate", f, "--backend", "float", "--dt", "1e-3", "--steps", "4", "--batch", "2",
            needles=["bytes_name.nir", "neither NIR"])
