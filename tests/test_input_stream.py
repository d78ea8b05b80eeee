"""Inputs read a chunk of samples at a time give the Run of the whole arrays, bit for bit, from every format
and dtype; a bad value is refused in one line naming the file and the sample."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from random_qgraphs import dense_chain, two_input_net

from spikedeploy.errors import InputError
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.input_stream import check_chunk, open_source, open_sources, simulate_chunks

BATCH = 37  # not a multiple of the chunk, so the last chunk is short


def _same_run(a, b):
    assert (a.backend, a.steps, a.batch) == (b.backend, b.steps, b.batch)
    for got, want in ((a.outputs, b.outputs), (a.counts, b.counts)):
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
    assert sorted(a.traces) == sorted(b.traces)
    for n in b.traces:
        for k in b.traces[n]:
            assert np.array_equal(a.traces[n][k], b.traces[n][k]), (n, k)
    for k in ("u_wraps", "v_saturations", "arith"):
        assert a.meta.get(k) == b.meta.get(k), k


def _write(fmt, x, d):
    """x written as `fmt`; returns the spec that names it."""
    if fmt == "npy":
        np.save(d / "x.npy", x)
        return str(d / "x.npy")
    if fmt in ("npz", "npz-compressed"):
        (np.savez if fmt == "npz" else np.savez_compressed)(d / "x.npz", other=np.zeros(3), spikes=x)
        return f"{d / 'x.npz'}:spikes"
    if fmt == "h5":
        with h5py.File(d / "x.h5", "w") as f:
            f.create_dataset("data/spikes", data=x, chunks=(x.shape[0], 4, *x.shape[2:]))
        return f"{d / 'x.h5'}:/data/spikes"
    if fmt == "dir":  # uneven shards, so chunks straddle shard boundaries
        (d / "shards").mkdir()
        for i, (b0, b1) in enumerate(((0, 5), (5, 6), (6, 30), (30, BATCH))):
            np.save(d / "shards" / f"part{i:02d}.npy", x[:, b0:b1])
        return str(d / "shards")
    raise AssertionError(fmt)


DTYPES = {
    "bool": lambda s: s.astype(bool),
    "uint8": lambda s: s.astype(np.uint8),
    "int32": lambda s: s.astype(np.int32),
    "float32": lambda s: s.astype(np.float32),
}


@pytest.mark.parametrize("fmt", ["npy", "npz", "npz-compressed", "h5", "dir"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_chunked_files_give_the_whole_arrays_run(tmp_path, fmt, dtype):
    qg, x, _ = dense_chain(3, steps=20, batch=BATCH, sizes=[16, 12, 6])
    x = DTYPES[dtype](x["in"])
    want = simulate(qg, {"in": x}, probes=["lif0"])
    spec = _write(fmt, x, tmp_path)
    srcs = open_sources({"in": spec})
    got = simulate_chunks(qg, srcs, chunk=8, probes=["lif0"])
    _same_run(got, want)
    assert srcs["in"].dtype == x.dtype and srcs["in"].shape == x.shape


@pytest.mark.parametrize("fmt", ["npy", "h5", "dir"])
def test_graded_integer_inputs_chunked(tmp_path, fmt):
    qg, x, _ = dense_chain(5, steps=16, batch=BATCH, sizes=[10, 8, 4], graded=True)
    x = x["in"].astype(np.float32)
    assert x.max() > 1  # graded payloads, not spikes
    want = simulate(qg, {"in": x})
    got = simulate(qg, {"in": _write(fmt, x, tmp_path)})  # the API takes file specs as inputs
    _same_run(got, want)


def test_float_backend_chunked_keeps_real_values(tmp_path):
    qg, x, _ = dense_chain(7, steps=12, batch=BATCH, sizes=[10, 8, 4])
    x = (x["in"] * np.random.default_rng(0).uniform(0.2, 1.7, x["in"].shape)).astype(np.float32)
    want = simulate(qg.graph, {"in": x}, backend="float")
    got = simulate_chunks(qg.graph, open_sources({"in": _write("npy", x, tmp_path)}), chunk=5, backend="float")
    _same_run(got, want)


def test_float_graph_on_fixed_point_is_quantized_once_and_noted(tmp_path):
    qg, x, _ = dense_chain(7, steps=12, batch=BATCH, sizes=[10, 8, 4], cuba=False)
    qg.graph.dt = 5e-3  # tau = 10 s must stay within 4096 steps for the decay to quantize
    want = simulate(qg.graph, x)
    got = simulate_chunks(qg.graph, open_sources({"in": _write("npy", x["in"], tmp_path)}), chunk=6)
    _same_run(got, want)
    assert got.meta["notes"] == want.meta["notes"] and "quantized" in got.meta["notes"][0]


def test_two_inputs_chunked(tmp_path):
    qg, x, _ = two_input_net(2, steps=14, batch=BATCH)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    specs = {"img": _write("npy", x["img"].astype(np.float32), tmp_path / "a"),
             "seq": _write("h5", x["seq"], tmp_path / "b")}
    _same_run(simulate_chunks(qg, open_sources(specs), chunk=4), simulate(qg, x))


def test_a_chunk_is_read_not_the_whole_file(tmp_path):
    x = np.arange(3 * 1000 * 5, dtype=np.float32).reshape(3, 1000, 5)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    for spec in ("x.npy", "x.npz"):
        src = open_source(str(tmp_path / spec))
        part = src.read(10, 20)
        assert np.array_equal(part, x[:, 10:20])
        assert not part.flags.owndata and not part.flags.writeable  # a view of the read-only mapping
        src.close()


def test_integer_chunks_are_read_into_their_own_array_without_mapping_the_file(tmp_path):
    x = (np.arange(4 * 1000 * 6).reshape(4, 1000, 6) % 7).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    for spec in ("x.npy", "x.npz"):
        src = open_source(str(tmp_path / spec))
        for b0, b1 in ((0, 1), (10, 20), (990, 1000), (5, 5)):
            part = src.read(b0, b1)
            assert np.array_equal(part, x[:, b0:b1]) and part.dtype == np.uint8
            assert part.flags.owndata and part.flags.writeable  # no copy needed for the backends
        src.close()


@pytest.mark.parametrize("fmt", ["npy", "h5", "dir"])
@pytest.mark.parametrize("bad, what", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                       (2.5, "not integers")])
def test_bad_value_names_file_and_sample(tmp_path, fmt, bad, what):
    qg, x, _ = dense_chain(3, steps=10, batch=BATCH, sizes=[16, 12, 6])
    x = x["in"].astype(np.float32)
    x[4, 33, 2] = bad  # sample 33 lies in the fifth chunk of 8 and in the last file of "dir"
    spec = _write(fmt, x, tmp_path)
    with pytest.raises(InputError) as e:
        simulate_chunks(qg, open_sources({"in": spec}), chunk=8)
    msg = str(e.value)
    assert "\n" not in msg and "sample 33" in msg and "step 4" in msg and what in msg
    assert ("part03.npy" if fmt == "dir" else os.path.basename(spec.split(":")[0])) in msg


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
def test_float_spikes_become_the_same_int8_with_or_without_the_kernel(tmp_path, monkeypatch, compiled):
    from spikedeploy.targets import backends

    if not compiled:  # as where kernels.c is not built
        monkeypatch.setattr(backends, "as_int8_kernel", lambda: lambda x, out: None)
    qg, x, _ = dense_chain(3, steps=10, batch=BATCH, sizes=[16, 12, 6])
    x = x["in"].astype(np.float64) * np.where(np.arange(16) % 3, 1, -128)  # -128, 0 and 1
    src = open_source(_write("npy", x, tmp_path))
    got = check_chunk(src, src.read(8, 16), 8, integers=True)
    assert got.dtype == np.int8 and np.array_equal(got, x[:, 8:16]) and got.min() == -128
    x[2, 9, 5] = 0.5
    src = open_source(_write("npy", x, tmp_path))
    with pytest.raises(InputError, match="sample 9 .*step 2 holds values that are not integers"):
        check_chunk(src, src.read(8, 16), 8, integers=True)


def test_graded_values_are_refused_where_a_program_takes_spikes(tmp_path):
    from spikedeploy.targets.emulator import compile_emulator, simulate_emulator

    qg, x, _ = dense_chain(3, steps=10, batch=BATCH, sizes=[16, 12, 6])
    x = x["in"].astype(np.float32)
    x[1, 20, 0] = 2.0  # an integer, but the program was compiled for 0/1 spikes
    prog = compile_emulator(qg)
    src = open_source(_write("npy", x, tmp_path))
    with pytest.raises(InputError, match="compiled for 0/1 spikes"):
        simulate_emulator(prog, {"in": src.read(16, 24)})


def test_layout_errors_name_the_file(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 4, 3), np.float32))
    with pytest.raises(InputError, match="empty.npy.*no time steps"):
        open_source(str(tmp_path / "empty.npy"))
    np.save(tmp_path / "c.npy", np.zeros((2, 4, 3), np.complex64))
    with pytest.raises(InputError, match="c.npy: dtype complex64"):
        open_source(str(tmp_path / "c.npy"))
    d = tmp_path / "d"
    d.mkdir()
    np.save(d / "a.npy", np.zeros((2, 4, 3), np.float32))
    np.save(d / "b.npy", np.zeros((2, 4, 5), np.float32))
    with pytest.raises(InputError, match="b.npy: shard is float32"):
        open_source(str(d))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(InputError, match="holds 2 arrays"):
        open_source(str(tmp_path / "two.npz"))


def _cli(*args, cwd):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SPIKEDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikedeploy", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_cli_streams_each_format_and_refuses_nan_in_one_line(tmp_path):
    from spikedeploy.io.qgraph_file import save_qgraph
    from spikedeploy.simulate.result import load_run

    qg, x, _ = dense_chain(3, steps=10, batch=BATCH, sizes=[16, 12, 6])
    save_qgraph(qg, tmp_path / "net.npz")
    want = simulate(qg, {"in": x["in"][:, :30]})
    spec = _write("h5", x["in"].astype(np.float32), tmp_path)
    p = _cli("simulate", "net.npz", "--input", spec, "--batch", 30, "-o", "run.npz", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    _same_run(load_run(tmp_path / "run.npz"), want)
    y = x["in"].astype(np.float32)
    y[0, 3, 0] = np.nan
    np.save(tmp_path / "bad.npy", y)
    p = _cli("simulate", "net.npz", "--input", "bad.npy", "-o", "bad_run.npz", cwd=tmp_path)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "bad.npy: sample 3" in p.stderr and "NaN" in p.stderr
    assert not (tmp_path / "bad_run.npz").exists()
