"""Train the ASH-style hybrid (SNN) and its ANN baseline of the same size with the same budget and loss.

    .venv/bin/python examples/ash_hybrid/train.py            # writes checkpoint.pt (+ checkpoint.json)
    .venv/bin/python examples/ash_hybrid/train.py --epochs 1 --out /tmp/x.pt

Symmetric InfoNCE over class-level targets, random shifts, Adam with a one-cycle schedule: the loss, the
augmentation and the determinism settings are examples/retrieval/train.py's (imported, not copied). One
thread (the machine is shared). The test split is evaluated after the last epoch only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "examples.ash_hybrid"

from examples.pipeline_cli import train_parser
from examples.retrieval import data  # noqa: E402
from examples.retrieval.train import contrastive_loss, random_shift, set_determinism, write_json  # noqa: E402

from .evaluate import evaluate  # noqa: E402
from .model import CHECKPOINT, ASHHybrid, save_checkpoint  # noqa: E402

DEFAULTS = {"seed": 0, "epochs": 80, "batch_size": 128, "lr": 2e-3, "weight_decay": 1e-4, "threads": 1, "shift": 2}
INIT_RATE = 0.2  # target firing rate of each LIF layer at init (as examples/retrieval/train.py)


def _rate(enc, layer: str, x: torch.Tensor, steps: int) -> float:
    """Mean firing rate of the LIF after `layer` ("fc1" or "fc2") of encoder `enc` over `steps` steps."""
    from spikedeploy.converters.torch_export import reset_neurons

    reset_neurons(enc)
    tot = 0.0
    for _ in range(steps):
        h = enc.act1(enc.fc1(x))[0]
        tot += (h if layer == "fc1" else enc.act2(enc.fc2(h))[0]).mean().item()
    reset_neurons(enc)
    return tot / steps


@torch.no_grad()
def calibrate(model: ASHHybrid, images: torch.Tensor, bow: torch.Tensor, iters: int = 16) -> list[float]:
    """Scale fc1 then fc2 of each encoder so the LIF after it fires at INIT_RATE (bisection on log gain):
    with default init the LIFs stay silent, both embeddings are zero and the contrastive loss has no gradient."""
    gains = []
    for enc, x in ((model.semantic, model.visual(images).flatten(1)), (model.text, bow)):
        for layer in ("fc1", "fc2"):
            fc = getattr(enc, layer)
            w0, b0 = fc.weight.clone(), fc.bias.clone()
            lo, hi = -4.0, 6.0
            for _ in range(iters):
                mid = 0.5 * (lo + hi)
                fc.weight.copy_(w0 * float(np.exp(mid)))
                fc.bias.copy_(b0 * float(np.exp(mid)))
                lo, hi = (mid, hi) if _rate(enc, layer, x, model.num_steps) < INIT_RATE else (lo, mid)
            gains.append(float(np.exp(0.5 * (lo + hi))))
            fc.weight.copy_(w0 * gains[-1])
            fc.bias.copy_(b0 * gains[-1])
    return gains


def train_one(kind: str, a, split, log=print) -> tuple[ASHHybrid, dict]:
    set_determinism(a.seed, a.threads)
    model = ASHHybrid(kind=kind)
    vocab = data.Vocab()
    x_all, y_all = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    t_start = time.perf_counter()
    if kind == "snn":
        probe = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(a.seed))[:512]
        caps, _ = data.sample_captions(split.labels[probe.numpy()], seed=a.seed + 7)
        log(f"init gains {[round(g, 2) for g in calibrate(model, x_all[probe], torch.from_numpy(vocab.bag_of_words(caps)).float())]}")
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    per_epoch = (len(y_all) + a.batch_size - 1) // a.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * per_epoch, pct_start=0.15)
    gen = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        model.train()
        order = torch.randperm(len(y_all), generator=gen)
        captions, _ = data.sample_captions(split.labels, seed=1000 * (a.seed + 1) + epoch)
        bow_all = torch.from_numpy(vocab.bag_of_words(captions)).float()
        tot = 0.0
        for b in range(per_epoch):
            idx = order[b * a.batch_size:(b + 1) * a.batch_size]
            img, txt = model.run(random_shift(x_all[idx], a.shift, gen), bow_all[idx])
            loss = contrastive_loss(img, txt, y_all[idx], model.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        log(f"{kind} epoch {epoch + 1:3d}/{a.epochs}  loss {tot / len(y_all):.4f}  {time.perf_counter() - t0:6.1f}s")
    model.eval()
    rec = evaluate(model)
    rec["train_seconds"] = round(time.perf_counter() - t_start, 1)
    return model, rec


def main(argv=None) -> None:
    p = train_parser(__doc__, DEFAULTS, CHECKPOINT, "checkpoint path; the record goes next to it as .json")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        split = data.load_split("train")
    except FileNotFoundError as e:  # a missing data package: one line with the install command, no traceback
        raise SystemExit(f"error: {e}") from None
    models, record = {}, {}
    for kind in ("snn", "ann"):
        models[kind], record[kind] = train_one(kind, a, split)
        print(kind, record[kind]["paired"], f"rsum {record[kind]['rsum']:.3f}")
    record["hyperparameters"] = {k: getattr(a, k) for k in DEFAULTS}
    record["total_seconds"] = round(time.perf_counter() - t0, 1)
    record["torch"] = torch.__version__
    record["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    save_checkpoint(models, a.out)
    write_json(record, a.out.with_suffix(".json"))
    print(f"total {record['total_seconds']} s -> {a.out}")


if __name__ == "__main__":
    main()
