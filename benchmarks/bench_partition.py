"""Partitioning speed and memory on large layered graphs (acceptance: 1M neurons / 100M synapses in <= 30 s
and <= 4 GiB peak).

Graphs (tests/helpers/partition_synthetic.py, int8 weights, seed 0):
  conv_dense  ~1.14M neurons, ~100M synapses: conv front end (plain, strided, grouped) + dense back end
  dense       100 Linear+LIF layers of 1000 neurons: 100k neurons, 100M synapses (100 MB of int8 weights)
Measures partition() wall time, tracemalloc peak (Python allocations during partition) and ru_maxrss
(process peak, graph included). Writes benchmarks/results/partition.json; prints a markdown table.
Usage: .venv/bin/python benchmarks/bench_partition.py [--target loihi1] [--only conv_dense]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

from results_table import publish

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))  # the synthetic graphs are test helpers


def _graphs():
    from partition_synthetic import benchmark_graph, dense_chain

    return {
        "conv_dense": benchmark_graph,
        "dense": lambda: dense_chain([1000] * 101, seed=0),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="loihi1")
    ap.add_argument("--only", default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "partition.json"))
    args = ap.parse_args(argv)

    from spikedeploy.partition.placer import partition
    from spikedeploy.targets.spec import get_target

    target = get_target(args.target)
    rows = []
    for name, make in _graphs().items():
        if args.only and name != args.only:
            continue
        t0 = time.perf_counter()
        g = make()
        build_s = time.perf_counter() - t0
        total = g.stats()["total"]
        tracemalloc.start()
        t0 = time.perf_counter()
        p = partition(g, target)
        part_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # untraced timing: tracemalloc slows allocation-heavy code
        t0 = time.perf_counter()
        partition(g, target)
        part_s_plain = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        rows.append({
            "graph": name, "target": target.name, "neurons": total["neurons"], "synapses": total["synapses"],
            "build_s": round(build_s, 2), "partition_s": round(part_s_plain, 2),
            "partition_s_traced": round(part_s, 2), "tracemalloc_peak_mib": round(peak / 2**20, 1),
            "max_rss_mib": round(rss / 2**20, 1), "cores_used": p.cores_used, "cores_lower_bound": p.lower_bound,
            "ratio": round(p.ratio_to_lower_bound, 3), "chips": p.chips,
            "pass": bool(part_s_plain <= 30 and rss <= 4 * 2**30),
        })
        del g, p
    out = {"benchmark": "partition", "machine": platform.platform(), "python": platform.python_version(),
           "limits": {"time_s": 30, "peak_gib": 4}, "results": rows}
    return publish(args.out, out, rows, ["graph", "neurons", "synapses", "partition_s", "tracemalloc_peak_mib", "max_rss_mib", "cores_used",
            "cores_lower_bound", "ratio", "chips", "pass"])


if __name__ == "__main__":
    raise SystemExit(main())
