"""An S-CMRL-style audio-visual spiking classifier at small scale (seed-models.md §3), and its ANN twin.

Per modality an SPS tokenizer: two stages of Conv3x3 + BN + LIF + MaxPool on spikes, then tokens
[B, N, D] = x.flatten(2).transpose(1, 2) (16 tokens of D = 32 for each 16x16 input). Cross-modal spiking
attention in both directions (S-CMRL's `block[0](audio, visual)`, `block[1](visual, audio)`): Q from the
query modality, K and V from the other (Linear over tokens + BN1d + LIF each), (q @ kᵀ) @ v x 0.25 (a
product of two dynamic spike matrices: it runs on the host), LIF, a projection (Linear + BN + LIF), and
the cross-modal residual x + 1.5 · branch. After fusion: mean over tokens of each stream, the two streams
added (as S-CMRL adds them), a Linear head onto 4 spiking neurons per class; the class score is the spike
count of its 4 neurons over the T = 4 steps (the paper averages an analog head over T; a spike count is what
a chip reads out, and 4 neurons per class make ties rarer).

No BatchNorm and no biases (S-CMRL has BN after every Conv/Linear): on the chip every synapse delays its
input by one step, so a layer's bias current integrates for `depth` steps before the first input arrives,
which the torch model never sees; with BN's shift folded into biases the deep layers started from other
states and the emulator agreed with float on only ~64% of test predictions. Bias-free layers sit at rest
until their input arrives, so the chip is the torch model delayed, up to 8-bit weight rounding.

Neuron: S-CMRL's MyNode is mem += (x - mem)/tau, tau = 2, hard reset, theta = 1; snnTorch's Leaky with
beta = 0.5, reset to zero without delay, theta = 1 is the same neuron with its input weights halved (the
factor 1/tau folds into the weights), so the exporter maps it exactly. The attention LIF fires at 0.5 (the
threshold S-CMRL's code asks for; its MyNode drops the keyword and uses 1.0, seed-models.md §3).
Single-step forward: the exporter calls it once per time step and the neurons keep their state.
"""

from __future__ import annotations

from pathlib import Path

import snntorch as snn
import torch
from torch import nn

from spikedeploy.converters import torch_export as tx
from spikedeploy.io.atomic import atomic_write

from . import data

CHECKPOINT = Path(__file__).resolve().parent / "checkpoint.pt"
CHECKPOINT_FORMAT = "spikedeploy-scmrl-av-v1"
GAIN = 4.0  # SNN init gain of layers fed by spikes: ~0.2-rate spikes into U(±1/sqrt(fan_in)) weights barely fire
# (measured: visual conv1 fired 0.1-0.9% at gain 1); the ANN twin keeps PyTorch's init (ReLU needs no gain)
CONFIG = {"num_steps": data.NUM_STEPS, "dim": 32, "stage1": 16, "per_class": 4, "alpha": 1.5, "attn_scale": 0.25}


def lif(threshold: float = 1.0) -> snn.Leaky:
    return snn.Leaky(beta=0.5, threshold=threshold, reset_mechanism="zero", reset_delay=False)


def spk(out):
    return out[0] if isinstance(out, tuple) else out


class Act(nn.Module):
    """The ANN twin's activation where the SNN has a neuron: ReLU (stateless)."""

    def forward(self, x):
        return torch.relu(x)


def neuron(ann: bool, threshold: float = 1.0) -> nn.Module:
    return Act() if ann else lif(threshold)


def _gain(layer: nn.Module, g: float) -> nn.Module:
    """Scale the default init so that a layer fed by sparse spikes fires from the first step (no BN here)."""
    with torch.no_grad():
        layer.weight.mul_(g)
    return layer


class TokenLinear(nn.Module):
    """Linear over tokens and a neuron (S-CMRL's Conv1d + BN + LIF without the BN: see the module docstring)."""

    def __init__(self, d_in: int, d_out: int, ann: bool):
        super().__init__()
        self.fc = _gain(nn.Linear(d_in, d_out, bias=False), 1.0 if ann else GAIN)
        self.act = neuron(ann)

    def forward(self, x):
        return spk(self.act(self.fc(x)))


class SPS(nn.Module):
    """Two stages of Conv3x3 + neuron + MaxPool2d(2) (on spikes), then [B, N, D] tokens."""

    def __init__(self, c1: int, dim: int, ann: bool, gain1: float):
        super().__init__()
        self.conv1, self.act1 = _gain(nn.Conv2d(1, c1, 3, padding=1, bias=False), gain1), neuron(ann)
        self.conv2, self.act2 = _gain(nn.Conv2d(c1, dim, 3, padding=1, bias=False), 1.0 if ann else GAIN), neuron(ann)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        x = self.pool(spk(self.act1(self.conv1(x))))
        x = self.pool(spk(self.act2(self.conv2(x))))
        return x.flatten(2).transpose(1, 2)


class CrossAttention(nn.Module):
    """Spatial cross-modal spiking self-attention: Q from `x`, K and V from `other`, residual x + alpha·branch."""

    def __init__(self, dim: int, ann: bool, alpha: float, scale: float):
        super().__init__()
        self.q, self.k, self.v = (TokenLinear(dim, dim, ann) for _ in range(3))
        self.attn_act = neuron(ann, threshold=0.5)
        self.proj = TokenLinear(dim, dim, ann)
        self.alpha, self.scale = alpha, scale

    def forward(self, x, other):
        attn = (self.q(x) @ self.k(other).transpose(-2, -1)) @ self.v(other) * self.scale
        return x + self.alpha * self.proj(spk(self.attn_act(attn)))


class AVClassifier(nn.Module):
    """One time step: audio [B, 1, 16, 16] integers 0..7, visual [B, 1, 16, 16] spikes -> class neurons."""

    def __init__(self, cfg: dict | None = None, ann: bool = False):
        super().__init__()
        self.config = dict(CONFIG if cfg is None else cfg)
        c, ann_ = self.config, ann
        self.ann = ann
        self.audio = SPS(c["stage1"], c["dim"], ann_, 1.0)  # payloads 0..7 drive it already
        self.visual = SPS(c["stage1"], c["dim"], ann_, 1.0 if ann else GAIN)  # binary pixels
        self.a_from_v = CrossAttention(c["dim"], ann_, c["alpha"], c["attn_scale"])
        self.v_from_a = CrossAttention(c["dim"], ann_, c["alpha"], c["attn_scale"])
        self.head = _gain(nn.Linear(c["dim"], data.NUM_CLASSES * c["per_class"], bias=False), 1.0 if ann else GAIN)
        self.head_act = neuron(ann_)

    @property
    def num_steps(self) -> int:
        return int(self.config["num_steps"])

    def forward(self, audio, visual):
        a, v = self.audio(audio), self.visual(visual)
        fa, fv = self.a_from_v(a, v), self.v_from_a(v, a)
        feat = fa.mean(1) + fv.mean(1)  # S-CMRL adds the two streams' token means
        out = self.head(feat)
        return out if self.ann else spk(self.head_act(out))

    def class_scores(self, out_counts: torch.Tensor) -> torch.Tensor:
        """[..., classes * per_class] (spike counts or ANN outputs) -> [..., classes]: each class's neurons summed."""
        return out_counts.reshape(*out_counts.shape[:-1], data.NUM_CLASSES, -1).sum(-1)

    def run(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Static inputs [B, 1, 16, 16] presented for T steps (direct encoding) -> class scores [B, 10]:
        the SNN's spike counts per class; the ANN's one-pass outputs."""
        if self.ann:
            return self.class_scores(self(audio, visual))
        tx.reset_neurons(self)
        counts = sum(self(audio, visual) for _ in range(self.num_steps))
        tx.reset_neurons(self)
        return self.class_scores(counts)


def ann_macs(model: AVClassifier) -> int:
    """Multiply-accumulates of one ANN pass: every Conv/Linear, the two attention products per direction."""
    c, n = model.config, (data.MELS // 4) * (data.FRAMES // 4)
    d, c1 = c["dim"], c["stage1"]
    convs = 2 * (16 * 16 * c1 * 9 + 8 * 8 * d * c1 * 9)
    attn = 2 * (4 * n * d * d + 2 * n * n * d)
    return int(convs + attn + d * data.NUM_CLASSES * c["per_class"])


def save_checkpoint(snn_model: AVClassifier, ann_model: AVClassifier, path) -> None:
    ck = {"format": CHECKPOINT_FORMAT, "config": dict(snn_model.config),
          "snn": {k: v.detach().clone() for k, v in snn_model.state_dict().items()},
          "ann": {k: v.detach().clone() for k, v in ann_model.state_dict().items()}}
    with atomic_write(path, "wb") as f:
        torch.save(ck, f)


def load_pretrained(path=None, ann: bool = False) -> AVClassifier:
    """The bundled (or given) checkpoint's SNN (or ANN twin), loaded with weights_only=True, in eval mode."""
    path = Path(path) if path is not None else CHECKPOINT
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint; retrain with examples/scmrl_av/train.py")
    model = AVClassifier(ck["config"], ann=ann)
    model.load_state_dict(ck["ann" if ann else "snn"])
    return model.eval()
