"""Interrupts and crashes lose nothing and leak nothing: the output path holds the old file or the complete
new one, temporary files are removed (or swept by the next run), Lava's workers end with the command."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from paths import FIXTURES

from spikedeploy.errors import OutputPathError
from spikedeploy.io import atomic
from spikedeploy.io.atomic import atomic_write, sweep_stale

NIR = FIXTURES / "nir-paper" / "two_lif_neurons.nir"


def sd(*args, cwd=None, **kw):
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).parent / "helpers")}  # tiny_models
    env.pop("SPIKEDEPLOY_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "spikedeploy", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def tmp_files(d: Path) -> list[Path]:
    return sorted(d.glob(".*.tmp"))


# ---- the atomic writer itself --------------------------------------------------------------------------
def test_interrupted_write_removes_its_temporary_file(tmp_path):
    out = tmp_path / "x.bin"
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(out) as f:
        f.write(b"new, half")
        raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and tmp_files(tmp_path) == []


def test_full_disk_is_one_clean_error(tmp_path, monkeypatch):
    out = tmp_path / "x.bin"
    out.write_bytes(b"old")
    with pytest.raises(OutputPathError, match="no space left on the device"), atomic_write(out):
        raise OSError(28, "No space left on device")  # what write() raises on a full disk (ENOSPC)
    assert out.read_bytes() == b"old" and tmp_files(tmp_path) == []


@pytest.mark.parametrize("target", ["/dev/null", "fifo", "dir"])
def test_special_files_are_never_replaced(tmp_path, target):
    if target == "fifo":
        target = tmp_path / "p"
        os.mkfifo(target)
    elif target == "dir":
        target = tmp_path / "d"
        target.mkdir()
    before = os.stat(target).st_mode
    with pytest.raises(OutputPathError), atomic_write(target) as f:
        f.write(b"x")
    assert os.stat(target).st_mode == before
    assert tmp_files(Path(target).parent if target != "/dev/null" else tmp_path) == []


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from spikedeploy.io.interrupts import install_sigterm_handler
    from spikedeploy.io.atomic import atomic_write
    install_sigterm_handler()
    with atomic_write(sys.argv[1]) as f:
        for _ in range(400):
            f.write(b"x" * 4096); f.flush()
            print("writing", flush=True)
            time.sleep(0.01)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_killed_writer_leaves_old_file_and_no_temporary_after_next_run(tmp_path, sig):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    p = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    p.stdout.readline()  # inside the write
    assert len(tmp_files(tmp_path)) == 1
    p.send_signal(sig)
    p.wait(30)
    assert out.read_bytes() == b"old"
    if sig != signal.SIGKILL:
        assert tmp_files(tmp_path) == [], "an interrupt must remove its own temporary file"
    else:
        assert len(tmp_files(tmp_path)) == 1  # nothing can run on kill -9 ...
        time.sleep(0.05)
        # ... so the next process that writes the same target sweeps it (this test process started earlier
        # than the killed writer, so run the sweep in a fresh process, as the next command would)
        subprocess.run([sys.executable, "-c", "import sys; from spikedeploy.io.atomic import atomic_write\n"
                        "with atomic_write(sys.argv[1]) as f: f.write(b'new')", str(out)], check=True)
        assert tmp_files(tmp_path) == [] and out.read_bytes() == b"new"


def test_sweep_keeps_temporary_files_of_live_writers(tmp_path):
    live = tmp_path / f".out.bin.pid{os.getppid()}.abc.tmp"  # a running process (our parent)
    live.write_bytes(b"x")
    before_us = atomic._STARTED - 0.001  # our parent was running then, and we were not
    os.utime(live, (before_us, before_us))
    dead = tmp_path / ".out.bin.pid999999999.abc.tmp"
    dead.write_bytes(b"x")
    os.utime(dead, (0, 0))
    other = tmp_path / ".other.bin.pid999999999.abc.tmp"  # another target's: not ours to sweep
    other.write_bytes(b"x")
    os.utime(other, (0, 0))
    assert sweep_stale(tmp_path / "out.bin") == [dead]
    assert live.exists() and other.exists()


def test_sweep_removes_a_temporary_whose_pid_now_belongs_to_another_process(tmp_path):
    """A killed writer's PID reused by a process that started after the temporary was last written (a busy
    machine wraps the 32,768 PIDs within minutes) does not keep the temporary alive."""
    newer = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.1)
        reused = tmp_path / f".out.bin.pid{newer.pid}.abc.tmp"
        reused.write_bytes(b"x")
        os.utime(reused, (atomic._STARTED - 60, atomic._STARTED - 60))  # written before `newer` started
        assert sweep_stale(tmp_path / "out.bin") == [reused]
    finally:
        newer.kill()
        newer.wait()


# ---- the commands, killed at random points ---------------------------------------------------------------
@pytest.fixture(scope="module")
def qfile(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    p = sd("quantize", NIR, "--dt", "1e-3", "-o", d / "q.npz", cwd=d)
    assert p.wait(300) == 0, p.stderr.read()
    return d / "q.npz"


def _complete(kind: str, path: Path) -> bool:
    if kind == "html":
        return path.read_text().rstrip().endswith("</html>")
    if kind == "json":
        import json

        json.loads(path.read_text())
        return True
    if kind == "nir":
        import h5py

        with h5py.File(path, "r") as f:
            return "node" in f
    with np.load(path, allow_pickle=False) as z:
        return bool(z.files)


@pytest.mark.parametrize("cmd", ["quantize", "simulate", "partition", "report", "export"])
def test_command_killed_at_random_points(tmp_path, qfile, cmd):
    rng = random.Random(cmd)
    args, out, kind = {
        "quantize": (["quantize", NIR, "--dt", "1e-3", "-o"], "q2.npz", "npz"),
        "simulate": (["simulate", qfile, "--steps", "300", "--batch", "64", "-o"], "run.npz", "npz"),
        "partition": (["partition", qfile, "-o"], "pl.json", "json"),
        "report": (["report", qfile, "--html"], "r.html", "html"),
        "export": (["export", "tiny_models:two_layer", "--input-shape", "input=12", "-o"], "m.nir", "nir"),
    }[cmd]
    out = tmp_path / out
    for i in range(4):
        sig = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL][i % 3]
        old = out.read_bytes() if out.exists() else None
        p = sd(*args, out, cwd=tmp_path)
        time.sleep(rng.uniform(0.2, 2.5))
        p.send_signal(sig)
        p.wait(120)
        if out.exists():
            assert out.read_bytes() == old or _complete(kind, out), f"{cmd}: partial file after {sig!r}"
        if sig != signal.SIGKILL:
            assert tmp_files(tmp_path) == [], f"{cmd}: temporary file left after {sig!r}"
    p = sd(*args, out, cwd=tmp_path)
    assert p.wait(300) == 0, p.stderr.read()
    assert _complete(kind, out) and tmp_files(tmp_path) == []


# ---- Lava's worker processes ------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(d))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _shm_mapped(pids) -> set[str]:
    names = set()
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    names.add(line.split("/dev/shm/", 1)[1].split()[0])
        except OSError:
            pass
    return names


def test_sigterm_during_lava_run_leaves_no_worker_and_no_shared_memory(tmp_path, qfile, lava):
    p = sd("simulate", qfile, "--backend", "lava", "--steps", "2000", "--batch", "50", cwd=tmp_path,
           start_new_session=True)
    t0 = time.time()
    kids: list[int] = []
    while time.time() - t0 < 120 and len(kids) < 2:
        kids = _children(p.pid)
        time.sleep(0.2)
    assert len(kids) >= 2, "Lava did not start its workers"
    time.sleep(1.0)
    kids = _children(p.pid)
    shm = _shm_mapped([p.pid, *kids])
    assert shm, "Lava's processes map no shared memory: the leak check below would prove nothing"
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(60)
        t0 = time.time()
        while True:  # workers end after the main process; give them a moment, then they are orphans
            left = [k for k in kids if _alive(k)]
            if not left or time.time() - t0 > 15:
                break
            time.sleep(0.2)
    finally:
        left = [k for k in kids if _alive(k)]
        if left or p.poll() is None:  # do not leave them behind even when the test fails
            os.killpg(p.pid, signal.SIGKILL)
    assert rc == 143, p.stderr.read()
    assert "terminated" in p.stderr.read()
    assert left == [], f"Lava workers still alive after SIGTERM: {left}"
    leaked = sorted(n for n in shm if Path("/dev/shm", n).exists())
    assert leaked == [], f"shared memory left behind: {leaked}"
