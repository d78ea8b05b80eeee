"""Train the reference spiking dual encoder with a symmetric contrastive (InfoNCE) loss.

    .venv/bin/python examples/retrieval/train.py            # reproduces examples/retrieval/checkpoint.pt
    .venv/bin/python examples/retrieval/train.py --epochs 2 --out /tmp/x.pt

Deterministic: seeded data order and captions, torch.manual_seed, deterministic algorithms and a fixed
thread count (results are bit-identical on the same CPU type and thread count; float reductions may
differ elsewhere). Captions are class-level, so a batch holds many true pairs per image: the loss spreads
each target over every caption (image) of the same digit instead of treating them as negatives.
The test split is evaluated after the last epoch only; it never selects anything.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from examples.pipeline_cli import train_parser
from spikedeploy.io.atomic import atomic_write

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "examples.retrieval"

from . import data  # noqa: E402
from .evaluate import evaluate_model  # noqa: E402
from .model import CHECKPOINT, DualEncoder, save_checkpoint  # noqa: E402

INIT_RATES = {"image": [0.2, 0.2, 0.2, 0.2], "text": [0.2, 0.2]}
DEFAULTS = {"seed": 0, "epochs": 40, "batch_size": 128, "lr": 2e-3, "weight_decay": 1e-4, "threads": 2, "shift": 2}


def normalize_counts(x: torch.Tensor) -> torch.Tensor:
    # eps=1: a nonzero spike-count vector has norm >= 1, so this is the exact cosine normalisation, and an
    # all-zero vector keeps a finite gradient instead of 1/eps.
    return F.normalize(x, dim=1, eps=1.0)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (zero fill): MNIST's cheapest useful augmentation."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    off = torch.randint(0, 2 * p + 1, (n, 2), generator=gen)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(off.tolist())])


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor):
    logits = logit_scale.exp().clamp(max=100.0) * normalize_counts(img) @ normalize_counts(txt).T
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)  # symmetric: same.T == same
    loss_i2t = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t2i = -(target * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return 0.5 * (loss_i2t + loss_t2i)


def _rate_with_gain(encoder, x, k: int, syn, w0, b0, g: float) -> float:
    syn.weight.copy_(w0 * g)
    if b0 is not None:
        syn.bias.copy_(b0 * g)
    return encoder.run(x, record=True)[1][k].mean().item()


@torch.no_grad()
def calibrate_rates(encoder, x: torch.Tensor, rates: list[float], iters: int = 24) -> list[float]:
    """Data-driven init: scale each synapse layer (in order) so the Leaky after it fires at its target rate.

    With default init the layers barely spike; all-zero image and text embeddings make the contrastive
    loss a flat saddle (its gradient is bilinear in the two embeddings), so training would never start.
    Returns the gains chosen (bisection on log gain).
    """
    synapses = [m for m in encoder.net if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    gains = []
    for k, (syn, target) in enumerate(zip(synapses, rates, strict=True)):
        w0 = syn.weight.clone()
        b0 = syn.bias.clone() if syn.bias is not None else None
        lo, hi = -4.0, 6.0
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = _rate_with_gain(encoder, x, k, syn, w0, b0, float(np.exp(mid))) < target
            lo, hi = (mid, hi) if below else (lo, mid)
        g = float(np.exp(0.5 * (lo + hi)))
        _rate_with_gain(encoder, x, k, syn, w0, b0, g)
        gains.append(g)
    return gains


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def train(seed: int = DEFAULTS["seed"], epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], weight_decay: float = DEFAULTS["weight_decay"], threads: int = DEFAULTS["threads"],
          shift: int = DEFAULTS["shift"], log=print) -> tuple[DualEncoder, dict]:
    set_determinism(seed, threads)
    t_start = time.perf_counter()
    split = data.load_split("train")
    model = DualEncoder()
    vocab = model.vocab
    x_all = torch.from_numpy(split.images)
    y_all = torch.from_numpy(split.labels)
    probe = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(seed))[:512]
    probe_caps, _ = data.sample_captions(split.labels[probe.numpy()], seed=seed + 7)
    gi = calibrate_rates(model.image, data.encode_images(x_all[probe], model.num_steps), INIT_RATES["image"])
    gt = calibrate_rates(model.text, data.encode_text(vocab.bag_of_words(probe_caps), model.num_steps),
                         INIT_RATES["text"])
    calibrate_seconds = time.perf_counter() - t_start
    log(f"init gains image {[round(g, 2) for g in gi]} text {[round(g, 2) for g in gt]}")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(y_all) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y_all), generator=gen)
        captions, _ = data.sample_captions(split.labels, seed=1000 * (seed + 1) + epoch)
        bow_all = torch.from_numpy(vocab.bag_of_words(captions))
        tot, n = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            img = model.encode_image(data.encode_images(random_shift(x_all[idx], shift, gen), model.num_steps))
            txt = model.encode_text(data.encode_text(bow_all[idx], model.num_steps))
            loss = contrastive_loss(img, txt, y_all[idx], model.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        log(f"epoch {epoch + 1:3d}/{epochs}  loss {tot / n:.4f}  scale {model.logit_scale.exp().item():6.2f}  "
            f"rate img {img.mean().item() / model.num_steps:.3f} txt {txt.mean().item() / model.num_steps:.3f}  "
            f"{time.perf_counter() - t0:6.1f}s")
    train_seconds = time.perf_counter() - t0
    model.eval()
    metrics = evaluate_model(model)
    # wall clock on a shared 2-core machine: other jobs running at the same time inflate it
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["calibrate_seconds"] = round(calibrate_seconds, 1)
    metrics["total_seconds"] = round(time.perf_counter() - t_start, 1)
    metrics["hyperparameters"] = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                                  "weight_decay": weight_decay, "threads": threads, "shift": shift}
    metrics["torch"] = torch.__version__
    metrics["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return model, metrics


def write_json(obj: dict, path: Path) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def main(argv=None) -> None:
    p = train_parser(__doc__, DEFAULTS, CHECKPOINT, "checkpoint path; metrics go next to it as .json")
    a = p.parse_args(argv)
    model, metrics = train(a.seed, a.epochs, a.batch_size, a.lr, a.weight_decay, a.threads, a.shift)
    save_checkpoint(model, a.out)
    write_json(metrics, a.out.with_suffix(".json"))
    m = metrics["paired"]
    print(f"image->text {m['image_to_text']}  text->image {m['text_to_image']}  "
          f"total {metrics['total_seconds']}s  -> {a.out}")


if __name__ == "__main__":
    main()
