"""Report: JSON validates against the schema; terminal and HTML renderings; HTML shows real plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
from browser import screenshot
from partition_synthetic import dense_chain

from examples.retrieval.report_section import SECTION as RETRIEVAL  # registers the task section
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.report.build import build_report, render_terminal, report_schema
from spikedeploy.report.html import write_html
from spikedeploy.simulate.result import Run

jsonschema = pytest.importorskip("jsonschema")


def _run(g: Graph, T=10, B=2, seed=0) -> Run:
    rng = np.random.default_rng(seed)
    counts = {}
    for name, node in g.nodes.items():
        if node.op in ("Input", "LIF"):
            n = int(np.prod(node.out_shape))
            counts[name] = rng.binomial(n, 0.05, size=(T, B))
    return Run("test", T, B, counts=counts)


def _fid_row(op, **kw):
    from spikedeploy.quantize.fidelity import LAYER_KEYS

    return {**dict.fromkeys(LAYER_KEYS), "op": op, "spiking": True, "silent": False, **kw}


# the shape fidelity() returns: lif1 scored, lif2 silent on both sides (left out of the headline)
FIDELITY = {
    "dice_min": 0.83, "dice_mean": 0.83, "layers_scored": 1, "silent_layers": ["lif2"],
    "layers": {"lif1": _fid_row("LIF", dice=0.83, precision=0.8, recall=0.86, count_ratio=1.08, spikes_float=100,
                                spikes_quant=108, spikes_both=86, rate_float=0.10, rate_quant=0.108, rate_change=0.08),
               "lif2": _fid_row("LIF", silent=True, dice=1.0, spikes_float=0, spikes_quant=0, spikes_both=0,
                                rate_float=0.0, rate_quant=0.0, rate_change=0.0)},
    "outputs": {}, "task": {"accuracy_float": 0.9, "accuracy_quant": 0.88, "prediction_agreement": 0.95},
    "steps": 28, "input_steps": 25, "depth": 3, "backend": "emulator", "arith": "loihi2",
}


@pytest.fixture(scope="module")
def report():
    g = dense_chain([64, 300, 200, 10], seed=3)
    return build_report(g, "loihi1", run=_run(g),
                        fidelity=FIDELITY,
                        sections={RETRIEVAL.key: {"gallery_size": 500, "embedding_dim": 10,
                                   "float": {"image_to_text": {"R@1": 0.9, "R@5": 0.95},
                                             "text_to_image": {"R@1": 0.8, "R@5": 0.9}},
                                   "emulator": {"image_to_text": {"R@1": 0.88, "R@5": 0.95},
                                                "text_to_image": {"R@1": 0.79, "R@5": 0.9}}}})


def test_json_validates_and_has_required_numbers(report):
    jsonschema.Draft202012Validator(report_schema()).validate(report)
    json.loads(json.dumps(report))  # plain JSON, no numpy
    for k in ("cores_used", "cores_lower_bound", "chips", "energy_per_inference_j", "latency_per_inference_s",
              "synops_per_inference", "spikes_per_inference", "traffic", "assumptions"):
        assert k in report
    assert report["cores_used"] >= report["cores_lower_bound"] >= 1
    assert [r["name"] for r in report["layers"]] == ["lif1", "lif2", "lif3"]
    assert all(r["firing_rate"] is not None and r["firing_rate"] > 0 for r in report["layers"])
    assert report["retrieval"]["per_query"]["host_macs"] == 5000
    assert all(c["source"] for c in report["assumptions"]["constants"])


def test_schema_rejects_a_broken_report(report):
    bad = dict(report)
    del bad["energy_per_inference_j"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, report_schema())


def test_schema_rejects_a_fidelity_section_without_its_headline(report):
    # the old shape (a same-bin "spike_agreement" counting empty bins) is not a fidelity report any more
    bad = {**report, "fidelity": {"layers": {"lif1": {"op": "LIF", "spike_agreement": 0.97}}, "spike_agreement": 0.97}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, report_schema())
    row = {**FIDELITY["layers"]["lif1"]}
    del row["dice"]
    with pytest.raises(jsonschema.ValidationError, match="'dice' is a required property"):
        jsonschema.validate({**report, "fidelity": {**FIDELITY, "layers": {"lif1": row}}}, report_schema())


def test_report_without_run_and_with_host_node():
    g = Graph(dt=1e-3)
    one = np.ones(3)
    for n in (Node("input", "Input", {"shape": np.array([4])}), Node("fc", "Linear", {"weight": np.ones((3, 4))}),
              Node("lif", "LIF", {"tau": one * 2, "r": one, "v_leak": one * 0, "v_threshold": one}),
              Node("head", "CosineSimilarity", {"out_shape": np.array([5])}), Node("output", "Output")):
        g.add(n)
    for a, b in (("input", "fc"), ("fc", "lif"), ("lif", "head"), ("head", "output")):
        g.connect(a, b)
    g.infer_shapes()
    rep = build_report(g, "loihi2")
    jsonschema.validate(rep, report_schema())
    assert rep["run"] is None and rep["steps"] == 100
    assert rep["chip_host_split"]["host_nodes"] == ["head"]
    assert rep["chip_host_split"]["host_macs_per_step"] == 3 * 5
    assert any("no Run" in n for n in rep["assumptions"]["notes"])


def test_render_terminal(report):
    from rich.console import Console

    con = Console(record=True, width=140)
    render_terminal(report, con)
    text = con.export_text()
    assert "cores used / lower bound" in text and f"{report['cores_used']} / {report['cores_lower_bound']}" in text
    assert "lif2" in text and "Davies" in text and "energy / task query" in text
    assert "cross-modal retrieval" in text and "0.8800" in text  # drawn by the plugged-in section
    # the fidelity headline is the Dice over the layers that spike; the silent one is named, not scored
    assert "spike overlap (Dice) over 1 spiking layer(s): min 0.8300, mean 0.8300" in text
    assert "silent on both sides (not scored): lif2" in text


def test_a_section_nobody_registered_is_refused_in_one_line():
    from spikedeploy.errors import SpikeDeployError

    with pytest.raises(SpikeDeployError, match="report section 'accuracy' is not registered") as e:
        build_report(dense_chain([4, 3], seed=0), "loihi1", sections={"accuracy": {"top1": 0.9}})
    assert "\n" not in str(e.value)


def test_html_is_self_contained_and_shows_plots(report, tmp_path):
    path = write_html(report, tmp_path / "report.html")
    text = path.read_text()
    # rates, utilisation, traffic, energy, fidelity, retrieval
    assert text.count("data:image/png;base64,") == 6
    assert "image→text R@1" in text and "0.880" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text
    img = screenshot(path, tmp_path, "1200,2000")
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    gray = img.mean(axis=2)
    assert gray.std() > 0.1  # not a blank page
    # plots fill several regions of the page: count 200x200 tiles with a real amount of ink
    tiles = 0
    for y in range(0, 1800, 200):
        for x in range(0, 1200, 200):
            t = gray[y : y + 200, x : x + 200]
            if (t < 0.9).mean() > 0.05:
                tiles += 1
    assert tiles >= 12, tiles
    # coloured plot marks (bars, heatmap) exist, not only black text
    sat = img.max(axis=2) - img.min(axis=2)
    assert (sat > 0.3).mean() > 0.01


def test_deviations_reach_every_report_form(tmp_path):
    """An approximation accepted at quantization time shows in the JSON, the terminal and the HTML."""
    from rich.console import Console

    from spikedeploy.quantize.quantizer import quantize

    g = Graph(dt=1e-3)
    one = np.ones(3)
    # v_reset != 0 is an approximation on chip (the state starts at v_reset there)
    for n in (Node("input", "Input", {"shape": np.array([4])}), Node("fc", "Linear", {"weight": np.ones((3, 4))}),
              Node("lif", "LIF", {"tau": one * 2e-3, "r": one, "v_leak": one * 0, "v_threshold": one,
                                  "v_reset": one * 0.1}),
              Node("output", "Output")):
        g.add(n)
    for a, b in (("input", "fc"), ("fc", "lif"), ("lif", "output")):
        g.connect(a, b)
    qg = quantize(g, "loihi2", allow_approximate=True)
    rep = build_report(qg.graph, "loihi2", qgraph=qg)
    jsonschema.validate(rep, report_schema())
    assert any("v_reset" in d for d in rep["deviations"])
    con = Console(record=True, width=200)
    render_terminal(rep, con)
    assert "v_reset" in con.export_text()
    assert "v_reset" in write_html(rep, tmp_path / "r.html").read_text()
