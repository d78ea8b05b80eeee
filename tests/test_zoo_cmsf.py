"""examples/cmsf: the CMSF-style spiking image-text retrieval model, deployed from its committed checkpoint.

References: a direct step-by-step torch run of the model with a hand-written recall (the float metric), Lava's
simulation (the emulator must equal it bit for bit on every chip node), the report schema, and hand-computed
data transforms. Data-dependent tests skip when the Debian/PyPI data packages are missing.
"""

from __future__ import annotations

import json
from importlib.resources import files

import jsonschema
import numpy as np
import pytest
import torch

from examples.cmsf import data
from examples.cmsf.model import CHECKPOINT, load_pretrained, reset

N, LAVA = 6, 2


def _packages_missing() -> str | None:
    try:
        data.check_packages()
    except data.DataPackageMissing as e:
        return str(e)
    return None


needs_data = pytest.mark.skipif(_packages_missing() is not None, reason=f"emoji data unavailable: {_packages_missing()}")


def test_missing_package_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FONT", tmp_path / "none.ttf")
    with pytest.raises(data.DataPackageMissing) as e:
        data.check_packages()
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install fonts-noto-color-emoji" in msg


def test_image_tokens_by_hand():
    img = np.full((1, 16, 16, 3), 255, np.uint8)  # white: no ink
    img[0, 5, 6] = (0, 95, 224)  # pixel (y=5, x=6): patch row 1, col 1 -> token 5, in-patch (1, 2)
    tok = data.image_tokens(img)
    assert tok.shape == (1, 16, 48)
    nz = np.flatnonzero(tok[0])
    # ink (255 - p) >> 5: p = 0 -> 7, 95 -> 160 >> 5 = 5, 224 -> 31 >> 5 = 0; offset (1 * 4 + 2) * 3 in token 5
    assert [divmod(int(i), 48) for i in nz] == [(5, 18), (5, 19)] and list(tok[0].ravel()[nz]) == [7, 5]


def test_checkpoint_small_and_weights_only():
    assert CHECKPOINT.stat().st_size <= 5 * 2**20
    ck = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert ck["config"]["num_steps"] == 2 and ck["config"]["spiking"]


def _direct_torch_embeddings(model, regions, sentence):
    """The model stepped by hand for T steps from rest (not through model.run / evaluate.embed)."""
    r = torch.as_tensor(regions, dtype=torch.float32)
    s = torch.as_tensor(sentence, dtype=torch.float32)
    reset(model)
    img = txt = 0
    with torch.no_grad():
        for _ in range(2):
            a, b, _ = model(r, s)
            img, txt = img + a, txt + b
    reset(model)
    return img.double().numpy(), txt.double().numpy()


def _hand_recall(q, g, k):
    """Instance-level R@K, ties against the query: rank = #{j != i : cos(q_i, g_j) >= cos(q_i, g_i)}."""
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    s = qn @ gn.T
    hits = 0
    for i in range(len(q)):
        rank = sum(1 for j in range(len(g)) if j != i and s[i, j] >= s[i, i])
        hits += rank < k
    return hits / len(q)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if _packages_missing():
        pytest.skip(f"emoji data unavailable: {_packages_missing()}")
    from examples.cmsf.pipeline import run_pipeline

    d = tmp_path_factory.mktemp("cmsf")
    rep = run_pipeline(d, limit=N, lava_samples=LAVA)
    return d, rep


@needs_data
def test_lava_equals_emulator_bit_for_bit(report):
    _, rep = report
    par = rep["retrieval"]["lava"]["parity_with_emulator"]
    assert rep["retrieval"]["lava"]["queries"] == LAVA
    assert par["all_equal"] and len(par["nodes"]) >= 15 and all(par["nodes"].values())


@needs_data
def test_report_is_schema_valid_and_files_written(report):
    d, rep = report
    schema = json.loads(files("spikedeploy.report").joinpath("schema.json").read_text())
    jsonschema.validate(json.loads((d / "report.json").read_text()), schema)
    assert (d / "report.html").stat().st_size > 1000
    assert rep["fits"] and rep["cores_used"] > 0 and rep["energy_per_inference_j"] > 0
    assert set(rep["chip_host_split"]["host_nodes"]) == {"matmul", "matmul_1"}  # q @ (k^T @ v) on the host


@needs_data
def test_float_metric_equals_a_direct_torch_run(report):
    _, rep = report
    test = data.load_split("test")
    img, txt = _direct_torch_embeddings(load_pretrained(), test.regions[:N], test.sentence[:N])
    assert img.sum() > 0 and txt.sum() > 0
    got = rep["retrieval"]["float"]
    for k in (1, 5):
        assert got["image_to_text"][f"R@{k}"] == pytest.approx(_hand_recall(img, txt, k))
        assert got["text_to_image"][f"R@{k}"] == pytest.approx(_hand_recall(txt, img, k))


@needs_data
def test_emulator_embeddings_spike(report):
    _, rep = report
    # the fixed-point run is scored on the same queries, with spikes in the embeddings
    assert rep["retrieval"]["emulator"]["n"] == N and rep["spikes_per_inference"] > 0
