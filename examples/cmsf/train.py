"""Train the CMSF-style SNN and the same-size ANN with InfoNCE on the emoji training concepts.

    .venv/bin/python examples/cmsf/train.py            # writes checkpoint.pt/.json and ann_checkpoint.pt/.json
    .venv/bin/python examples/cmsf/train.py --epochs 2 --out /tmp/x.pt --ann-out /tmp/a.pt

Losses (CMSF, lib/vse.py): symmetric InfoNCE on the cosine of the two embeddings' spike counts, plus the
fusion's matching loss: InfoNCE on the counts of (image query mask AND text spikes) over every image x text
pair of the batch, weight FUSION_WEIGHT (the paper's soft supervision of the encoders by the fusion).
The SNN's weights train on the chip's 8-bit grid (FakeQuant), with Gaussian noise (--noise) on every
Linear's output, so that it does not rely on differences below fixed-point rounding. Augmentation: each
drawing shifted by up to 1 pixel (white fill). One thread (the machine is shared), seeded, deterministic
algorithms. The held-out concepts are scored once, after the last epoch.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "examples.cmsf"

from examples.pipeline_cli import train_parser
from examples.retrieval.train import write_json  # noqa: E402

from . import data  # noqa: E402
from .evaluate import evaluate_model  # noqa: E402
from .model import ANN_CHECKPOINT, CHECKPOINT, CMSF, DEFAULT_CONFIG, reset, save_checkpoint  # noqa: E402

DEFAULTS = {"seed": 0, "epochs": 80, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4, "threads": 1, "noise": 0.1}
FUSION_WEIGHT = 0.2
WEIGHT_LEVELS = 127  # Loihi 2 mixed-sign weights: even mantissas up to 254 = 127 steps of max|w| / 127 per layer
# (spikedeploy/quantize/quantizer.py: the layer's largest weight sits at the top of the mantissa range)


class FakeQuant(nn.Module):
    """The SNN trains on the chip's weight grid (straight-through gradient): round(w / s) * s, s = max|w| / 127.
    Baked in after training, so the chip's quantizer finds the weights already on its grid."""

    def forward(self, w):
        s = w.abs().max().detach().clamp(min=1e-12) / WEIGHT_LEVELS
        return w + (torch.round(w / s) * s - w).detach()


def linears(model) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def shifted_tokens(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, h, w, _ = images.shape
    pad = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)
    off = rng.integers(0, 3, size=(n, 2))
    return data.image_tokens(np.stack([pad[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(off)]))


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    y = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y))


def forward_parts(model: CMSF, r: torch.Tensor, s: torch.Tensor):
    """Summed over the model's steps from rest: image, text embeddings, query mask, text coder spikes."""
    reset(model)
    acc = None
    for _ in range(model.num_steps):
        y = model.parts(r, s)
        acc = y if acc is None else tuple(a + b for a, b in zip(acc, y, strict=True))
    reset(model)
    return acc


def add_noise(sigma: float):
    """Forward hook: Gaussian noise on a Linear's output while training (robustness to fixed-point rounding)."""
    def hook(mod, args, out):
        return out + sigma * torch.randn_like(out) if mod.training else out
    return hook


def train_one(spiking: bool, seed: int, epochs: int, batch_size: int, lr: float, weight_decay: float,
              noise: float = 0.0, log=print) -> tuple[CMSF, dict]:
    torch.manual_seed(seed)
    es = data.load_emoji()
    tr = data.load_split("train")
    images = es.images[tr.indices]
    sent = torch.as_tensor(tr.sentence, dtype=torch.float32)
    # the ANN keeps the default init: ReLU does not halve its input, and a gain would blow up q @ (k^T @ v)
    model = CMSF({**DEFAULT_CONFIG, "spiking": spiking, "init_gain": DEFAULT_CONFIG["init_gain"] if spiking else 1.0})
    if spiking:
        for m in linears(model):
            parametrize.register_parametrization(m, "weight", FakeQuant())
            if noise > 0:
                m.register_forward_hook(add_noise(noise))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = (len(images) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.15)
    rng = np.random.default_rng(seed)
    eps = 1.0 if spiking else 1e-6  # spike counts: a nonzero count vector has norm >= 1 (exact cosine)
    t0 = time.perf_counter()
    for ep in range(epochs):
        model.train()
        order = rng.permutation(len(images))
        regions = torch.as_tensor(shifted_tokens(images, rng), dtype=torch.float32)
        tot = 0.0
        for b in range(steps):
            idx = torch.as_tensor(order[b * batch_size:(b + 1) * batch_size])
            img, txt, mask, t = forward_parts(model, regions[idx], sent[idx])
            scale = model.logit_scale.exp().clamp(max=100.0)
            loss = info_nce(scale * F.normalize(img, dim=1, eps=eps) @ F.normalize(txt, dim=1, eps=eps).T)
            match = mask @ t.T / (model.num_steps * mask.shape[1]) * 10.0  # AND counts, every image x text
            loss = loss + FUSION_WEIGHT * info_nce(match)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        log(f"{'snn' if spiking else 'ann'} epoch {ep + 1:3d}/{epochs} loss {tot / len(images):.4f} "
            f"rate img {img.mean().item() / model.num_steps:.3f} txt {txt.mean().item() / model.num_steps:.3f} "
            f"{time.perf_counter() - t0:6.1f}s")
    seconds = time.perf_counter() - t0
    if spiking:
        for m in linears(model):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    model.eval()
    m = {"test_zero_shot": evaluate_model(model, "test"), "train_concepts": evaluate_model(model, "train")}
    m["train_seconds"] = round(seconds, 1)
    m["hyperparameters"] = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                            "weight_decay": weight_decay, "threads": torch.get_num_threads(),
                            "fusion_weight": FUSION_WEIGHT, "spiking": spiking, "noise": noise,
                            "weight_grid": f"max|w|/{WEIGHT_LEVELS} per layer" if spiking else "float"}
    m["parameters"] = sum(p.numel() for p in model.parameters())
    m["torch"] = torch.__version__
    m["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return model, m


def main(argv=None) -> None:
    p = train_parser(__doc__, DEFAULTS, CHECKPOINT, "SNN checkpoint; its record goes next to it as .json")
    p.add_argument("--ann-out", type=Path, default=ANN_CHECKPOINT)
    p.add_argument("--skip-ann", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    runs = [(True, a.out)] + ([] if a.skip_ann else [(False, a.ann_out)])
    for spiking, out in runs:
        model, m = train_one(spiking, a.seed, a.epochs, a.batch_size, a.lr, a.weight_decay, a.noise)
        save_checkpoint(model, out)
        write_json(m, out.with_suffix(".json"))
        z = m["test_zero_shot"]
        print(f"{'SNN' if spiking else 'ANN'}: i2t {z['image_to_text']} t2i {z['text_to_image']} rsum {z['rsum']:.3f} "
              f"(chance rsum {z['chance']['rsum']:.3f}) {m['train_seconds']}s -> {out}")


if __name__ == "__main__":
    main()
