"""Train the SpikeCLIP-style SNN and its same-size ANN twin, in the paper's three stages (seed-models.md §2).

    .venv/bin/python -m examples.spikeclip.train               # reproduces checkpoint.pt / checkpoint.json
    .venv/bin/python -m examples.spikeclip.train --epochs 1 --per-class 200 --out /tmp/x.pt

1. text: the spiking MLP text encoder (+ its projection) learns 1 - cos to the frozen MiniLM embeddings of
   every prompt of all 10 class names (text only: SpikeCLIP trains its text encoder on label sentences).
2. image alignment (first align_frac of the steps): 1 - cos between the image embedding and the MiniLM prototype of its class.
   SpikeCLIP aligns to CLIP image features; MiniLM has no image tower, so the class's text prototype stands in.
3. dual-loss fine-tuning (the remaining steps): CE over the seen classes' cosine logits + KL to a teacher's logits
   (SpikeCLIP: a task-fine-tuned CLIP; here the ANN twin, trained first by the same schedule with CE only).
4. quantization-aware fine-tuning (qat.py): the same dual loss (and the text loss) for `qat_epochs` with every
   weight on the grid Loihi 2 realizes and its thresholds; the checkpoint stores those weights.
Only images of the 7 SEEN classes are used; the 3 UNSEEN classes are never shown as images.
One thread (the machine is shared), seeded, deterministic algorithms. The test set is scored once at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from examples.pipeline_cli import train_parser
from spikedeploy.io.atomic import atomic_write

from . import data, qat
from .evaluate import evaluate_model
from .model import CHECKPOINT, SpikeCLIP, save_checkpoint

DEFAULTS = {"seed": 0, "epochs": 3, "per_class": 2000, "batch_size": 64, "lr": 5e-3, "text_steps": 300,
            "kl_weight": 0.25, "align_frac": 0.3, "kl_temperature": 2.0, "threads": 1,
            "qat_epochs": 1, "qat_lr": 1e-3, "qat_text_steps": 100}
SEEN = torch.tensor(data.SEEN)


def train_text(model: SpikeCLIP, teacher: torch.Tensor, steps: int, lr: float) -> float:
    bow = torch.from_numpy(model.vocab.bag_of_words([p for p, _ in data.prompts()]))
    params = [*model.text.parameters(), *model.text_proj.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    model.text.train()
    for _ in range(steps):
        loss = 1 - F.cosine_similarity(model.text_proj(model.text_counts(bow)), teacher).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.text.eval()
    return loss.item()


def train_image(model: SpikeCLIP, split: data.Split, protos_teacher: torch.Tensor, a: argparse.Namespace,
                teacher_model: SpikeCLIP | None, log) -> list[float]:
    with torch.no_grad():
        protos = torch.from_numpy(data.prototypes(model.embed_prompts().numpy())).float()[SEEN]
    target = F.normalize(protos_teacher, dim=1)
    remap = torch.full((len(data.CLASSES),), -1, dtype=torch.long)
    remap[SEEN] = torch.arange(len(SEEN))
    x_all, y_all = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    params = [*model.image.parameters(), *model.image_proj.parameters(), model.logit_scale]
    opt = torch.optim.Adam(params, lr=a.lr)
    steps = a.epochs * ((len(y_all) + a.batch_size - 1) // a.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(a.seed)
    losses, t0 = [], time.perf_counter()
    align_steps, step = int(a.align_frac * steps), 0
    for epoch in range(a.epochs):
        model.image.train()
        order = torch.randperm(len(y_all), generator=gen)
        tot = 0.0
        for b in range(0, len(y_all), a.batch_size):
            idx = order[b:b + a.batch_size]
            x, y = x_all[idx], y_all[idx]
            emb = model.embed_images(x)
            step += 1
            if step <= align_steps:  # stage 2: alignment to the teacher's class prototype
                loss = 1 - F.cosine_similarity(emb, target[y]).mean()
            else:  # stage 3: CE + KL (dual loss; boundary_angle -90 in SpikeCLIP = both always)
                logits = model.logit_scale.exp().clamp(max=100) * F.normalize(emb, dim=1) @ F.normalize(protos, dim=1).T
                loss = F.cross_entropy(logits, remap[y])
                if teacher_model is not None:
                    with torch.no_grad():
                        t_emb = teacher_model.embed_images(x)
                        t_logits = teacher_model.logit_scale.exp().clamp(max=100) * F.normalize(t_emb, dim=1) \
                            @ F.normalize(teacher_protos(teacher_model), dim=1).T
                    tau = a.kl_temperature
                    loss = loss + a.kl_weight * tau * tau * F.kl_div(
                        F.log_softmax(logits / tau, 1), F.log_softmax(t_logits / tau, 1), log_target=True,
                        reduction="batchmean")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        losses.append(tot / len(y_all))
        log(f"  epoch {epoch + 1}/{a.epochs} loss {losses[-1]:.4f} {time.perf_counter() - t0:6.1f}s")
    model.eval()
    return losses


_PROTO_CACHE: dict[int, torch.Tensor] = {}


@torch.no_grad()
def teacher_protos(teacher: SpikeCLIP) -> torch.Tensor:
    key = id(teacher)
    if key not in _PROTO_CACHE:
        _PROTO_CACHE[key] = torch.from_numpy(data.prototypes(teacher.embed_prompts().numpy())).float()[SEEN]
    return _PROTO_CACHE[key]


@torch.no_grad()
def calibrate_rates(encoder, run, target: float = 0.15, iters: int = 10) -> list[float]:
    """Data-driven init in place of BN (model.ImageEncoder says why there is none): scale each synapse, in
    forward order, so the neuron it drives fires at `target` spikes per neuron per step on a probe batch
    (bisection on the log gain; the retrieval example's calibrate_rates, for a non-sequential encoder).
    Without it the bias-free layers start silent and get no gradient. Returns the gains."""
    gains = []
    for syn, neuron in encoder.synapses():
        rec: list[torch.Tensor] = []
        hook = neuron.register_forward_hook(lambda m, i, o, rec=rec: rec.append(o))
        w0, lo, hi = syn.weight.clone(), -4.0, 6.0
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            syn.weight.copy_(w0 * float(np.exp(mid)))
            rec.clear()
            run()
            lo, hi = (mid, hi) if torch.stack(rec).mean() < target else (lo, mid)
        gains.append(float(np.exp(0.5 * (lo + hi))))
        syn.weight.copy_(w0 * gains[-1])
        hook.remove()
    return gains


def train_one(spiking: bool, a, split, teacher_emb, teacher_model=None, log=print) -> tuple[SpikeCLIP, dict]:
    torch.manual_seed(a.seed)
    model = SpikeCLIP(spiking=spiking)
    t0 = time.perf_counter()
    if spiking:
        bow = model.vocab.bag_of_words([p for p, _ in data.prompts()])
        probe = split.images[:128]
        gains = {"text": calibrate_rates(model.text, lambda: model.text_counts(bow)),
                 "image": calibrate_rates(model.image, lambda: model.image_counts(probe))}
        log(f"init gains {gains}")
    text_loss = train_text(model, teacher_emb, a.text_steps, a.lr)
    t1 = time.perf_counter()
    log(f"{'SNN' if spiking else 'ANN'} text 1-cos {text_loss:.4f} ({t1 - t0:.1f}s)")
    protos_teacher = torch.from_numpy(data.prototypes(teacher_emb.numpy())).float()
    losses = train_image(model, split, protos_teacher, a, teacher_model, log)
    rec = {"text_1_minus_cos": round(text_loss, 4), "text_seconds": round(t1 - t0, 1),
           "image_seconds": round(time.perf_counter() - t1, 1), "image_losses": [round(v, 4) for v in losses]}
    return model, rec


def qat_finetune(model: SpikeCLIP, split: data.Split, teacher_emb: torch.Tensor, a: argparse.Namespace,
                 teacher_model: SpikeCLIP, log=print) -> dict:
    """Stage 4: fine-tune both encoders on Loihi 2's weight grid and thresholds (qat.py), then store them.
    Returns, per encoder, how exactly its quantized graph holds the stored model (check_on_grid)."""
    calib = qat.calibration_images(a.seed)
    bow = model.vocab.bag_of_words([p for p, _ in data.prompts()])
    encoders = (("image", model.image, calib, True), ("text", model.text, bow, False))
    for name, enc, x, image in encoders:
        qg = qat.export_quantize(enc, name, x, x, model.steps, image=image)[2]
        grids, thresholds = qat.chip_grids(enc, qg)
        qat.set_thresholds(enc, thresholds)
        qat.attach(enc, grids)
    t0 = time.perf_counter()
    text_loss = train_text(model, teacher_emb, a.qat_text_steps, a.qat_lr)
    protos_teacher = torch.from_numpy(data.prototypes(teacher_emb.numpy())).float()
    losses = train_image(model, split, protos_teacher,
                         argparse.Namespace(**{**vars(a), "epochs": a.qat_epochs, "lr": a.qat_lr, "align_frac": 0.0}),
                         teacher_model, log)
    rec = {"seconds": round(time.perf_counter() - t0, 1), "text_1_minus_cos": round(text_loss, 4),
           "image_losses": [round(v, 4) for v in losses]}
    for name, enc, x, image in encoders:
        qat.detach_snapped(enc)
        # the percentile ranges may have moved with training: snap again to the grid they now give
        rounds = 0
        while True:
            rounds += 1
            qg = qat.export_quantize(enc, name, x, x, model.steps, image=image)[2]
            check = qat.check_on_grid(qg)
            if (check["weight_rel_rms_error_max"] < 1e-6 and check["thresholds_exact"]) or rounds == 3:
                break
            grids, thresholds = qat.chip_grids(enc, qg)
            qat.set_thresholds(enc, thresholds)
            qat.attach(enc, grids)
            qat.detach_snapped(enc)
        rec[name] = {**check, "quantize_rounds": rounds}
        log(f"QAT {name}: {rec[name]}")
    return rec


def main(argv=None) -> None:
    p = train_parser(__doc__, DEFAULTS, CHECKPOINT, "checkpoint; its training record goes next to it (.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()
    teacher_emb = torch.from_numpy(data.teacher_embeddings([q for q, _ in data.prompts()])).float()
    split = data.train_split(a.seed, a.per_class)
    ann, ann_rec = train_one(False, a, split, teacher_emb)
    snn, snn_rec = train_one(True, a, split, teacher_emb, teacher_model=ann)
    snn_rec["before_qat"] = evaluate_model(snn, data.test_split())
    snn_rec["qat"] = qat_finetune(snn, split, teacher_emb, a, ann)
    test = data.test_split()
    record = {"snn": {**snn_rec, "test": evaluate_model(snn, test)}, "ann": {**ann_rec, "test": evaluate_model(ann, test)},
              "hyperparameters": vars(a) | {"out": str(a.out)}, "train_images": int(len(split.labels)),
              "seen_classes": [data.CLASSES[c] for c in data.SEEN], "unseen_classes": [data.CLASSES[c] for c in data.UNSEEN],
              "total_seconds": round(time.perf_counter() - t_start, 1), "torch": torch.__version__,
              "load_average_1min_at_end": round(os.getloadavg()[0], 2),
              "note": "wall clock on a shared 2-core machine; other jobs running at the same time inflate it"}
    save_checkpoint(snn, ann, {"total_seconds": record["total_seconds"]}, a.out)
    with atomic_write(a.out.with_suffix(".json"), "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    for k in ("snn", "ann"):
        t = record[k]["test"]
        print(f"{k}: unseen zero-shot {t['unseen_zero_shot']:.3f} (chance {t['chance']['unseen_zero_shot']:.3f})  "
              f"seen {t['seen']:.3f}  10-way {t['generalized_10way']:.3f}")
    print(f"total {record['total_seconds']}s -> {a.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
