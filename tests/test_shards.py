"""Sharded runs: killed with SIGKILL and resumed, the merged run is the uninterrupted one; a run directory that
does not match the command, or a damaged shard, is refused in one line naming it."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from random_qgraphs import dense_chain

from spikedeploy.errors import SpikeDeployError
from spikedeploy.io.qgraph_file import save_qgraph
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.executors import get_executor
from spikedeploy.simulate.result import load_run

STEPS, BATCH, SHARD = 40, 1200, 12  # 100 shards: enough that a kill lands in the middle


def _cli(*args, cwd, wait=True):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SPIKEDEPLOY_DEBUG", None)
    cmd = [sys.executable, "-m", "spikedeploy", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    qg, _, _ = dense_chain(11, steps=4, batch=2, sizes=[120, 90, 10], cuba=False)
    rng = np.random.default_rng(0)
    x = (rng.random((STEPS, BATCH, 120)) < 0.3).astype(np.float32)
    save_qgraph(qg, d / "net.npz")
    np.save(d / "x.npy", x)
    return d, qg, x


def _dir(work, name):
    d = work[0] / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    for f in ("net.npz", "x.npy"):
        os.link(work[0] / f, d / f)
    return d


def _same(a, b):
    assert (a.backend, a.steps, a.batch, a.meta) == (b.backend, b.steps, b.batch, b.meta)
    for k in b.outputs:
        assert np.array_equal(a.outputs[k], b.outputs[k])
    for k in b.counts:
        assert np.array_equal(a.counts[k], b.counts[k])
    assert sorted(a.outputs) == sorted(b.outputs) and sorted(a.counts) == sorted(b.counts)


ARGS = ("simulate", "net.npz", "--input", "x.npy", "-o", "run.npz", "--shard-size", SHARD, "--json")


def test_kill_9_then_resume_equals_an_uninterrupted_run(work):
    whole = _dir(work, "whole")
    p = _cli(*ARGS, cwd=whole)
    assert p.returncode == 0, p.stderr
    want = load_run(whole / "run.npz")
    # independent reference: the same samples in one unsharded in-memory call
    ref = simulate(work[1], {"in": work[2]})
    for k in ref.counts:
        assert np.array_equal(want.counts[k], ref.counts[k])
    for k in ref.outputs:
        assert np.array_equal(want.outputs[k], ref.outputs[k])

    # a shard takes about 10 ms: on a loaded machine this process may wake too late to kill the run in its
    # middle, and then the kill is tried again in a fresh directory
    for attempt in range(5):
        d = _dir(work, f"killed{attempt}")
        proc = _cli(*ARGS, cwd=d, wait=False)
        deadline = time.monotonic() + 120
        while len(list((d / "run.shards").glob("shard-*.npz"))) < 3 and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = {f.name: f.stat().st_mtime_ns for f in (d / "run.shards").glob("shard-*.npz")}
        if 3 <= len(before) < BATCH // SHARD:
            break
    assert 3 <= len(before) < BATCH // SHARD, "the kill must land in the middle of the run"
    assert not (d / "run.npz").exists()
    p = _cli(*ARGS, cwd=d)
    assert p.returncode == 1 and "--resume" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = _cli(*ARGS, "--resume", cwd=d)
    assert p.returncode == 0, p.stderr
    after = {f.name: f.stat().st_mtime_ns for f in (d / "run.shards").glob("shard-*.npz")}
    assert len(after) == BATCH // SHARD
    assert all(after[k] == v for k, v in before.items()), "shards already on disk are not recomputed"
    _same(load_run(d / "run.npz"), want)


def _one_line_error(p, *needles):
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture()
def finished(work):
    d = _dir(work, "finished")
    p = _cli(*ARGS, cwd=d)
    assert p.returncode == 0, p.stderr
    return d


def test_resume_with_other_options_is_refused(finished):
    _one_line_error(_cli(*ARGS, "--resume", "--steps", 30, cwd=finished), "run.shards", "steps")
    _one_line_error(_cli(*ARGS[:-2], 10, "--json", "--resume", cwd=finished), "run.shards", "shard_size")
    x = np.load(finished / "x.npy")
    x[0, 0, :] = 1 - x[0, 0, :]
    os.unlink(finished / "x.npy")
    np.save(finished / "x.npy", x)
    _one_line_error(_cli(*ARGS, "--resume", cwd=finished), "run.shards", "in:")


def test_resume_refuses_a_truncated_shard(finished):
    f = finished / "run.shards" / "shard-00007.npz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    _one_line_error(_cli(*ARGS, "--resume", cwd=finished), "shard-00007.npz", "truncated")


def test_resume_refuses_a_missing_shard(finished):
    (finished / "run.shards" / "shard-00042.npz").unlink()
    _one_line_error(_cli(*ARGS, "--resume", cwd=finished), "shard-00042.npz", "missing")


def test_resume_refuses_a_shard_of_another_run_or_place(finished, work):
    d = finished / "run.shards"
    shutil.copy(d / "shard-00003.npz", d / "shard-00004.npz")
    _one_line_error(_cli(*ARGS, "--resume", cwd=finished), "shard-00004.npz", "does not belong")
    other = _dir(work, "other")
    p = _cli(*ARGS[:-1], "--steps", 30, cwd=other)
    assert p.returncode == 0, p.stderr
    shutil.copy(other / "run.shards" / "shard-00004.npz", d / "shard-00004.npz")
    _one_line_error(_cli(*ARGS, "--resume", cwd=finished), "shard-00004.npz", "does not belong")


def test_shard_options_need_input_files_and_a_known_executor(finished):
    _one_line_error(_cli("simulate", "net.npz", "-o", "r.npz", "--shard-size", 5, cwd=finished), "--input")
    p = _cli(*ARGS, "--executor", "nowhere", "-o", "r2.npz", cwd=finished)
    assert p.returncode == 2 and "'nowhere' is not one of 'local', 'ray'" in p.stderr
    assert not (finished / "r2.shards").exists()
    with pytest.raises(SpikeDeployError, match="unknown executor 'nowhere'; choose one of local, ray"):
        get_executor("nowhere")
    with pytest.raises(SpikeDeployError, match="--address h:1: a cluster address needs --executor ray"):
        get_executor("local", "h:1")  # was silently ignored


def test_local_executor_yields_every_item_with_its_position():
    got = dict(get_executor("local").map_unordered(lambda v: v * v, [3, 1, 2]))
    assert got == {0: 9, 1: 1, 2: 4}
