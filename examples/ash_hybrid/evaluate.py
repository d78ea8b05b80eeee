"""R@1/5/10 in both directions and rsum on the held-out split, with the chance level.

The metric functions are examples/retrieval/evaluate.py's (class-level: a retrieved item is correct when it
shows the query's digit; ties count against the query).
"""

from __future__ import annotations

import numpy as np
import torch

from examples.retrieval import data
from examples.retrieval.evaluate import KS, retrieval_metrics


def rsum(metrics: dict) -> float:
    """Sum of R@1/5/10 over both directions (0..6)."""
    return float(sum(v for d in ("image_to_text", "text_to_image") for v in metrics[d].values()))


def chance(labels: np.ndarray, ks=KS) -> dict[str, float]:
    """Expected R@K of a random ranking of the paired gallery: 1 - P(no item of the query's class in the top K),
    hypergeometric, averaged over queries. R@1 chance = 0.1 for 10 balanced digits."""
    labels = np.asarray(labels)
    n = len(labels)
    out = {}
    for k in ks:
        p = []
        for c in np.unique(labels):
            m = int((labels == c).sum())
            miss = np.prod([max(n - m - i, 0) / (n - i) for i in range(min(k, n))])  # k > n: the whole gallery
            p += [1 - miss] * m
        out[f"R@{k}"] = float(np.mean(p))
    out["rsum"] = 2 * sum(out[f"R@{k}"] for k in ks)
    return out


def test_pairs(limit: int | None = None):
    """Held-out images [N, 1, 28, 28] in [0, 1], labels, and one fixed caption per image (multi-hot)."""
    test = data.load_split("test")
    caps, _ = data.sample_captions(test.labels)
    n = limit or len(test.labels)
    return test.images[:n], test.labels[:n], data.Vocab().bag_of_words(list(caps[:n])).astype(np.float32)


@torch.no_grad()
def embeddings(model, images, bow) -> tuple[np.ndarray, np.ndarray]:
    img, txt = model.run(torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(bow, dtype=torch.float32))
    return img.double().numpy(), txt.double().numpy()


def evaluate(model, limit: int | None = None) -> dict:
    images, labels, bow = test_pairs(limit)
    img, txt = embeddings(model, images, bow)
    m = retrieval_metrics(img, labels, txt, labels)
    return {"paired": m, "rsum": rsum(m), "chance": chance(labels), "n_test": len(labels)}
