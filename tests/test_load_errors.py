"""Bad inputs to load_graph: each is a SpikeDeployError subclass with a one-line message naming the file/node."""

import h5py
import numpy as np
import pytest

from spikedeploy.errors import FileFormatError, GraphError, ParameterError, ShapeError, SpikeDeployError
from spikedeploy.io.graph_files import load_any, load_graph, save_graph


def expect(exc, path, *needles):
    with pytest.raises(exc) as ei:
        load_graph(path)
    msg = str(ei.value)
    assert isinstance(ei.value, SpikeDeployError)
    assert "\n" not in msg, msg
    assert path.name in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def write_nir_raw(path, nodes: dict, edges: list):
    """A NIR file written with h5py alone, so it can hold what nir's own classes would refuse."""
    with h5py.File(path, "w") as f:
        f.create_dataset("version", data="1.0.8", dtype=h5py.string_dtype())
        g = f.create_group("node")
        g.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
        g.create_dataset("edges", data=np.array(edges, dtype=object), dtype=h5py.string_dtype())
        ng = g.create_group("nodes")
        for name, fields in nodes.items():
            n = ng.create_group(name)
            for k, v in fields.items():
                if isinstance(v, str):
                    n.create_dataset(k, data=v, dtype=h5py.string_dtype())
                else:
                    n.create_dataset(k, data=v)


def chain(lif: dict, weight=None):
    w = np.ones((3, 2)) if weight is None else weight
    return ({"input": {"type": "Input", "shape": np.array([2])},
             "fc": {"type": "Linear", "weight": w},
             "lif": {"type": "LIF", **lif},
             "output": {"type": "Output", "shape": np.array([3])}},
            [["input", "fc"], ["fc", "lif"], ["lif", "output"]])


GOOD_LIF = {"tau": np.full(3, 0.01), "r": np.ones(3), "v_leak": np.zeros(3), "v_threshold": np.ones(3)}


def test_good_raw_file_loads(tmp_path):
    """The writer below is sound: the unmodified chain loads; each test then breaks one thing."""
    p = tmp_path / "ok.nir"
    write_nir_raw(p, *chain(GOOD_LIF))
    g = load_graph(p)
    assert list(g.nodes) == ["fc", "input", "lif", "output"] and g.stats()["total"]["neurons"] == 3


def test_missing_file(tmp_path):
    expect(FileFormatError, tmp_path / "nope.nir", "no such file")


def test_directory(tmp_path):
    d = tmp_path / "dir.nir"
    d.mkdir()
    expect(FileFormatError, d, "directory")


def test_empty_and_random_bytes(tmp_path):
    p = tmp_path / "empty.nir"
    p.write_bytes(b"")
    expect(FileFormatError, p, "empty")
    p = tmp_path / "noise.nir"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    expect(FileFormatError, p, "not an HDF5 file")


@pytest.mark.parametrize("frac", [0.5, 0.9])
def test_truncated_nir(tmp_path, fixtures_dir, frac):
    src = (fixtures_dir / "nir-paper" / "cnn_sinabs.nir").read_bytes()
    p = tmp_path / "cut.nir"
    p.write_bytes(src[: int(len(src) * frac)])
    expect(FileFormatError, p, "truncated or corrupt")


def test_hdf5_neither_nir_nor_netx(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("data", data=np.arange(3))
    expect(FileFormatError, p, "neither NIR", "netx", "data")


def test_unknown_node_type(tmp_path):
    nodes, edges = chain(GOOD_LIF)
    nodes["lif"]["type"] = "Izhikevich"
    p = tmp_path / "unk.nir"
    write_nir_raw(p, nodes, edges)
    expect(GraphError, p, "'lif'", "Izhikevich")


def test_nan_parameter(tmp_path):
    p = tmp_path / "nan.nir"
    write_nir_raw(p, *chain({**GOOD_LIF, "v_threshold": np.array([1.0, np.nan, 1.0])}))
    expect(ParameterError, p, "'lif'", "v_threshold", "NaN")


def test_tau_not_positive(tmp_path):
    p = tmp_path / "tau.nir"
    write_nir_raw(p, *chain({**GOOD_LIF, "tau": np.array([0.01, 0.0, -1.0])}))
    expect(ParameterError, p, "'lif'", "tau", "> 0")


def test_mismatched_shapes(tmp_path):
    p = tmp_path / "shape.nir"
    write_nir_raw(p, *chain(GOOD_LIF, weight=np.ones((3, 5))))  # Input gives 2, weight takes 5
    expect(ShapeError, p, "'fc'", "5")
    p = tmp_path / "pshape.nir"
    write_nir_raw(p, *chain({**GOOD_LIF, "r": np.ones(4)}))  # neuron parameters of different sizes
    expect(ParameterError, p, "'lif'")


def test_edge_to_missing_node_names_it(tmp_path):
    nodes, edges = chain(GOOD_LIF)
    edges = edges + [["lif", "ghost"], ["fc", "phantom"]]
    p = tmp_path / "ghost.nir"
    write_nir_raw(p, nodes, edges)
    expect(FileFormatError, p, "ghost")


def test_missing_parameter(tmp_path):
    lif = dict(GOOD_LIF)
    del lif["tau"]
    p = tmp_path / "miss.nir"
    write_nir_raw(p, *chain(lif))
    expect(FileFormatError, p, "'lif'", "tau")


def test_netx_errors(tmp_path):
    p = tmp_path / "bad.net"
    with h5py.File(p, "w") as f:
        lay = f.create_group("layer")
        l0 = lay.create_group("0")
        l0.create_dataset("type", data=np.array([b"input"], dtype="S10"))
        l0.create_dataset("shape", data=np.array([4]))
        l1 = lay.create_group("1")
        l1.create_dataset("type", data=np.array([b"pool"], dtype="S10"))
    expect(SpikeDeployError, p, "layer 1 (pool)")
    with h5py.File(p, "r+") as f:
        del f["layer/1/type"]
        f["layer/1"].create_dataset("type", data=np.array([b"dense"], dtype="S10"))
        f["layer/1"].create_dataset("shape", data=np.array([3]))
        f["layer/1"].create_dataset("weight", data=np.ones((3, 5)))  # input has 4
    expect(FileFormatError, p, "layer 1 (dense)", "5 inputs")


def test_save_refuses_other_extensions_and_load_any(tmp_path, fixtures_dir):
    g = load_any(fixtures_dir / "nir-paper" / "lif_norse.nir")
    with pytest.raises(FileFormatError, match="x.onnx"):
        save_graph(g, tmp_path / "x.onnx")
    save_graph(g, tmp_path / "x.nir")
    assert [p.name for p in tmp_path.iterdir()] == ["x.nir"]  # no temp files left behind


def test_a_file_that_loops_libhdf5_is_refused_not_hung(tmp_path):
    """Found by the long fuzz run (seed 7, case 21398: lif_norse.nir with flipped bytes): libhdf5 loops in C on
    its damaged heap, where no signal reaches Python; the read runs in a child with a deadline."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    f = Path(__file__).parent / "data" / "heap_loop.nir"
    env = {**os.environ, "SPIKEDEPLOY_HDF5_SECONDS": "3"}
    p = subprocess.run([sys.executable, "-m", "spikedeploy", "inspect", str(f)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f"error: {f}: reading the HDF5 file did not finish in 3 s, so its "
                                              "internal structure is damaged (libhdf5 loops on it); re-export or "
                                              "re-copy it"]
