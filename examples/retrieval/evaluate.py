"""Class-level retrieval metrics (R@K) from embeddings and labels, and the evaluation of the reference model.

The metric functions take arrays only, so the same code scores float torch, emulator and Lava embeddings.
A retrieved item is correct when its digit equals the query's. Ties are counted against the query: an
item of another class scoring exactly as high as the best correct item ranks before it. That makes the
result independent of gallery order and honest for spike counts, whose cosines tie often (a query with
an all-zero embedding scores 0 everywhere and is never correct).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: python examples/retrieval/evaluate.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "examples.retrieval"

from . import data  # noqa: E402

KS = (1, 5, 10)


def cosine_similarity(queries, gallery, eps: float = 1e-12) -> np.ndarray:
    """[Q, D] x [G, D] -> [Q, G] cosine in float64; zero vectors give 0 (never a NaN)."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), eps)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), eps)
    return q @ g.T


def first_correct_rank(sim: np.ndarray, query_labels, gallery_labels) -> np.ndarray:
    """0-based rank of the best-scoring correct gallery item, ties broken against the query."""
    ql = np.asarray(query_labels)
    gl = np.asarray(gallery_labels)
    match = ql[:, None] == gl[None, :]
    if not match.any(axis=1).all():
        raise ValueError("some query has no gallery item of its class; recall is undefined")
    best = np.where(match, sim, -np.inf).max(axis=1)
    return ((~match) & (sim >= best[:, None])).sum(axis=1)


def margins(query_emb, query_labels, gallery_emb, gallery_labels) -> np.ndarray:
    """Per query: best correct cosine minus best wrong cosine (> 0: retrieved correctly at rank 1).

    How far each query is from a wrong first answer; quantization flips those with small margins first.
    """
    sim = cosine_similarity(query_emb, gallery_emb)
    match = np.asarray(query_labels)[:, None] == np.asarray(gallery_labels)[None, :]
    return np.where(match, sim, -np.inf).max(axis=1) - np.where(match, -np.inf, sim).max(axis=1)


def recall_at_k(query_emb, query_labels, gallery_emb, gallery_labels, ks=KS) -> dict[str, float]:
    """R@K for each K: the fraction of queries with a correct item among their top K."""
    return recall_from_scores(cosine_similarity(query_emb, gallery_emb), query_labels, gallery_labels, ks)


def recall_from_scores(sim: np.ndarray, query_labels, gallery_labels, ks=KS) -> dict[str, float]:
    """R@K from any query x gallery score matrix (e.g. an on-chip similarity readout)."""
    rank = first_correct_rank(sim, query_labels, gallery_labels)
    return {f"R@{k}": float(np.mean(rank < k)) for k in ks}


def retrieval_metrics(image_emb, image_labels, text_emb, text_labels, ks=KS) -> dict[str, dict[str, float]]:
    """Both directions over the same pairs: image->text and text->image."""
    return {
        "image_to_text": recall_at_k(image_emb, image_labels, text_emb, text_labels, ks),
        "text_to_image": recall_at_k(text_emb, text_labels, image_emb, image_labels, ks),
    }


# ---- the reference model on the held-out split --------------------------------------------------------

def test_set(seed: int = data.SPLIT_SEED):
    """Held-out images, their labels and one seeded caption per image (the retrieval pairs)."""
    split = data.load_split("test", seed)
    captions, _ = data.sample_captions(split.labels, data.CAPTION_SEED)
    return split, captions


@torch.no_grad()
def embed(model, images, texts: list[str], batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    img = torch.cat([model.embed_images(images[i:i + batch]) for i in range(0, len(images), batch)])
    txt = torch.cat([model.embed_texts(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    return img.numpy(), txt.numpy()


def evaluate_model(model, seed: int = data.SPLIT_SEED) -> dict:
    """Metrics of a DualEncoder on the held-out split.

    "paired": gallery = one caption per test image (1000), queried both ways.
    "templates_image_to_text": each test image queries the 100 distinct captions (10 templates x 10 digits).
    Also the mean firing statistics of the embedding layers, to see the margin spike counts leave.
    """
    split, captions = test_set(seed)
    img, txt = embed(model, split.images, captions)
    tmpl = data.all_captions()
    mg = margins(img, split.labels, txt, split.labels)
    with torch.no_grad():
        tmpl_emb = model.embed_texts([t for t, _ in tmpl]).numpy()
    return {
        "paired": retrieval_metrics(img, split.labels, txt, split.labels),
        "templates_image_to_text": recall_at_k(img, split.labels, tmpl_emb, np.array([c for _, c in tmpl])),
        "n_test": int(len(split.labels)),
        "image_to_text_margin_median": float(np.median(mg)),
        "image_to_text_margin_over_0.05": float(np.mean(mg > 0.05)),
        "image_embedding_mean_count": float(img.mean()),
        "image_embedding_zero_fraction": float((img.sum(1) == 0).mean()),
        "text_embedding_mean_count": float(txt.mean()),
    }


def fake_quantized(model, bits: int = 8):
    """A copy whose Linear/Conv weights are rounded to `bits`-bit symmetric per-layer integers.

    A robustness probe only (the real quantizer lives in spikedeploy): thresholds stay float, biases are
    rounded on the weight's scale, as a chip with per-layer weight scaling would do.
    """
    import copy

    q = copy.deepcopy(model)
    qmax = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for m in q.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                s = m.weight.abs().max() / qmax
                m.weight.copy_(torch.round(m.weight / s) * s)
                if m.bias is not None:
                    m.bias.copy_(torch.round(m.bias / s) * s)
    return q


def main() -> None:
    from .model import load_pretrained

    path = sys.argv[1] if len(sys.argv) > 1 else None
    t0 = time.perf_counter()
    model = load_pretrained(path)
    out = {"float": evaluate_model(model), "fake_int8_weights": evaluate_model(fake_quantized(model, 8))}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
