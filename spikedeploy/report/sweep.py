"""Design-space sweeps: one float model and one dataset over a grid of targets × weight bits × time steps ×
quantization methods, with the Pareto front of energy per inference against the task metric (and cores).

Each point is one `compare_targets` row (spikedeploy/report/compare.py: fits or why not, cores, chips, energy,
latency, and the task metric in that chip's arithmetic, from the chip's own emulated run), computed with the
point's quantization options (`weight_bits`: the chip's synapse weight width, as Loihi's num_weight_bits; a
width above the chip's own is a quantization refusal, shown as "does not fit") on the first `steps` time
steps of the inputs. Under OUT every point keeps what it was computed from:

    OUT/points/<key>/g.q.npz     the quantized graph (spikedeploy quantize's format)
    OUT/points/<key>/run.npz     the chip's emulated run: outputs and spike counts (spikedeploy simulate's format)
    OUT/points/<key>/point.json  the point's row, written last: its presence marks the point done
    OUT/sweep.json, OUT/sweep.html

A point's key hashes the model file's bytes, the dataset's files (inputs, labels, calibration) and the
point's options, so a rerun recomputes only points whose key has no complete directory yet (an
interrupted sweep resumes; a changed model or dataset recomputes everything).

Points are computed by `run_point`, a top-level function of one picklable task dict, mapped over the
points by an executor (spikedeploy/simulate/executors.py): `local` (one after another in this process) by
default, or `ray` (Ray tasks on a local or remote cluster, whose nodes need the files at the same paths).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from spikedeploy.errors import SpikeDeployError

SCHEMA = "spikedeploy-sweep-point/1"
# the widest weight a chip file may declare (spikedeploy/checks/target_file.py: weight_bits 1..32)
MAX_WEIGHT_BITS = 32
DICE_LABEL = "spike agreement with float (min Dice over layers)"


# ---- the grid -------------------------------------------------------------------------------------

def parse_list(option: str, text: str | Sequence, kind: type = str) -> list:
    """`a,b,c` (or a sequence) -> distinct values in order; a value that is not a `kind` fails in one line."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    out = []
    for s in items:
        if s == "":
            continue
        if kind is int and not isinstance(s, int):
            try:
                s = int(s)
            except ValueError:
                raise SpikeDeployError(f"{option} {text}: '{s}' is not an integer; give a comma-separated list "
                                       "such as 4,6,8") from None
        if s not in out:
            out.append(s)
    if not out:
        raise SpikeDeployError(f"{option}: empty list; give at least one value")
    return out


def make_grid(targets: Sequence[str], weight_bits: Sequence[int | None], steps: Sequence[int],
              methods: Sequence[str]) -> list[dict]:
    """The points of the grid, in order (target outermost); every value is checked before any work."""
    from spikedeploy.quantize.quantizer import METHODS
    from spikedeploy.targets.spec import get_target

    names = []
    for t in targets:  # an unknown target fails here, in one line
        try:
            names.append(get_target(t).name)
        except SpikeDeployError as e:
            raise type(e)(f"--targets {t}: {e}") from None
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SpikeDeployError(f"--targets: two entries are target '{dup}'; give each target once")
    for b in weight_bits:
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_WEIGHT_BITS):
            raise SpikeDeployError(f"--weight-bits {b}: a weight width must be 1..{MAX_WEIGHT_BITS} bits (the widest a "
                                   "chip file may declare); e.g. --weight-bits 4,6,8")
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise SpikeDeployError(f"--steps {s}: a point needs at least 1 time step; e.g. --steps 4,8")
    for m in methods:
        if m not in METHODS:
            raise SpikeDeployError(f"--methods {m}: unknown quantization method; choose from {', '.join(METHODS)}")
    return [{"target": t, "target_name": n, "weight_bits": b, "steps": s, "method": m}
            for t, n in zip(targets, names, strict=True) for b in weight_bits for s in steps for m in methods]


# ---- keys and the cache ---------------------------------------------------------------------------

def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprint(inputs: dict[str, str], labels: str | None, calibration: dict[str, str] | None,
                        samples: int | None) -> str:
    """A digest of every file's bytes under its role and name, and of how many samples are used."""
    h = hashlib.sha256()
    parts = [("input", k, v) for k, v in sorted(inputs.items())]
    parts += [("labels", "", labels)] if labels else []
    parts += [("calibration", k, v) for k, v in sorted((calibration or {}).items())]
    for role, name, path in parts:
        h.update(f"{role}:{name}:{file_digest(path)}\n".encode())
    h.update(f"samples:{samples}\n".encode())
    return h.hexdigest()


def _target_digest(target: str) -> str:
    """Everything the target is (limits, arithmetic, constants): an edited chip file is another chip."""
    from spikedeploy.targets.spec import get_target

    spec = json.dumps(get_target(target).as_dict(), sort_keys=True, default=str)
    return hashlib.sha256(spec.encode()).hexdigest()


def point_key(model_digest: str, data_digest: str, point: dict, *, metric: str | None, seed: int,
              dt: float | None = None) -> str:
    """`<target>-w<bits>-t<steps>-<method>-<hash>`: readable, and unique to everything the row depends on."""
    ident = {"schema": SCHEMA, "model": model_digest, "data": data_digest, "target": point["target_name"],
             "target_spec": _target_digest(point["target"]), "weight_bits": point["weight_bits"],
             "steps": point["steps"], "method": point["method"], "metric": metric, "seed": seed, "dt": dt}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", point["target_name"])
    bits = "native" if point["weight_bits"] is None else point["weight_bits"]
    return f"{name}-w{bits}-t{point['steps']}-{point['method']}-{digest}"


def cached_point(out_dir: Path, key: str) -> dict | None:
    """The stored row of `key`, or None when the point is missing or incomplete (it is then recomputed)."""
    d = out_dir / "points" / key
    try:
        rec = json.loads((d / "point.json").read_text())
    except (OSError, ValueError):
        return None
    if rec.get("schema") != SCHEMA or rec.get("key") != key:
        return None
    if any(f and not (out_dir / f).is_file() for f in (rec.get("files") or {}).values()):
        return None
    return rec


# ---- one point ------------------------------------------------------------------------------------

def _load_inputs(paths: dict[str, str], steps: int, samples: int | None) -> dict[str, np.ndarray]:
    out = {}
    for name, p in paths.items():
        a = np.load(p, mmap_mode="r", allow_pickle=False)
        out[name] = np.ascontiguousarray(a[:steps, :samples])
    return out


def run_point(task: dict) -> dict:
    """Compute one point and write its files (see the module doc). `task` holds only plain data (paths and
    options), so any executor can ship it to another process or machine."""
    from spikedeploy.graph.ir import set_dt
    from spikedeploy.io.graph_files import load_any
    from spikedeploy.io.qgraph_file import save_qgraph
    from spikedeploy.report.compare import compare_targets
    from spikedeploy.report.task_metrics import get_metric
    from spikedeploy.simulate.result import save_run

    t0 = time.perf_counter()
    pt, out_dir, key = task["point"], Path(task["out"]), task["key"]
    d = out_dir / "points" / key
    d.mkdir(parents=True, exist_ok=True)
    graph = load_any(task["model"])
    if task.get("dt") is not None:
        set_dt(graph, task["dt"])
    n = task["samples"]
    inputs = _load_inputs(task["inputs"], pt["steps"], n)
    calib = _load_inputs(task["calibration"], pt["steps"], None) if task["calibration"] else inputs
    labels = np.load(task["labels"], allow_pickle=False)[:n] if task["labels"] else None
    score = None
    if task["metric"]:
        score = get_metric(task["metric"]).make(graph, labels)
    keep: dict = {}
    qopt = {"method": pt["method"], "weight_bits": pt["weight_bits"], "calibration": calib, "seed": task["seed"]}
    row = compare_targets(graph, [pt["target"]], inputs=inputs, metric=score, quantize_options=qopt,
                          keep=keep)["targets"][0]
    kept = keep.get(row["target"], {})
    files = {"qgraph": None, "run": None}
    if kept.get("qgraph") is not None:
        files["qgraph"] = f"points/{key}/g.q.npz"
        save_qgraph(kept["qgraph"], out_dir / files["qgraph"], compress=True)
    if kept.get("run") is not None:
        files["run"] = f"points/{key}/run.npz"
        # outputs and spike counts (what the metric and the energy come from); the per-layer voltage traces
        # the fidelity check probed would make a sweep's disk use grow with layers x samples x points
        save_run(replace(kept["run"], traces={}), out_dir / files["run"])
    task_res = row["task"] or {}
    qg = kept.get("qgraph")
    rec = {
        "schema": SCHEMA, "key": key, "target": row["target"], "target_arg": pt["target"],
        "weight_bits": int(qg.meta.get("weight_bits", row["weight_bits"])) if qg is not None else
        (pt["weight_bits"] or row["weight_bits"]),
        "weight_bits_asked": pt["weight_bits"], "steps": pt["steps"], "method": pt["method"],
        "samples": int(next(iter(inputs.values())).shape[1]),
        "fits": row["fits"], "why_not": row["why_not"][:3], "why_not_total": row["why_not_total"],
        "cores": row["cores"], "chips": row["chips"], "energy_j": row["energy_j"], "latency_s": row["latency_s"],
        "throughput_per_s": row["throughput_per_s"], "energy_estimated": row["energy_estimated"],
        "timing_estimated": row["timing_estimated"], "limits_estimated": row["limits_estimated"],
        "metric": task["metric"] or "dice_min",
        "score": task_res.get("metric_quant") if task["metric"] else task_res.get("dice_min"),
        "score_float": task_res.get("metric_float") if task["metric"] else None,
        "dice_min": task_res.get("dice_min"),
        "approximations": row["approximations"][:3],
        "files": files, "seconds": round(time.perf_counter() - t0, 3),
    }
    from spikedeploy.cli.jsonout import dumps
    from spikedeploy.io.atomic import atomic_write

    with atomic_write(d / "point.json", "w", encoding="utf-8") as f:
        f.write(dumps(rec))
    return rec


def pareto_front(values: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the rows no other row dominates, every objective minimised (a row dominates another when it
    is no worse in every objective and better in one; equal rows are both on the front)."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    front = []
    for i in range(len(v)):
        no_worse = (v <= v[i]).all(axis=1)
        better = (v < v[i]).any(axis=1)
        if not (no_worse & better).any():
            front.append(i)
    return front


def mark_fronts(points: list[dict]) -> tuple[list[str], list[str]]:
    """Marks each point's `front` (energy per inference vs score) and `front_cores` (energy, score and cores);
    only points that fit and have a score take part. Returns the keys on each front."""
    ok = [p for p in points if p["fits"] and p["score"] is not None and p["energy_j"] is not None]
    f2 = {ok[i]["key"] for i in pareto_front([(p["energy_j"], -p["score"]) for p in ok])} if ok else set()
    f3 = {ok[i]["key"] for i in pareto_front([(p["energy_j"], -p["score"], p["cores"]) for p in ok])} if ok else set()
    for p in points:
        p["front"], p["front_cores"] = p["key"] in f2, p["key"] in f3
    return [p["key"] for p in points if p["front"]], [p["key"] for p in points if p["front_cores"]]


# ---- the sweep ------------------------------------------------------------------------------------

def _named_paths(specs: Sequence[str] | dict[str, str] | None, graph, option: str) -> dict[str, str] | None:
    """`NAME=X.npy` (a bare `X.npy` for a single-input graph) -> {name: path}."""
    if not specs:
        return None
    if isinstance(specs, dict):
        return {k: str(v) for k, v in specs.items()}
    out = {}
    for s in specs:
        if "=" not in s and len(graph.inputs) != 1:
            raise SpikeDeployError(f"{option} {s}: the graph has several inputs {graph.inputs}; write NAME={s}")
        name, path = s.split("=", 1) if "=" in s else (graph.inputs[0], s)
        out[name] = path
    return out


def _mmap(path, allow_pickle=False):
    return np.load(path, mmap_mode="r", allow_pickle=allow_pickle)


def _check_dataset(graph, inputs: dict[str, str], labels: str | None, calibration: dict[str, str] | None,
                   samples: int | None, max_steps: int, metric) -> int:
    """Every file against the graph and the grid, before any point runs; returns the samples used."""
    from spikedeploy.checks.sim_inputs import check_array_file
    from spikedeploy.io.paths import check_input_file

    shapes = {}
    for role, files in (("--input", inputs), ("--calibrate", calibration)):
        if files is None:
            continue
        missing = [n for n in graph.inputs if n not in files]
        if missing or set(files) - set(graph.inputs):
            raise SpikeDeployError(f"{role}: the graph's inputs are {graph.inputs}, got {sorted(files)}; give "
                                   f"NAME=X.npy for each of {graph.inputs}")
        for name, p in files.items():
            check_input_file(p, f"{role} file")
            a = check_array_file(_mmap, Path(p), f"{role} {name}={p}")
            if a.ndim < 2:
                raise SpikeDeployError(f"{role} {name}={p}: shape {a.shape}; inputs are time-major [T, B, ...]")
            if a.shape[0] < max_steps:
                raise SpikeDeployError(f"{role} {name}={p}: {a.shape[0]} time steps, but the grid asks for "
                                       f"{max_steps} (--steps); give inputs with at least {max_steps} steps or "
                                       "lower --steps")
            if role == "--input":
                shapes[name] = a.shape
    batch = {s[1] for s in shapes.values()}
    if len(batch) != 1:
        raise SpikeDeployError(f"--input: the inputs hold different numbers of samples {sorted(batch)}; give "
                               "the same samples for every input")
    b = batch.pop()
    if samples is not None and not 1 <= samples <= b:
        raise SpikeDeployError(f"--samples {samples}: the inputs hold {b} samples; give 1..{b}")
    n = b if samples is None else samples
    if metric is not None and metric.needs_labels and labels is None:
        raise SpikeDeployError(f"--metric {metric.name}: needs --labels (one label per sample, [{b}])")
    if labels is not None:
        check_input_file(labels, "--labels file")
        y = check_array_file(_mmap, Path(labels), f"--labels {labels}")
        if y.shape[:1] != (b,):
            raise SpikeDeployError(f"--labels {labels}: shape {y.shape}, but the inputs hold {b} samples; give [{b}]")
    return n


def sweep(model: str | Path, inputs: Sequence[str] | dict[str, str], *, out_dir: str | Path,
          targets: Sequence[str], weight_bits: Sequence[int | None] = (None,), steps: Sequence[int],
          methods: Sequence[str] = ("maxabs",), labels: str | Path | None = None, metric: str | None = None,
          calibration: Sequence[str] | dict[str, str] | None = None, samples: int | None = None, seed: int = 0,
          dt: float | None = None, executor: str = "local", address: str | None = None, progress: Callable[[float], None] | None = None,
          html: str | Path | None = "default") -> dict:
    """Run (or reuse) every point of the grid; write OUT/sweep.json and the Pareto page (html: a path,
    "default" for OUT/sweep.html, None for none). Returns the sweep's dict (see sweep.json)."""
    from spikedeploy.cli.jsonout import dumps
    from spikedeploy.io.atomic import atomic_write
    from spikedeploy.io.graph_files import load_any
    from spikedeploy.io.paths import check_input_file
    from spikedeploy.report.task_metrics import get_metric

    grid = make_grid(targets, weight_bits, steps, methods)
    check_input_file(model, "model file")
    graph = load_any(model)
    if dt is not None:
        from spikedeploy.graph.ir import set_dt

        set_dt(graph, dt)
    m = get_metric(metric) if metric else None
    inputs = _named_paths(inputs, graph, "--input")
    if not inputs:
        raise SpikeDeployError("--input: a sweep needs inputs (NAME=X.npy per graph input, time-major [T, B, ...])")
    calibration = _named_paths(calibration, graph, "--calibrate")
    labels = str(labels) if labels else None
    n = _check_dataset(graph, inputs, labels, calibration, samples, max(steps), m)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SpikeDeployError(f"-o/--out {out_dir}: is a file; give a directory (the sweep writes points/ there)")
    try:
        (out_dir / "points").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpikeDeployError(f"-o/--out {out_dir}: cannot create the directory ({e.strerror or e}); give a "
                               "writable directory") from None
    model_digest = file_digest(model)
    data_digest = dataset_fingerprint(inputs, labels, calibration, samples)
    base = {"model": str(model), "inputs": inputs, "labels": labels, "calibration": calibration, "samples": n,
            "metric": metric, "seed": seed, "dt": dt, "out": str(out_dir)}
    tasks, points = [], []
    for pt in grid:
        key = point_key(model_digest, data_digest, pt, metric=metric, seed=seed, dt=dt)
        rec = cached_point(out_dir, key)
        points.append(rec if rec is not None else key)
        if rec is None:
            tasks.append({**base, "point": pt, "key": key})
    done = {}
    from spikedeploy.simulate.executors import get_executor

    ex = get_executor(executor, address) if tasks else None
    for i, (_, rec) in enumerate(ex.map_unordered(run_point, tasks) if tasks else ()):
        done[rec["key"]] = rec
        if progress:
            progress((i + 1) / len(tasks))
    points = [{**done[p], "cached": False} if isinstance(p, str) else {**p, "cached": True} for p in points]
    front, front_cores = mark_fronts(points)
    res = {
        "model": str(model), "model_sha256": model_digest, "dataset_sha256": data_digest,
        "dataset": {"inputs": inputs, "labels": labels, "calibration": calibration or "the inputs", "samples": n},
        "metric": {"name": m.name if m else "dice_min", "label": m.label if m else DICE_LABEL},
        "grid": {"targets": list(targets), "weight_bits": list(weight_bits), "steps": list(steps),
                 "methods": list(methods)},
        "seed": seed, "dt": dt, "out": str(out_dir), "computed": len(tasks), "cached": len(grid) - len(tasks),
        "points": points, "front": front, "front_cores": front_cores,
        "notes": ["front: no other fitting point has lower or equal energy per inference and a higher or equal "
                  "score, one of them strictly; front_cores: the same with cores as a third objective",
                  "* marks a figure resting on at least one estimated constant (see each point's run with "
                  "`spikedeploy compare`)",
                  "weight bits above a target's own width are refused by its quantizer (the point does not fit)"],
    }
    res["html"] = None
    if html is not None:
        from spikedeploy.report.sweep_html import write_html

        res["html"] = str(write_html(res, out_dir / "sweep.html" if html == "default" else html))
    res["json"] = str(out_dir / "sweep.json")
    with atomic_write(res["json"], "w", encoding="utf-8") as f:
        f.write(dumps(res))
    return res


# ---- the terminal ---------------------------------------------------------------------------------

def table_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """Column names and one row of strings per point (the terminal table and the HTML page share them)."""
    from spikedeploy.report.build import _eng

    cols = ["target", "w bits", "steps", "method", "fits", "cores", "energy/inf", "latency", res["metric"]["label"],
            "front", "front +cores", "key (hash)"]
    rows = []
    for p in res["points"]:
        fits = "yes" if p["fits"] else "no"
        rows.append([p["target"], str(p["weight_bits"]), str(p["steps"]), p["method"], fits,
                     f"{p['cores']}" + ("*" if p["limits_estimated"] else ""),
                     _eng(p["energy_j"], "J") + ("*" if p["energy_estimated"] else ""),
                     _eng(p["latency_s"], "s") + ("*" if p["timing_estimated"] else ""),
                     "-" if p["score"] is None else f"{p['score']:.3f}", "yes" if p["front"] else "",
                     "yes" if p["front_cores"] else "", p["key"].rsplit("-", 1)[-1]])
    return cols, rows


def render_terminal(res: dict, console) -> None:
    from rich.table import Table

    cols, rows = table_rows(res)
    t = Table(title=f"sweep: {len(rows)} points ({res['computed']} computed, {res['cached']} cached)")
    for c in cols:
        t.add_column(c, overflow="fold")
    for p, row in zip(res["points"], rows, strict=True):
        t.add_row(*row, style="bold" if p["front"] else None)
    console.print(t)
    why: dict[str, list[str]] = {}  # one line per distinct reason, not one per point
    for p in res["points"]:
        if not p["fits"] and p["why_not"]:
            why.setdefault(f"{p['target']}: {p['why_not'][0]}", []).append(f"w{p['weight_bits']}")
    for w, bits in why.items():
        console.print(f"does not fit ({', '.join(dict.fromkeys(bits))}): {w}", highlight=False, soft_wrap=True)
    for n in res["notes"]:
        console.print(n, highlight=False, soft_wrap=True)
    console.print(f"points under {res['out']}/points/<key>/ (g.q.npz, run.npz, point.json); {res['json']}"
                  + (f"; {res['html']}" if res["html"] else ""), highlight=False, soft_wrap=True)
