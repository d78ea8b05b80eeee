"""Accuracy of the fused model and of each modality alone (the same model, the other input zeroed)."""

from __future__ import annotations

import numpy as np
import torch

from . import data

CHANCE = 1.0 / data.NUM_CLASSES
MODES = ("fused", "audio_only", "visual_only")


def masked(audio: np.ndarray, visual: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs a mode sees: audio-only zeroes the visual input, visual-only the audio input."""
    return (audio if mode != "visual_only" else np.zeros_like(audio),
            visual if mode != "audio_only" else np.zeros_like(visual))


def predict(scores: np.ndarray) -> np.ndarray:
    """Highest class score; a tie goes to the lowest class index (the same rule for every backend)."""
    return np.argmax(scores, axis=1)


@torch.no_grad()
def torch_scores(model, audio: np.ndarray, visual: np.ndarray, batch: int = 200) -> np.ndarray:
    out = [model.run(torch.as_tensor(audio[i:i + batch], dtype=torch.float32),
                     torch.as_tensor(visual[i:i + batch], dtype=torch.float32)).numpy()
           for i in range(0, len(audio), batch)]
    return np.concatenate(out).astype(np.float64)


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predict(scores) == labels))


def evaluate_model(model, pairs: data.Pairs) -> dict:
    """Accuracy per mode on the given pairs, overall and per speaker source (flite / the human recording)."""
    res = {"n": int(len(pairs.labels)), "chance": CHANCE}
    source = np.array([s.split(":")[0] for s in pairs.speaker])
    for mode in MODES:
        s = torch_scores(model, *masked(pairs.audio, pairs.visual, mode))
        res[mode] = accuracy(s, pairs.labels)
        res[f"{mode}_by_source"] = {src: accuracy(s[source == src], pairs.labels[source == src])
                                    for src in sorted(set(source))}
    return res
