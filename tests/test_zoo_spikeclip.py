"""The SpikeCLIP-style zoo example (examples/spikeclip) deploys from its committed checkpoint.

References: a direct torch run of the model (the pipeline's float metrics must equal the metrics of the torch
model's own spike counts), Lava's simulation (the emulator must equal it bit for bit on every chip neuron's
v and s, both encoders), and the report schema. Skips when Fashion-MNIST (Debian dataset-fashion-mnist) is
not installed.
"""

from __future__ import annotations

import json
from importlib.resources import files

import jsonschema
import numpy as np
import pytest
import torch

from examples.spikeclip import data
from examples.spikeclip.evaluate import zero_shot_metrics

if not data.FASHION_DIR.joinpath("t10k-images-idx3-ubyte.gz").exists():
    pytest.skip("Fashion-MNIST not installed (sudo apt-get install dataset-fashion-mnist)", allow_module_level=True)

LIMIT = 8


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    from rich.console import Console

    from examples.spikeclip.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("spikeclip")
    rep = run_pipeline(out, lava_samples=1, limit=LIMIT, console=Console(quiet=True))
    return out, rep


def test_checkpoint_loads_weights_only_and_is_small():
    from examples.spikeclip.model import CHECKPOINT, load_pretrained

    assert CHECKPOINT.stat().st_size <= 5 * 2**20
    assert load_pretrained().spiking and not load_pretrained(which="ann").spiking
    rec = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    assert rec["unseen_classes"] == [data.CLASSES[c] for c in data.UNSEEN]


def test_float_metrics_equal_a_direct_torch_run(deployed):
    from examples.spikeclip.model import load_pretrained

    _, rep = deployed
    model = load_pretrained()
    test = data.test_split(LIMIT)
    with torch.no_grad():
        img = model.embed_images(test.images).double().numpy()
        protos = data.prototypes(model.embed_prompts().double().numpy())
    ref = zero_shot_metrics(img, test.labels, protos)
    for m in ("unseen_zero_shot", "seen", "generalized_10way", "silent_images"):
        # nan: no image of that group among the few samples
        assert rep["zero_shot"]["float"][m] == pytest.approx(ref[m], abs=1e-12, nan_ok=True), m
    assert not np.isnan(ref["generalized_10way"]) and ref["silent_images"] < LIMIT
    assert np.abs(img).sum() > 0  # the encoder is not silent: the check compares spikes, not zeros


def test_lava_equals_emulator_bit_for_bit(deployed):
    _, rep = deployed
    par = rep["zero_shot"]["lava_parity"]
    assert par["all_equal"], par
    assert len(par["nodes"]["image"]) > 10 and par["nodes"]["text"]["outputs"]
    assert rep["zero_shot"]["lava"]["counts_equal_emulator"]


def test_report_is_schema_valid_and_has_both_energies(deployed):
    out, rep = deployed
    on_disk = json.loads((out / "report.json").read_text())
    jsonschema.validate(on_disk, json.loads(files("spikedeploy.report").joinpath("schema.json").read_text()))
    z = on_disk["zero_shot"]
    assert on_disk["fits"] and not on_disk["violations"]  # placed within every Loihi 2 per-core limit
    assert z["ann_energy_per_query_j"] > 0 and on_disk["energy_per_inference_j"] > 0
    assert on_disk["chip_host_split"]["round_trips_per_step"] == 1  # q kᵀ v on the host inside the time loop
    assert (out / "report.html").stat().st_size > 1000


def test_missing_data_package_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FASHION_DIR", tmp_path)
    data.load_fashion.cache_clear()
    with pytest.raises(data.DataPackageMissing, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion("t10k")
    data.load_fashion.cache_clear()


def test_checkpoint_is_on_loihi2s_weight_grid(deployed):
    """qat.py fine-tuned the checkpoint onto the weights and thresholds Loihi 2 realizes: quantizing it again
    (as the pipeline does) rounds no weight and no threshold."""
    _, rep = deployed
    for enc, check in rep["zero_shot"]["on_chip_grid"].items():
        assert check["weight_rel_rms_error_max"] < 1e-6 and check["thresholds_exact"], (enc, check)


def test_grid_snap_mirrors_the_quantizer():
    """A weight snapped by qat.Grid is what quantize() stores, read back in float (hand-made grid: the
    largest weight at mantissa 254, mixed sign, step 2)."""
    from examples.spikeclip.qat import Grid

    g = Grid(top=254, e=0, step=2, lo=-256, hi=254)
    w = torch.tensor([0.5, -0.25, 0.1, -0.5001, 0.0])
    snapped = g.snap(w)
    mx = 0.5001
    expected = torch.tensor([2 * round(0.5 / mx * 127), -2 * round(0.25 / mx * 127), 2 * round(0.1 / mx * 127),
                             -254, 0]) * mx / 254
    assert torch.allclose(snapped, expected.float(), atol=1e-7)
