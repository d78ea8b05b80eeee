"""Zero-shot classification metrics from embeddings, so float torch, emulator and Lava counts score alike.

A test image is classified by cosine against class prototypes (mean of normalised prompt embeddings). Three
accuracies, each with its chance level: zero-shot over the UNSEEN classes only (their images against their
prototypes; the classes never seen in image training), seen (SEEN images against SEEN prototypes) and
generalised (every image against all 10 prototypes). An image whose embedding is all zero (no spike) scores 0
against every class and counts as wrong, so silence never wins a tie.
"""

from __future__ import annotations

import numpy as np
import torch

from . import data


def cosine(a, b, eps: float = 1e-12) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), eps)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), eps)
    return a @ b.T


def accuracy(scores: np.ndarray, labels: np.ndarray, classes, silent: np.ndarray) -> float:
    """Accuracy of argmax over `classes` for the images whose label is in `classes` (silent ones wrong)."""
    classes = np.asarray(classes)
    keep = np.isin(labels, classes)
    if not keep.any():
        return float("nan")  # no image of these classes (a --limit run)
    pred = classes[np.argmax(scores[keep][:, classes], axis=1)]
    return float(np.mean((pred == labels[keep]) & ~silent[keep]))


def zero_shot_metrics(image_emb, labels, protos) -> dict:
    labels = np.asarray(labels)
    silent = ~np.any(np.asarray(image_emb) != 0, axis=1)
    s = cosine(image_emb, protos)
    out = {"unseen_zero_shot": accuracy(s, labels, data.UNSEEN, silent),
           "seen": accuracy(s, labels, data.SEEN, silent),
           "generalized_10way": accuracy(s, labels, range(len(data.CLASSES)), silent),
           "chance": {"unseen_zero_shot": 1 / len(data.UNSEEN), "seen": 1 / len(data.SEEN),
                      "generalized_10way": 1 / len(data.CLASSES)},
           "silent_images": int(silent.sum()), "images": int(len(labels))}
    return out


def project(counts, weight) -> np.ndarray:
    """The host projection (a bias-free Linear) of chip spike counts: counts [N, E] @ weight.T [E, 384]."""
    return np.asarray(counts, np.float64) @ np.asarray(weight, np.float64).T


@torch.no_grad()
def evaluate_model(model, split: data.Split, batch: int = 500) -> dict:
    """The torch model's metrics on `split` (prototypes from its own text encoder)."""
    model.eval()
    img = torch.cat([model.embed_images(split.images[i:i + batch]) for i in range(0, len(split.labels), batch)])
    protos = data.prototypes(model.embed_prompts().numpy())
    return zero_shot_metrics(img.numpy(), split.labels, protos)
