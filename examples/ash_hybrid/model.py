"""ASH-style hybrid dual encoder (ASH-Nets, arXiv 2308.09455, abstract only: shared/notes/seed-models.md §4).

- Visual concrete encoder (ANN, continuous latents, host): Conv2d(1→16, 5×5, stride 2, pad 2) → ReLU →
  MaxPool2d(2) → 16×7×7.
- Semantic abstract encoder (SNN, discrete spike latents, chip): Linear(784→128) → LIF → Linear(128→64) → LIF.
- Text encoder (SNN, chip): binary bag of words (41) → Linear(41→128) → LIF → Linear(128→64) → LIF.
- Embedding: spike counts of the last LIF over T = 4 steps; cosine similarity on the host.

`forward(image, text)` is one time step (the exporter calls it once per step); the membranes live in the
snnTorch neurons, so `run` resets them before each sequence. Neurons reset to zero without delay (the
setting that exports exactly, shared/notes/nir-export.md). `kind="ann"` builds the ANN baseline of the same
size: every LIF a ReLU, one pass, real-valued embeddings. `chip_frontend()` converts the ANN front end into
spiking layers for the "as much as possible on chip" split (see its docstring).
"""

from __future__ import annotations

from pathlib import Path

import snntorch as snn
import torch
from torch import nn

from examples.retrieval import data
from spikedeploy.io.atomic import atomic_write

CHECKPOINT = Path(__file__).resolve().parent / "checkpoint.pt"
CHECKPOINT_FORMAT = "spikedeploy-ash-hybrid-v1"
CONFIG = {"num_steps": 4, "channels": 16, "hidden": 128, "embed_dim": 64, "beta": 0.9, "threshold": 1.0}


def lif(cfg: dict) -> snn.Leaky:
    return snn.Leaky(beta=cfg["beta"], threshold=cfg["threshold"], reset_mechanism="zero", reset_delay=False)


class Encoder(nn.Module):
    """Linear → LIF → Linear → LIF (or ReLU for the ANN); step() is one time step."""

    def __init__(self, d_in: int, cfg: dict, spiking: bool):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, cfg["hidden"]), nn.Linear(cfg["hidden"], cfg["embed_dim"])
        self.act1, self.act2 = (lif(cfg), lif(cfg)) if spiking else (nn.ReLU(), nn.ReLU())

    def forward(self, x):
        h = self.act1(self.fc1(x))
        h = h[0] if isinstance(h, tuple) else h
        y = self.act2(self.fc2(h))
        return y[0] if isinstance(y, tuple) else y


class ASHHybrid(nn.Module):
    def __init__(self, cfg: dict | None = None, kind: str = "snn", vocab_size: int | None = None):
        super().__init__()
        self.config, self.kind = dict(cfg or CONFIG), kind
        c = self.config["channels"]
        self.visual = nn.Sequential(nn.Conv2d(1, c, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        spiking = kind == "snn"
        self.semantic = Encoder(c * 7 * 7, self.config, spiking)
        self.text = Encoder(vocab_size or len(data.Vocab()), self.config, spiking)
        self.logit_scale = nn.Parameter(torch.tensor(2.3026))  # log 10; training only
        self.input_shapes = {"image": (1, 28, 28), "text": (vocab_size or len(data.Vocab()),)}

    @property
    def num_steps(self) -> int:
        return int(self.config["num_steps"]) if self.kind == "snn" else 1

    def forward(self, image, text):
        """One step: image [B, 1, 28, 28] in [0, 1], text [B, V] multi-hot -> (image, text) spikes [B, 64]."""
        return self.semantic(self.visual(image).flatten(1)), self.text(text)

    def run(self, images, bow):
        """Whole sequences: the same frame each step (direct encoding) -> spike-count embeddings [B, 64]."""
        from spikedeploy.converters.torch_export import reset_neurons

        reset_neurons(self)
        img = txt = 0
        for _ in range(self.num_steps):
            i, t = self(images, bow)
            img, txt = img + i, txt + t
        reset_neurons(self)
        return img, txt


class SpikingFrontend(nn.Module):
    """The front end made of chip layers: Conv2d on integer pixels → IF neuron (reset by subtraction) →
    MaxPool2d on spikes (OR on chip). A spike stands for `theta` of the ReLU output, so fc1 is scaled by theta."""

    def __init__(self, conv: nn.Conv2d, theta: float):
        super().__init__()
        self.conv = conv
        self.lif = snn.Leaky(beta=1.0, threshold=theta, reset_mechanism="subtract", reset_delay=False)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(self.lif(self.conv(x))[0])


def chip_frontend(model: ASHHybrid, theta: float) -> ASHHybrid:
    """ANN-to-SNN conversion of the visual encoder (no retraining): ReLU → IF neuron with threshold `theta`
    (the spike rate approximates ReLU/theta), MaxPool over those spikes; fc1's weights × theta. Everything
    but the similarity head then runs on chip."""
    import copy

    m = copy.deepcopy(model)
    m.visual = SpikingFrontend(m.visual[0], theta)
    with torch.no_grad():
        m.semantic.fc1.weight.mul_(theta)
    return m.eval()


def build_model(config: dict | None = None) -> ASHHybrid:
    return ASHHybrid(config)


def save_checkpoint(models: dict[str, ASHHybrid], path, extra: dict | None = None) -> None:
    ck = {"format": CHECKPOINT_FORMAT, "config": dict(next(iter(models.values())).config),
          "vocab": list(data.Vocab().itos),
          **{f"{k}_state_dict": {n: v.detach().clone() for n, v in m.state_dict().items()} for k, m in models.items()},
          **(extra or {})}
    with atomic_write(path, "wb") as f:
        torch.save(ck, f)


def load_pretrained(path=None, kind: str = "snn") -> ASHHybrid:
    """The bundled checkpoint (SNN or its ANN baseline), loaded with weights_only=True, in eval mode."""
    path = Path(path) if path is not None else CHECKPOINT
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint; retrain with examples/ash_hybrid/train.py")
    if list(ck["vocab"]) != data.Vocab().itos:
        raise ValueError(f"{path}: its vocabulary differs from the caption templates'; retrain with "
                         "examples/ash_hybrid/train.py")
    m = ASHHybrid(ck["config"], kind)
    m.load_state_dict(ck[f"{kind}_state_dict"])
    return m.eval()
