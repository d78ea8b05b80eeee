"""The CLI as a user runs it: `spikedeploy simulate NET --input X.npy -o RUN.npz`, process start to file written.

Networks: bench_engine.py's (a) 784-256-10 and (b) 784-1024-768-200 LIF, 100 steps, Poisson input (rates up
to 0.3), saved as quantized files; inputs float32 0/1 `.npy`, batch 2048. Each command runs `--repeats`
times as a child process (the page cache warm after the first, as for a user who runs a dataset twice);
wall time from Popen to exit and the child's peak RSS (wait4). Lava's per-sample time is the one recorded
in benchmarks/results/engine.json (Lava is not rerun). With `--baseline PYTHON` the same commands also run
under another checkout's interpreter (e.g. /work/main/.venv/bin/python) for a before/after in one session.

The large run: 100,000 samples of (a), inputs uint8 0/1 (7.8 GB; float32 would be 31 GB), streamed, plain
and in shards of 10,000 (--shard-size); peak RSS must stay under 1 GiB.

Breakdown (in a child, same inputs): interpreter start, Python with numpy, CLI import, graph load, input read
+ check, engine, write; and the floor no implementation avoids here: Python with numpy + one read of the
input from the page cache + the engine. The machine's load average is recorded beside each measurement.

    .venv/bin/python benchmarks/bench_cli_simulate.py [--repeats 5] [--big] [--baseline PY] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import NETS, STEPS, VTH, build  # noqa: E402

BATCH = 2048
BIG = 100_000


def child(cmd, cwd=None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stderr) of one child process. The peak comes from /usr/bin/time, a
    small process between us and the child: Linux carries a process's peak RSS across fork and exec, so the
    child of this (large) process would report this process's peak as its own."""
    timer = ["/usr/bin/time", "-f", "maxrss_kb=%M"] if os.path.exists("/usr/bin/time") else []
    t0 = time.perf_counter()
    # cwd: a directory without a spikedeploy/ in it, for `python -m` puts the working directory first on
    # sys.path, and another checkout's interpreter would import this one's package from there
    p = subprocess.run([*timer, *map(str, cmd)], cwd=cwd or tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    rss = [int(x.split("=")[1]) for x in p.stderr.splitlines() if x.startswith("maxrss_kb=")]
    return wall, (rss[-1] * 1024 if rss else -1), p.stderr


def inputs(n_in: int, batch: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0, 0.3, n_in)
    return rng.random((STEPS, batch, n_in)) < rate


def time_cli(pys, net, x, out: Path, repeats) -> list[dict]:
    """The command under each interpreter in `pys`, `repeats` times; the interpreters take turns, so that a
    change in the machine's load falls on all of them alike."""
    cmds = [[py, "-m", "spikedeploy", "simulate", str(net), "--input", str(x), "-o",
             str(out.with_name(f"{out.stem}_{i}{out.suffix}")), "--json"] for i, py in enumerate(pys)]
    load = os.getloadavg()[0]
    runs: list[list] = [[] for _ in pys]
    for _ in range(repeats):
        for i, cmd in enumerate(cmds):
            runs[i].append(child(cmd))
    load = [load, os.getloadavg()[0]]
    res = []
    for r in runs:
        walls = [w for w, _, _ in r]
        res.append({"wall_s_median": statistics.median(walls), "wall_s_min": min(walls), "wall_s_all": walls,
                    "peak_rss_bytes": max(m for _, m, _ in r), "load_average_1min": load})
    return res


def breakdown(py, net, x, out) -> dict:
    """Where the time of one run goes: the CLI's steps as simulate_specs takes them (the network compiled once
    for all chunks, the run written as the chunks finish), timed one after another in one child; best of 3.
    simulate_s includes compiling the network (once)."""
    probe = f"""
import time
t0 = time.perf_counter()
import spikedeploy.cli.main
t1 = time.perf_counter()
from spikedeploy.io.graph_files import load_graph
from spikedeploy.simulate.input_stream import open_sources, iter_chunks, chunk_samples, RunAssembler, _chunk_runner
from spikedeploy.simulate.result import writing_run
qg = load_graph({str(net)!r})
t2 = time.perf_counter()
best = {{"import_cli_s": t1 - t0, "load_graph_s": t2 - t1}}
for _ in range(3):
    src = open_sources({{"in": {str(x)!r}}})
    n = src["in"].batch
    t = time.perf_counter()
    chunks = [(c0, xs) for c0, _, xs in iter_chunks(src, 0, n, chunk_samples(src), integers=True)]
    t3 = time.perf_counter()
    run_chunk = _chunk_runner(qg, backend="emulator", target=None, steps=None, probes=())
    parts = [(c0, run_chunk(xs)) for c0, xs in chunks]
    t4 = time.perf_counter()
    with writing_run({str(out)!r}, n) as w:
        acc = RunAssembler(n, into=w)
        for c0, part in parts:
            acc.add(c0, part)
        w.finish(acc.run())
    t5 = time.perf_counter()
    for k, v in (("read_check_s", t3 - t), ("simulate_s", t4 - t3), ("save_s", t5 - t4)):
        best[k] = min(best.get(k, 1e9), v)
print(best)
"""
    out_ = {"interpreter_s": statistics.median(child([py, "-c", "pass"])[0] for _ in range(5)),
            "python_numpy_s": statistics.median(child([py, "-c", "import numpy"])[0] for _ in range(5))}
    p = subprocess.run([py, "-c", probe], capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    out_.update(eval(p.stdout.strip().splitlines()[-1]))  # noqa: S307 - our own child's dict
    return out_


def page_cache_pass(x) -> float:
    """One read of the input file from the page cache (os.readv into a reused buffer): the floor of any way
    to get its bytes into the process."""
    buf = bytearray(64 << 20)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        with open(x, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
        best = min(best, time.perf_counter() - t)
    return best


def big_run(py, net, d: Path, shard: int | None, tag: str = "") -> dict:
    x = d / "big.npy"
    if not x.exists():
        rng = np.random.default_rng(2)
        rate = rng.uniform(0, 0.3, 784)
        m = np.lib.format.open_memmap(x.with_suffix(".tmp.npy"), mode="w+", dtype=np.uint8, shape=(STEPS, BIG, 784))
        for b0 in range(0, BIG, 5000):
            m[:, b0:b0 + 5000] = rng.random((STEPS, min(5000, BIG - b0), 784)) < rate
        m.flush()
        del m
        os.replace(x.with_suffix(".tmp.npy"), x)
    out = d / (f"big_sharded{tag}.npz" if shard else f"big{tag}.npz")
    cmd = [py, "-m", "spikedeploy", "simulate", str(net), "--input", str(x), "-o", str(out), "--json"]
    if shard:
        import shutil

        shutil.rmtree(d / f"big_sharded{tag}.shards", ignore_errors=True)
        cmd += ["--shard-size", str(shard)]
    load = os.getloadavg()[0]
    wall, rss, _ = child(cmd)
    return {"load_average_1min": [load, os.getloadavg()[0]], "output_bytes": out.stat().st_size, "samples": BIG, "input": "uint8 0/1 .npy", "input_bytes": x.stat().st_size, "shard_size": shard,
            "wall_s": wall, "s_per_sample": wall / BIG, "peak_rss_bytes": rss, "under_1_gib": rss < 2**30}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--big", action="store_true", help="also the 100,000-sample runs (writes a 7.8 GB input)")
    ap.add_argument("--baseline", default=None, help="another interpreter (checkout) to time the same commands")
    ap.add_argument("--nets", default="ab", help="which of the batch-2048 rows to run ('' for none, e.g. --big only)")
    ap.add_argument("--dir", default=None, help="where the inputs go (default: a temporary directory)")
    ap.add_argument("--out", default=str(HERE / "results" / "cli_simulate.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()  # other tenants of the machine; the times scale with it
    lava = {r["net"]: r["lava_s_per_sample"] for r in json.loads((HERE / "results" / "engine.json").read_text())["rows"]}
    tmp = tempfile.TemporaryDirectory(prefix="bench-cli-") if args.dir is None else None
    d = Path(args.dir or tmp.name)
    d.mkdir(parents=True, exist_ok=True)
    from spikedeploy.io.qgraph_file import save_qgraph

    py = sys.executable
    rows = []
    for k in args.nets:
        net = d / f"net_{k}.npz"
        save_qgraph(build(NETS[k], VTH[k]), net)
        x = d / f"x_{k}.npy"
        np.save(x, inputs(NETS[k][0], BATCH).astype(np.float32))  # freed before the children run
        row = {"net": k, "sizes": NETS[k], "steps": STEPS, "batch": BATCH, "input": "float32 0/1 .npy",
               "input_bytes": x.stat().st_size, "lava_s_per_sample": lava[k]}
        now, *base = time_cli([py, *([args.baseline] if args.baseline else [])], net, x, d / f"run_{k}.npz",
                              args.repeats)
        row.update(now)
        if base:
            row["baseline"] = {**base[0], "python": args.baseline,
                               "speedup_vs_lava": lava[k] / (base[0]["wall_s_median"] / BATCH)}
        row["s_per_sample"] = row["wall_s_median"] / BATCH
        row["speedup_vs_lava"] = lava[k] / row["s_per_sample"]
        row["speedup_vs_lava_best"] = lava[k] / (row["wall_s_min"] / BATCH)
        row["target_wall_s"] = lava[k] / 1000 * BATCH
        row["breakdown"] = breakdown(py, net, x, d / f"run_{k}_probe.npz")
        row["breakdown"]["page_cache_read_s"] = page_cache_pass(x)
        bd = row["breakdown"]
        # what no implementation can avoid on this machine: Python with numpy, one read of the input from the
        # page cache, and the engine on the chunks in memory (compiling the network included)
        row["floor_s"] = bd["python_numpy_s"] + bd["page_cache_read_s"] + bd["simulate_s"]
        row["floor_vs_lava"] = lava[k] / (row["floor_s"] / BATCH)
        # the engine alone in this session (chunks already in memory), for the CLI's overhead beside it
        row["engine_vs_lava_now"] = lava[k] / (row["breakdown"]["simulate_s"] / BATCH)
        # the same spikes as uint8: a quarter of the bytes to read
        xu = d / f"x_{k}_u8.npy"
        np.save(xu, np.load(x, mmap_mode="r").astype(np.uint8))
        row["uint8_input"] = time_cli([py], net, xu, d / f"run_{k}_u8.npz", args.repeats)[0]
        row["uint8_input"]["speedup_vs_lava"] = lava[k] / (row["uint8_input"]["wall_s_median"] / BATCH)
        rows.append(row)
        print(f"({k}) {row['wall_s_median']:.2f} s (best {row['wall_s_min']:.2f}) for {BATCH} samples, "
              f"{row['peak_rss_bytes'] / 2**20:.0f} MiB: {row['speedup_vs_lava']:.0f}× Lava "
              f"(target {row['target_wall_s']:.2f} s)" +
              (f"; baseline {row['baseline']['wall_s_median']:.2f} s, {row['baseline']['peak_rss_bytes'] / 2**20:.0f} MiB"
               if args.baseline else ""), flush=True)
        print("   breakdown:", {k2: round(v, 3) for k2, v in row["breakdown"].items()}, flush=True)
        print(f"   floor (python+numpy, page-cache read, engine) {row['floor_s']:.3f} s = {row['floor_vs_lava']:.0f}× Lava",
              flush=True)
        print(f"   engine alone now {row['engine_vs_lava_now']:.0f}× Lava; uint8 input "
              f"{row['uint8_input']['wall_s_median']:.2f} s ({row['uint8_input']['speedup_vs_lava']:.0f}×)", flush=True)
    big = []
    if args.big:
        net = d / "net_a.npz"
        if not net.exists():
            save_qgraph(build(NETS["a"], VTH["a"]), net)
        for shard in (None, 10_000):
            for tag, p in (("", py), *((("_baseline", args.baseline),) if args.baseline else ())):
                r = big_run(p, net, d, shard, tag)
                r["python"] = p
                big.append(r)
                print(f"100k samples of (a){' in shards of ' + str(shard) if shard else ''}{tag}: {r['wall_s']:.1f} s, "
                      f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB, file {r['output_bytes'] / 2**20:.0f} MiB",
                      flush=True)
    res = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_before": load_before,
           "load_average": os.getloadavg(),
           "rows": rows, "big": big}
    Path(args.out).write_text(json.dumps(res, indent=1))
    print("wrote", args.out)
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
