"""Zero-shot retrieval metrics on the held-out emoji concepts: R@1/5/10 both directions and rsum.

Instance-level: query i's one correct answer is item i (each held-out concept has one image and one name).
Ties count against the query (examples/retrieval/evaluate.py), so all-zero spike counts are never correct.
Chance: R@K = K / N for N held-out concepts.
"""

from __future__ import annotations

import numpy as np
import torch

from examples.retrieval.evaluate import recall_at_k

from . import data

KS = (1, 5, 10)


def metrics(img: np.ndarray, txt: np.ndarray) -> dict:
    n = len(img)
    lab = np.arange(n)
    out = {"image_to_text": recall_at_k(img, lab, txt, lab, KS), "text_to_image": recall_at_k(txt, lab, img, lab, KS)}
    out["rsum"] = float(sum(v for d in out.values() for v in d.values()))
    out["chance"] = {f"R@{k}": k / n for k in KS} | {"rsum": 2 * sum(KS) / n}
    out["n"] = n
    return out


@torch.no_grad()
def embed(model, regions: np.ndarray, sentence: np.ndarray, batch: int = 300) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    img, txt = [], []
    for i in range(0, len(regions), batch):
        r = torch.as_tensor(regions[i:i + batch], dtype=torch.float32)
        s = torch.as_tensor(sentence[i:i + batch], dtype=torch.float32)
        a, b, _ = model.run(r, s)
        img.append(a)
        txt.append(b)
    return torch.cat(img).numpy(), torch.cat(txt).numpy()


def evaluate_model(model, split: str = "test") -> dict:
    s = data.load_split(split)
    return metrics(*embed(model, s.regions, s.sentence))
