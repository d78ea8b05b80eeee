"""Run files written a chunk of samples at a time: the same arrays as the whole run held in memory, bit for bit;
memory bounded by the chunk, not by the outputs; kill -9 while writing leaves no file at the output path."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from random_qgraphs import dense_chain

from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.input_stream import open_sources, simulate_chunks
from spikedeploy.simulate.result import Run, load_run, run_arrays, save_run, writing_run

HELPERS = str(Path(__file__).parent / "helpers")


def _members(path) -> dict[str, np.ndarray]:
    """The archive as numpy.load reads it, in its order."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _same_file(a, b):
    ma, mb = _members(a), _members(b)
    assert list(ma) == list(mb)
    for k in ma:
        assert ma[k].dtype == mb[k].dtype and ma[k].shape == mb[k].shape and np.array_equal(ma[k], mb[k]), k


def test_streamed_file_equals_the_in_memory_run_bit_for_bit(tmp_path):
    qg, x, _ = dense_chain(3, steps=20, batch=37, sizes=[16, 12, 6])
    np.save(tmp_path / "x.npy", x["in"].astype(np.float32))
    specs = {"in": str(tmp_path / "x.npy")}
    # the run assembled in memory, then saved, as the command line did before
    held = simulate_chunks(qg, open_sources(specs), chunk=5, probes=["lif0"], notes=["n"])
    save_run(held, tmp_path / "memory.npz")
    got = simulate_chunks(qg, open_sources(specs), chunk=5, probes=["lif0"], out=tmp_path / "streamed.npz",
                          notes=["n"])
    _same_file(tmp_path / "streamed.npz", tmp_path / "memory.npz")  # header (meta) included
    want = simulate(qg, x, probes=["lif0"])  # the whole batch in one call
    back = load_run(tmp_path / "streamed.npz")
    for run in (got, back):  # the Run returned maps the file it wrote
        assert (run.backend, run.steps, run.batch, run.meta["notes"]) == (want.backend, 20, 37, ["n"])
        assert run_arrays(run).keys() == run_arrays(want).keys()
        for k, v in run_arrays(want).items():
            assert np.array_equal(run_arrays(run)[k], v), k
    assert got.spikes_per_node() == want.spikes_per_node() == {k: int(v.sum()) for k, v in want.counts.items()}
    assert zipfile.ZipFile(tmp_path / "streamed.npz").testzip() is None  # every member's CRC-32


def test_parts_in_any_order_and_old_deflated_files_still_load(tmp_path):
    rng = np.random.default_rng(0)
    T, B = 5, 9
    run = Run("float", T, B, outputs={"y": rng.random((T, B, 2, 3)), "é": rng.integers(-9, 9, (T, B), np.int16)},
              counts={"n": rng.integers(0, 4, (T, B), np.int32)}, meta={"k": [1, 2]})
    with writing_run(tmp_path / "run.npz", B) as w:
        for a0, a1 in ((6, 9), (0, 2), (2, 6)):  # out of order: each range lands in its place
            for k, v in run_arrays(run).items():
                w.put(k, a0, v[:, a0:a1])
        w.finish(run)
    got = load_run(tmp_path / "run.npz")
    for k, v in run_arrays(run).items():
        assert run_arrays(got)[k].dtype == v.dtype and np.array_equal(run_arrays(got)[k], v), k
    assert got.meta == {"k": [1, 2]} and list(got.outputs) == ["y", "é"]
    # a file as save_run wrote it before (deflated members) reads the same
    with zipfile.ZipFile(tmp_path / "old.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for k, v in _members(tmp_path / "run.npz").items():
            with z.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, v)
    old = load_run(tmp_path / "old.npz")
    for k, v in run_arrays(run).items():
        assert np.array_equal(run_arrays(old)[k], v), k


def test_a_part_that_does_not_fit_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="does not fit"), writing_run(tmp_path / "run.npz", 4) as w:
        w.put("out/y", 0, np.zeros((3, 2, 5)))
        w.put("out/y", 3, np.zeros((3, 2, 5)))  # samples 3-4 of 4
    assert os.listdir(tmp_path) == []


# ---- peak memory, measured in a child process -----------------------------------------------------------
_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np
    from random_qgraphs import dense_chain
    from spikedeploy.simulate.input_stream import open_sources, simulate_chunks
    batch, out = int(sys.argv[1]), sys.argv[2]
    qg, _, _ = dense_chain(4, steps=2, batch=1, sizes=[8, 1000], cuba=False)
    rng = np.random.default_rng(1)
    np.save(out + ".x.npy", (rng.random((100, batch, 8)) < 0.3).astype(np.int8))
    run = simulate_chunks(qg, open_sources({"in": out + ".x.npy"}), chunk=200, out=None if out == "-" else out)
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across fork and exec)
    hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0] * 1024
    print(json.dumps({"peak": hwm, "spikes": run.spikes_per_node()}))
""")


def _peak(tmp_path, batch, out) -> dict:
    env = {**os.environ, "PYTHONPATH": HELPERS, "SPIKEDEPLOY_THREADS": "2"}
    p = subprocess.run([sys.executable, "-c", _RUN, str(batch), str(out)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_peak_memory_follows_the_chunk_not_the_outputs(tmp_path):
    """4000 samples of 1000 outputs x 100 steps: 400 MB of int8 outputs, chunks of 200 samples (20 MB)."""
    small = _peak(tmp_path, 400, tmp_path / "small.npz")
    big = _peak(tmp_path, 4000, tmp_path / "big.npz")
    out_bytes = 100 * 4000 * 1000
    assert _members(tmp_path / "big.npz")["out/out"].nbytes == out_bytes
    assert big["spikes"]["lif0"] > 0
    # ten times the outputs, and the peak grows by less than a fifth of them
    assert big["peak"] - small["peak"] < out_bytes / 5, (small, big)
    # the same run held in memory: this measurement does see outputs of that size
    held = _peak(tmp_path, 4000, "-")
    assert held["peak"] - big["peak"] > out_bytes / 2, (big, held)
    assert held["spikes"] == big["spikes"]


# ---- kill -9 while the chunks are written --------------------------------------------------------------
_SLOW = textwrap.dedent("""
    import sys, time
    import numpy as np
    from random_qgraphs import dense_chain
    from spikedeploy.simulate.input_stream import open_sources, simulate_chunks
    qg, x, _ = dense_chain(3, steps=20, batch=60, sizes=[16, 12, 6])
    def progress(done, total):
        print(done, flush=True)
        time.sleep(float(sys.argv[3]))
    simulate_chunks(qg, open_sources({"in": sys.argv[1]}), chunk=6, out=sys.argv[2], progress=progress)
""")


def test_kill_9_while_writing_leaves_no_file_and_the_next_run_sweeps_its_temporary(tmp_path):
    qg, x, _ = dense_chain(3, steps=20, batch=60, sizes=[16, 12, 6])
    np.save(tmp_path / "x.npy", x["in"])
    out = tmp_path / "run.npz"
    env = {**os.environ, "PYTHONPATH": HELPERS}
    p = subprocess.Popen([sys.executable, "-c", _SLOW, tmp_path / "x.npy", out, "0.2"], stdout=subprocess.PIPE,
                         text=True, env=env, cwd=tmp_path)
    for _ in range(3):  # three chunks of ten written
        p.stdout.readline()
    tmps = list(tmp_path.glob(".run.npz.*.tmp"))
    assert len(tmps) == 1 and tmps[0].stat().st_size > 0
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    assert not out.exists() and tmps[0].exists()  # nothing runs on kill -9: the temporary stays ...
    subprocess.run([sys.executable, "-c", _SLOW, tmp_path / "x.npy", out, "0"], check=True, env=env, cwd=tmp_path,
                   capture_output=True)
    assert list(tmp_path.glob(".run.npz.*.tmp")) == []  # ... until the next run writes the same file
    want = simulate(qg, x)
    got = load_run(out)
    for k, v in run_arrays(want).items():
        assert np.array_equal(run_arrays(got)[k], v), k
