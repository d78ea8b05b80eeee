"""Train the S-CMRL-style audio-visual SNN and its ANN twin (same layers, ReLU for LIF, one pass) with the
same data, epochs, batch size and optimiser.

    .venv/bin/python examples/scmrl_av/train.py            # reproduces examples/scmrl_av/checkpoint.pt
    .venv/bin/python examples/scmrl_av/train.py --epochs 1 --out /tmp/x.pt

Training pairs: every espeak-ng clip with 2 train digits of its label, re-drawn each epoch. Augmentation of
the audio (so that it generalises to unseen engines): a shift of up to 2 frames, a level offset of -1..+1, one
masked band of up to 3 mel bins. The SNN trains quantization-aware: every forward uses the 8-bit weight
grid the Loihi 2 quantizer will use (straight-through gradients onto float master weights). Modality dropout: 15% of the pairs lose their audio, 15% their digit, so the
single-modality accuracies (the other input zeroed) are measured on a model that has seen such inputs.
One thread (four engineers share two cores). The test pairs (unseen speakers) are scored after the last
epoch only; they select nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spikedeploy.io.atomic import atomic_write

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "examples.scmrl_av"

from . import data  # noqa: E402
from .evaluate import evaluate_model  # noqa: E402
from .model import CHECKPOINT, AVClassifier, ann_macs, save_checkpoint  # noqa: E402

DEFAULTS = {"seed": 0, "epochs": 40, "batch_size": 64, "lr": 3e-3, "threads": 1, "drop": 0.15, "logit_scale": 0.5}


def augment(audio: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = len(audio)
    shift = torch.randint(-2, 3, (n,), generator=gen)
    out = torch.zeros_like(audio)
    for i, s in enumerate(shift.tolist()):
        out[i, ..., max(s, 0):data.FRAMES + min(s, 0)] = audio[i, ..., max(-s, 0):data.FRAMES - max(s, 0)]
    out = (out + torch.randint(-1, 2, (n, 1, 1, 1), generator=gen) * (out > 0)).clamp(0, data.LEVELS)
    band = torch.randint(0, data.MELS, (n,), generator=gen)
    width = torch.randint(0, 4, (n,), generator=gen)
    for i in range(n):
        out[i, :, band[i]:band[i] + width[i]] = 0
    return out


def drop_modalities(audio, visual, p: float, gen: torch.Generator):
    r = torch.rand(len(audio), generator=gen)
    keep_a = (r >= p).float().view(-1, 1, 1, 1)
    keep_v = ((r < p) | (r >= 2 * p)).float().view(-1, 1, 1, 1)
    return audio * keep_a, visual * keep_v


def on_chip_grid(w: torch.Tensor) -> torch.Tensor:
    """The weights Loihi 2 will hold: the quantizer scales a layer so that max|w| maps to 254 and keeps even
    8-bit mantissas (mixed sign: Lava drops the lowest bit; spikedeploy/quantize/quantizer.py, lava-fixed-point.md),
    i.e. a grid of max|w| / 127. Bias-free layers on this grid reach the chip exactly (thresholds round)."""
    step = w.abs().max() / 127.0
    return torch.round(w / step) * step if step > 0 else w


def synapse_weights(model: AVClassifier) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]


def train_one(ann: bool, a: dict, log=print) -> tuple[AVClassifier, list[dict]]:
    torch.manual_seed(a["seed"])
    model = AVClassifier(ann=ann)
    opt = torch.optim.Adam(model.parameters(), lr=a["lr"])
    per_epoch = len(data.load_audio()["train_y"]) * 2
    steps = a["epochs"] * ((per_epoch + a["batch_size"] - 1) // a["batch_size"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a["lr"], total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(a["seed"])
    history, t0 = [], time.perf_counter()
    for epoch in range(a["epochs"]):
        pairs = data.train_pairs(epoch_seed=1000 + epoch)
        audio, visual = torch.from_numpy(pairs.audio).float(), torch.from_numpy(pairs.visual).float()
        labels = torch.from_numpy(pairs.labels)
        order = torch.randperm(len(labels), generator=gen)
        model.train()
        tot = correct = 0.0
        for b in range(0, len(order), a["batch_size"]):
            idx = order[b:b + a["batch_size"]]
            xa, xv = drop_modalities(augment(audio[idx], gen), visual[idx], a["drop"], gen)
            masters = [] if ann else [w.detach().clone() for w in synapse_weights(model)]
            with torch.no_grad():  # quantization-aware (SNN): forward on the chip's grid, straight-through
                for w in synapse_weights(model) if masters else []:
                    w.copy_(on_chip_grid(w))
            scores = model.run(xa, xv)
            loss = F.cross_entropy(scores * (1.0 if ann else a["logit_scale"]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                for w, m in zip(synapse_weights(model), masters, strict=False):
                    w.copy_(m)
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += (scores.argmax(1) == labels[idx]).sum().item()
        history.append({"epoch": epoch + 1, "loss": round(tot / len(order), 4),
                        "train_acc": round(correct / len(order), 4), "seconds": round(time.perf_counter() - t0, 1)})
        log(f"{'ANN' if ann else 'SNN'} epoch {epoch + 1:2d}/{a['epochs']}  loss {tot / len(order):.4f}  "
            f"train acc {correct / len(order):.3f}  {time.perf_counter() - t0:6.1f}s")
    if not ann:
        with torch.no_grad():  # the checkpoint holds the weights the chip will hold
            for w in synapse_weights(model):
                w.copy_(on_chip_grid(w))
    return model.eval(), history


def train(args: dict, log=print) -> tuple[AVClassifier, AVClassifier, dict]:
    torch.set_num_threads(args["threads"])
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    snn_model, snn_hist = train_one(False, args, log)
    t_snn = time.perf_counter() - t0
    ann_model, ann_hist = train_one(True, args, log)
    test = data.test_pairs()
    record = {
        "snn": {"test": evaluate_model(snn_model, test), "history": snn_hist, "train_seconds": round(t_snn, 1)},
        "ann": {"test": evaluate_model(ann_model, test), "history": ann_hist,
                "train_seconds": round(time.perf_counter() - t0 - t_snn, 1), "macs_per_inference": ann_macs(ann_model)},
        "test_set": f"{len(test.labels)} pairs: 60 unseen-speaker clips (50 flite, 10 human) x "
                    f"{data.TEST_PAIRS_PER_CLIP} test digits",
        "hyperparameters": dict(args), "torch": torch.__version__,
        "total_seconds": round(time.perf_counter() - t0, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    return snn_model, ann_model, record


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in DEFAULTS.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    p.add_argument("--out", type=Path, default=CHECKPOINT, help="checkpoint path; the record goes next to it as .json")
    a = vars(p.parse_args(argv))
    out = a.pop("out")
    snn_model, ann_model, record = train(a)
    save_checkpoint(snn_model, ann_model, out)
    with atomic_write(out.with_suffix(".json"), "w") as f:
        f.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    for k in ("snn", "ann"):
        t = record[k]["test"]
        print(f"{k}: fused {t['fused']:.3f}  audio-only {t['audio_only']:.3f}  visual-only {t['visual_only']:.3f}"
              f"  (chance {t['chance']:.2f})")


if __name__ == "__main__":
    main()
