"""Partitioning at Hala Point scale (issue 17: 1152 Loihi 2 chips, ~1.15 billion neurons and ~128 billion
synapses placed in <= 5 minutes and <= 8 GiB, the lower bound beside it; cost linear in layers and cores).

Graph: partition_synthetic.hala_graph(columns), HALA_COLUMN repeated `columns` times (one column
holds about one chip's worth of neurons: 987,728 neurons, 109.98 M synapses, 7 layers). Sizes 1, 8, 64 and
1152 columns; each size runs in a fresh process so that its peak RSS (resource.getrusage ru_maxrss: graph,
model and placement included) is its own. Target loihi2 with the chip cap lifted (the graph needs more
chips than 1152 under the resource model; the lower bound says how many at least).
Writes benchmarks/results/partition_scale.json; prints a markdown table.
Usage: nice .venv/bin/python benchmarks/bench_partition_scale.py [--sizes 1,8,64,1152]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from results_table import publish

HERE = Path(__file__).resolve().parent
LIMIT_S, LIMIT_GIB = 300, 8


def one(columns: int) -> dict:
    from partition_synthetic import HALA_CHIPS, hala_graph

    from spikedeploy.partition.placer import partition
    from spikedeploy.targets.spec import get_target

    target = get_target("loihi2")
    t0 = time.perf_counter()
    g = hala_graph(columns)
    build_s = time.perf_counter() - t0
    total = g.stats()["total"]
    t0 = time.perf_counter()
    p = partition(g, target, chips=64 * columns)
    part_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    layers = len(p.layers)
    return {
        "columns": columns, "layers": layers, "neurons": total["neurons"], "synapses": total["synapses"],
        "build_s": round(build_s, 2), "partition_s": round(part_s, 2), "max_rss_mib": round(rss / 2**20, 1),
        "cores_used": p.cores_used, "cores_lower_bound": p.lower_bound,
        "lower_bound_by_resource": p.lower_bound_by_resource, "ratio": round(p.ratio_to_lower_bound, 3),
        "chips": p.chips, "chips_lower_bound": -(-p.lower_bound // target.cores_per_chip),
        "hala_point_chips": HALA_CHIPS, "ms_per_layer": round(1e3 * part_s / layers, 3),
        "us_per_core": round(1e6 * part_s / p.cores_used, 2),
        "pass": bool(part_s <= LIMIT_S and rss <= LIMIT_GIB * 2**30),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,8,64,1152")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one size
    ap.add_argument("--out", default=str(HERE / "results" / "partition_scale.json"))
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one)))
        return 0


    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        r = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr, flush=True)
    out = {"benchmark": "partition_scale", "machine": platform.platform(), "python": platform.python_version(),
           "target": "loihi2", "limits": {"time_s": LIMIT_S, "peak_gib": LIMIT_GIB}, "results": rows}
    return publish(args.out, out, rows, ["columns", "layers", "neurons", "synapses", "partition_s", "max_rss_mib", "cores_used",
            "cores_lower_bound", "ratio", "chips", "chips_lower_bound", "ms_per_layer", "us_per_core", "pass"])


if __name__ == "__main__":
    raise SystemExit(main())
