"""Ray as an executor: a sharded run on a local Ray cluster, with one worker SIGKILLed while it computes a
shard, gives the same Run as the local executor (Ray reruns the lost task); the cluster it started is gone
after the command; an unreachable cluster is refused in one line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from random_qgraphs import dense_chain

from spikedeploy.io.qgraph_file import save_qgraph
from spikedeploy.simulate.result import load_run

pytest.importorskip("ray")

STEPS, BATCH, SHARD = 30, 480, 16  # 30 shards


def _cli(*args, cwd, wait=True):
    env = {**os.environ, "COLUMNS": "200", "RAY_DEDUP_LOGS": "0"}
    cmd = [sys.executable, "-m", "spikedeploy", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _ray_task_workers() -> list[int]:
    """Ray worker processes executing a task now (Ray titles them ray::<function>)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::_call"):
                pids.append(int(d.name))
    return pids


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray")
    qg, _, _ = dense_chain(5, steps=4, batch=2, sizes=[100, 80, 10], cuba=False)
    x = (np.random.default_rng(3).random((STEPS, BATCH, 100)) < 0.3).astype(np.float32)
    save_qgraph(qg, d / "net.npz")
    np.save(d / "x.npy", x)
    return d


def test_a_worker_killed_mid_run_changes_nothing(work):
    local = _cli("simulate", "net.npz", "--input", "x.npy", "-o", "local.npz", "--shard-size", SHARD, cwd=work)
    assert local.returncode == 0, local.stderr
    proc = _cli("simulate", "net.npz", "--input", "x.npy", "-o", "ray.npz", "--shard-size", SHARD,
                "--executor", "ray", cwd=work, wait=False)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        busy = _ray_task_workers()
        if busy and len(list((work / "ray.shards").glob("shard-*.npz"))) >= 2:  # mid-run: some shards done
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, f"no Ray worker was caught computing a shard: {err[-2000:]}"
    assert proc.returncode == 0, err[-2000:]
    a, b = load_run(work / "ray.npz"), load_run(work / "local.npz")
    assert (a.steps, a.batch) == (b.steps, b.batch) == (STEPS, BATCH)
    for k in b.counts:
        assert np.array_equal(a.counts[k], b.counts[k]), k
    for k in b.outputs:
        assert np.array_equal(a.outputs[k], b.outputs[k]), k
    # the local cluster the command started ended with it: no raylet or worker outlives the command
    time.sleep(2)
    left = subprocess.run(["pgrep", "-f", "raylet|ray::"], capture_output=True, text=True).stdout.split()
    assert [p for p in left if int(p) != killed] == []


def test_an_unreachable_cluster_is_refused_in_one_line(work):
    p = _cli("simulate", "net.npz", "--input", "x.npy", "-o", "r.npz", "--shard-size", SHARD, "--executor", "ray",
             "--address", "127.0.0.1:1", cwd=work)
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "cannot start or join a Ray cluster at '127.0.0.1:1'" in lines[0]
    assert not (work / "r.npz").exists()


def test_the_executor_needs_shards():
    p = _cli("simulate", "x.nir", "--executor", "ray", cwd=Path.cwd())
    assert p.returncode == 2 and "add --shard-size N" in p.stderr
