"""Issue acceptance for the default model, end to end: export → quantize → emulator on the whole test split,
Lava on a few samples bit-exact with the emulator, and the report with retrieval results."""

import json

import jsonschema
import pytest
from rich.console import Console

from examples.retrieval.pipeline import run_pipeline
from spikedeploy.report.build import report_schema


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rep = run_pipeline(out, lava_samples=2, console=Console(file=open(out / "terminal.txt", "w"), width=140))
    return out, rep


def test_float_r1_and_emulator_within_two_points(pipeline):
    _, rep = pipeline
    r = rep["retrieval"]
    assert r["queries"] == 1000
    assert r["float"]["image_to_text"]["R@1"] >= 0.90
    for d in ("image_to_text", "text_to_image"):
        assert abs(r["emulator"][d]["R@1"] - r["float"][d]["R@1"]) <= 0.02, (d, r["emulator"][d], r["float"][d])


def test_chip_similarity_head_ranks_as_the_host_search(pipeline):
    # the gallery as 8-bit Dense weights into integrators that sum only the embedding window: ranking by its
    # scores is ranking by cosine up to the rounding of the weights, which moves no query's top item here
    _, rep = pipeline
    chip = rep["retrieval"]["emulator_chip_similarity"]
    host = rep["retrieval"]["emulator"]["image_to_text"]
    assert abs(chip["image_to_text"]["R@1"] - host["R@1"]) <= 0.005, (chip, host)
    assert chip["lava_equals_emulator"] == {"queries": 2, "equal": True}


def test_lava_equals_emulator_on_its_samples(pipeline):
    _, rep = pipeline
    par = rep["retrieval"]["lava"]["parity_with_emulator"]
    assert par["all_equal"] and len(par["nodes"]) >= 8  # every spiking node of both encoders, and inputs


def test_report_files_and_schema(pipeline):
    out, rep = pipeline
    saved = json.loads((out / "report.json").read_text())
    jsonschema.validate(saved, report_schema())
    for b in ("float", "emulator", "lava"):
        for d in ("image_to_text", "text_to_image"):
            assert set(saved["retrieval"][b][d]) == {"R@1", "R@5", "R@10"}
    assert saved["chip_host_split"]["host_nodes"] == ["similarity"]  # the cosine search runs on the host
    assert saved["chip_host_split"]["energy_host_j"] > 0
    assert set(saved["similarity_head"]) == {"host", "chip"}
    html = (out / "report.html").read_text()
    assert "Cross-modal retrieval" in html and html.count("data:image/png;base64,") >= 6
    assert (out / "model.nir").exists() and (out / "model.q.npz").exists()
    from spikedeploy.graph.inspect import inspect_file

    info = inspect_file(out / "pipeline.nir")
    assert info["host_nodes"] == ["similarity"] and len(info["chip_nodes"]) == 18  # 17 exported + the output of the head
    assert "cross-modal retrieval" in (out / "terminal.txt").read_text()
