"""`spikedeploy sweep`: the grid on the bundled retrieval model (table, JSON, the Pareto page in a real browser,
every point traceable to its files), the Pareto front on hand-made points, the cache, and bad grid values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser import screenshot
from paths import REPO

from spikedeploy.graph.qparams import SynapseParams
from spikedeploy.report.sweep import mark_fronts, pareto_front

GRID = ["--targets", "loihi2,loihi1", "--weight-bits", "4,6,8", "--steps", "2,4", "--methods", "maxabs"]


def sd(*args):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SPIKEDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikedeploy", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from examples.retrieval.metric import write_dataset

    return write_dataset(tmp_path_factory.mktemp("retrieval"), samples=16, steps=4)


def _args(data, out, *grid):
    return ["sweep", data["model"], "--input", f"image={data['image']}", "--input", f"text={data['text']}",
            "--labels", data["labels"], "--metric", "retrieval", *(grid or GRID), "-o", out]


@pytest.fixture(scope="module")
def swept(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    r = sd(*_args(data, out), "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_sweep_points_are_traceable_to_their_files(data, swept):
    from examples.retrieval.metric import METRIC
    from spikedeploy.io.qgraph_file import load_qgraph
    from spikedeploy.simulate.result import load_run

    out, res = swept
    pts = res["points"]
    assert len(pts) == 12 and res["computed"] == 12 and res["cached"] == 0
    assert {(p["target"], p["weight_bits"], p["steps"]) for p in pts} == \
        {(t, b, s) for t in ("loihi2", "loihi1") for b in (4, 6, 8) for s in (2, 4)}
    labels = np.load(data["labels"])
    for p in pts:
        assert p["fits"] and p["samples"] == 16
        qg = load_qgraph(out / p["files"]["qgraph"])
        assert qg.target == p["target"]
        assert {q.num_weight_bits for q in qg.q.values() if isinstance(q, SynapseParams)} == {p["weight_bits"]}
        run = load_run(out / p["files"]["run"])
        assert run.backend == "emulator" and run.steps > p["steps"]  # the inputs' steps, then the answer's delay
        # the stored run gives the stored score: the point's metric, rescored from its own run file
        assert METRIC.make(qg.graph, labels)(run.outputs) == pytest.approx(p["score"])
        assert json.loads((out / "points" / p["key"] / "point.json").read_text())["score"] == p["score"]
    # fewer weight bits on Loihi 1 store fewer synapse bits: never more cores
    l1 = {(p["weight_bits"], p["steps"]): p["cores"] for p in pts if p["target"] == "loihi1"}
    assert l1[(4, 4)] <= l1[(8, 4)]
    # more steps cost more energy per inference (same chip, same weights)
    by = {(p["target"], p["weight_bits"], p["steps"]): p["energy_j"] for p in pts}
    assert all(by[(t, b, 4)] > by[(t, b, 2)] for t in ("loihi2", "loihi1") for b in (4, 6, 8))


def test_a_point_is_compare_on_the_first_steps(data, swept):
    # the 8-bit loihi2 point with 2 steps is `compare_targets` on the inputs' first 2 steps at the chip's own width
    from examples.retrieval.metric import METRIC
    from spikedeploy.io.graph_files import load_any
    from spikedeploy.report.compare import compare_targets

    out, res = swept
    (p,) = [p for p in res["points"] if (p["target"], p["weight_bits"], p["steps"]) == ("loihi2", 8, 2)]
    g = load_any(data["model"])
    x = {k: np.load(data[k])[:2] for k in ("image", "text")}
    row = compare_targets(g, ["loihi2"], inputs=x, metric=METRIC.make(g, np.load(data["labels"])),
                          quantize_options={"calibration": x})["targets"][0]
    assert row["energy_j"] == pytest.approx(p["energy_j"]) and row["cores"] == p["cores"]
    assert row["task"]["metric_quant"] == pytest.approx(p["score"])


def test_front_in_the_json_is_the_set_of_undominated_points(swept):
    _, res = swept
    pts = res["points"]

    def dominates(a, b):
        return (a["energy_j"] <= b["energy_j"] and a["score"] >= b["score"]
                and (a["energy_j"] < b["energy_j"] or a["score"] > b["score"]))

    expect = [p["key"] for p in pts if not any(dominates(q, p) for q in pts)]
    assert res["front"] == expect and len(expect) >= 2


def test_table_and_page_in_the_browser(data, swept, tmp_path):
    out, res = swept
    r = sd(*_args(data, out))  # the terminal form, from the cache
    assert r.returncode == 0, r.stderr
    assert "12 points (0 computed, 12 cached)" in r.stdout and "image→text R@1" in r.stdout
    for p in res["points"]:
        assert p["key"].rsplit("-", 1)[-1] in r.stdout
    page = Path(res["html"])
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2
    assert "http://" not in text and "https://" not in text and "<script" not in text
    hrefs = re.findall(r"href='([^']+)'", text)
    assert len(hrefs) == 3 * 12  # quantized graph, run and row of every point
    assert all((page.parent / h).is_file() for h in hrefs), hrefs
    img = screenshot(page, tmp_path, "1200,1800")
    gray = img.mean(axis=2)
    # the two plots (top 1100 px, left 700 px) are drawn: tiles with a real amount of ink, and coloured marks
    tiles = sum((gray[y:y + 100, x:x + 100] < 0.9).mean() > 0.03 for y in range(150, 1100, 100) for x in range(0, 700, 100))
    assert tiles >= 20, tiles
    sat = img[:1100, :700].max(axis=2) - img[:1100, :700].min(axis=2)
    assert (sat > 0.3).mean() > 0.002
    # the table below lists the points
    assert (gray[1100:] < 0.5).mean() > 0.005


def test_rerun_recomputes_nothing_and_new_points_only(data, swept, monkeypatch):
    from spikedeploy.report.sweep import sweep
    from spikedeploy.simulate import executors

    out, res = swept
    files = sorted(f for f in (out / "points").rglob("*") if f.is_file())
    before = {f: f.stat().st_mtime_ns for f in files}
    ran = []

    class Counting(executors.LocalExecutor):  # the local executor, with a record of what it was given
        def map_unordered(self, fn, items):
            items = list(items)
            ran.extend(t["key"] for t in items)
            return super().map_unordered(fn, items)

    monkeypatch.setitem(executors.EXECUTORS, "counting", Counting)

    kw = {"out_dir": out, "targets": ["loihi2", "loihi1"], "weight_bits": [4, 6, 8], "methods": ["maxabs"],
          "labels": data["labels"], "metric": "retrieval", "html": None}
    inputs = [f"image={data['image']}", f"text={data['text']}"]
    again = sweep(data["model"], inputs, steps=[2, 4], executor="counting", **kw)
    assert ran == [] and again["computed"] == 0 and again["cached"] == 12
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert [p["score"] for p in again["points"]] == [p["score"] for p in res["points"]]
    # a grid that overlaps the stored one: only its new point runs
    more = sweep(data["model"], inputs, steps=[2, 3], executor="counting",
                 **{**kw, "targets": ["loihi2"], "weight_bits": [4]})
    assert (more["computed"], more["cached"]) == (1, 1) and len(ran) == 1
    assert [p["steps"] for p in more["points"] if not p["cached"]] == [3]
    assert {f: f.stat().st_mtime_ns for f in files} == before


def test_changed_data_is_recomputed(data, tmp_path):
    from spikedeploy.report.sweep import sweep

    labels = tmp_path / "labels.npy"
    np.save(labels, np.load(data["labels"]))
    kw = {"out_dir": tmp_path / "o", "targets": ["loihi2"], "steps": [2], "labels": labels, "metric": "retrieval",
          "html": None}
    inputs = {"image": data["image"], "text": data["text"]}
    assert sweep(data["model"], inputs, **kw)["computed"] == 1
    assert sweep(data["model"], inputs, **kw)["computed"] == 0
    np.save(labels, np.roll(np.load(data["labels"]), 1))  # other labels: another dataset
    assert sweep(data["model"], inputs, **kw)["computed"] == 1


# ---- the Pareto front on hand-made points -----------------------------------------------------------

def test_pareto_front_by_hand():
    # (energy, -score), both minimised. By hand: A(1, -0.5) and B(2, -0.9) and C(4, -1.0) trade off; D(3, -0.8)
    # is beaten by B (less energy, higher score); E equals B (neither dominates the other: both stay);
    # F(1, -0.4) has A's energy and a lower score (dominated); G(5, -1.0) has C's score for more energy.
    vals = [(1, -0.5), (2, -0.9), (4, -1.0), (3, -0.8), (2, -0.9), (1, -0.4), (5, -1.0)]
    assert pareto_front(vals) == [0, 1, 2, 4]
    assert pareto_front([(1, 1, 1)]) == [0]
    # a third objective (cores) brings back a point the first two drop: D uses fewer cores than everyone
    vals3 = [(1, -0.5, 4), (2, -0.9, 4), (4, -1.0, 4), (3, -0.8, 1)]
    assert pareto_front(vals3) == [0, 1, 2, 3]


def test_mark_fronts_leaves_out_points_that_do_not_fit():
    def pt(key, e, s, c, fits=True):
        return {"key": key, "energy_j": e, "score": s, "cores": c, "fits": fits}

    pts = [pt("a", 1e-6, 0.5, 2), pt("b", 2e-6, 0.9, 3), pt("c", 3e-6, 0.8, 1),
           pt("x", 1e-9, 1.0, 1, fits=False),  # would dominate all, but does not fit
           {**pt("y", 1e-6, None, 1)}]  # no score (e.g. no run): not ranked
    front, front_cores = mark_fronts(pts)
    assert front == ["a", "b"] and front_cores == ["a", "b", "c"]
    assert [p["front"] for p in pts] == [True, True, False, False, False]


# ---- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid,needle", [
    (["--targets", "loihi2,nochip", "--steps", "2"], "--targets nochip: unknown target 'nochip'"),
    (["--weight-bits", "0", "--steps", "2"], "--weight-bits 0: a weight width must be 1..32 bits"),
    (["--weight-bits", "4,40", "--steps", "2"], "--weight-bits 40: a weight width must be 1..32 bits"),
    (["--steps", "0,2"], "--steps 0: a point needs at least 1 time step"),
    (["--steps", "2,9"], "4 time steps, but the grid asks for 9"),
    (["--steps", "2", "--methods", "best"], "--methods best: unknown quantization method"),
])
def test_bad_grid_values_refused_in_one_line(data, tmp_path, grid, needle):
    out = tmp_path / "out"
    r = sd(*_args(data, out, *grid))
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert needle in lines[0], lines[0]
    assert not out.exists()  # refused before anything was written


def test_metric_registry():
    from types import SimpleNamespace

    from spikedeploy.errors import SpikeDeployError
    from spikedeploy.report.task_metrics import get_metric

    with pytest.raises(SpikeDeployError, match="unknown metric 'nope'; known: accuracy, .*retrieval"):
        get_metric("nope")
    g = SimpleNamespace(outputs=["out"])  # accuracy reads the first output's name only
    # 3 samples, 2 classes, 2 steps: counts [[2, 0], [0, 1], [1, 1]] -> argmax 0, 1, 0
    o = np.array([[[1, 0], [0, 1], [1, 0]], [[1, 0], [0, 0], [0, 1]]])
    assert get_metric("accuracy").make(g, np.array([0, 1, 1]))({"out": o}) == pytest.approx(2 / 3)


def test_single_input_graph_with_accuracy_a_chip_file_and_dt(tmp_path):
    # a NIR file (no dt recorded) with one input, given bare; a chip file with 4-bit weights next to loihi2
    from spikedeploy.converters.nir import write_nir
    from spikedeploy.graph.ir import Graph, Node
    from spikedeploy.report.compare import compare_targets

    rng = np.random.default_rng(0)
    g = Graph.chain(Node("in", "Input", {"shape": [8]}), Node("fc1", "Linear", {"weight": rng.normal(size=(40, 8))}),
                    Node("h", "IF", {"r": np.ones(40), "v_threshold": np.ones(40)}),
                    Node("fc2", "Linear", {"weight": rng.normal(size=(4, 40))}),
                    Node("o", "IF", {"r": np.ones(4), "v_threshold": np.ones(4)}), Node("out", "Output"),
                    dt=1.0).validate()
    nir, x, y, chip = tmp_path / "g.nir", tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "edge.toml"
    write_nir(g, nir)
    x_arr = (rng.random((6, 12, 8)) < 0.4).astype(np.float32)
    np.save(x, x_arr)
    np.save(y, rng.integers(0, 4, 12))
    chip.write_text('name = "edge"\n[numeric]\nweight_bits = 4\n')
    out = tmp_path / "out"
    r = sd("sweep", nir, "--input", x, "--labels", y, "--metric", "accuracy", "--dt", 1, "--targets",
           f"loihi2,fixedpoint:{chip}", "--weight-bits", "4,8", "--steps", "6", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    pts = {(p["target"], p["weight_bits"]): p for p in json.loads(r.stdout)["points"]}
    assert pts[("loihi2", 4)]["fits"] and pts[("loihi2", 8)]["fits"] and pts[("edge", 4)]["fits"]
    wide = pts[("edge", 8)]  # wider than the chip's own 4 bits: its quantizer refuses, the point does not fit
    assert not wide["fits"] and "weight_bits must be in 1..4 for target 'edge'" in wide["why_not"][0]
    assert wide["files"]["qgraph"] is None and not wide["front"]
    # the accuracy plug-in scores as compare's own labels path (fidelity: argmax of the first output's counts)
    row = compare_targets(g, ["loihi2"], inputs={"in": x_arr}, labels=np.load(y),
                          quantize_options={"weight_bits": 4, "calibration": {"in": x_arr}})["targets"][0]
    assert row["task"]["accuracy_quant"] == pytest.approx(pts[("loihi2", 4)]["score"])
    # an edited chip file is another chip: its points run again, loihi2's do not
    chip.write_text('name = "edge"\n[numeric]\nweight_bits = 4\nstate_bits = 16\n')
    from spikedeploy.report.sweep import sweep

    again = sweep(nir, [str(x)], out_dir=out, labels=y, metric="accuracy", dt=1.0, steps=[6],
                  targets=["loihi2", f"fixedpoint:{chip}"], weight_bits=[4, 8], html=None)
    assert sorted((p["target"], p["weight_bits"]) for p in again["points"] if not p["cached"]) == \
        [("edge", 4), ("edge", 8)]


@pytest.mark.parametrize("change,needle", [
    ({"metric": "retrieval", "labels": None}, "--metric retrieval: needs --labels"),
    ({"samples": 17}, "--samples 17: the inputs hold 16 samples; give 1..16"),
    ({"labels": "short"}, "shape (15,), but the inputs hold 16 samples"),
    ({"inputs": "image only"}, "--input: the graph's inputs are ['image', 'text'], got ['image']"),
    ({"metric": "nope"}, "unknown metric 'nope'"),
])
def test_bad_dataset_refused_before_any_point(data, tmp_path, change, needle):
    from spikedeploy.errors import SpikeDeployError
    from spikedeploy.report.sweep import sweep

    kw = {"out_dir": tmp_path / "o", "targets": ["loihi2"], "steps": [2], "labels": data["labels"],
          "metric": "retrieval"}
    inputs = {"image": data["image"], "text": data["text"]}
    if change.get("labels") == "short":
        np.save(tmp_path / "y.npy", np.load(data["labels"])[:15])
        change = {"labels": tmp_path / "y.npy"}
    if change.get("inputs"):
        inputs, change = {"image": data["image"]}, {}
    with pytest.raises(SpikeDeployError) as e:
        sweep(data["model"], inputs, **{**kw, **change})
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "o").exists()


def test_points_computed_as_ray_tasks_equal_the_local_ones(data, swept, tmp_path):
    pytest.importorskip("ray")
    out, res = swept
    r = sd(*_args(data, tmp_path / "ray", "--targets", "loihi2", "--weight-bits", "4,8", "--steps", "2"),
           "--executor", "ray", "--json")
    assert r.returncode == 0, r.stderr
    got = {(p["weight_bits"], p["steps"]): p for p in json.loads(r.stdout)["points"]}
    want = {(p["weight_bits"], p["steps"]): p for p in res["points"] if p["target"] == "loihi2"}
    assert set(got) == {(4, 2), (8, 2)}
    for k in got:  # computed in Ray workers, the same figures as the local sweep's
        assert (got[k]["score"], got[k]["energy_j"], got[k]["cores"]) == (want[k]["score"], want[k]["energy_j"],
                                                                         want[k]["cores"])
