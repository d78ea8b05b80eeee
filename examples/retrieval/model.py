"""The reference multimodal SNN: a spiking dual encoder mapping MNIST digits and their captions to one space.

Both encoders are plain chains of chip primitives (Conv2d, Flatten, Linear, LIF), written as an
nn.Sequential of torch/snnTorch modules so an exporter can walk them module by module. Every Leaky has
reset to zero without delay and per-neuron beta/threshold tensors shaped like its output: that is the
setting snnTorch exports to NIR without losing meaning (see shared/notes/nir-export.md). The embedding is
the spike count of the last Leaky layer summed over T steps, so everything up to the embedding runs on
chip; only the cosine similarity (and its temperature) is a host-side head.
"""

from __future__ import annotations

from pathlib import Path

import snntorch as snn
import torch
from torch import nn

from spikedeploy.io.atomic import atomic_write

from . import data

CHECKPOINT = Path(__file__).resolve().parent / "checkpoint.pt"
CHECKPOINT_FORMAT = "spikedeploy-retrieval-v1"

DEFAULT_CONFIG = {
    "num_steps": data.NUM_STEPS,
    "image_shape": list(data.IMAGE_SHAPE),
    "conv_channels": [12, 24],
    "image_hidden": 128,
    "text_hidden": 128,
    "embed_dim": 128,
    "beta": 0.9,
    "threshold": 1.0,
}


def leaky(shape: tuple[int, ...], beta: float, threshold: float) -> snn.Leaky:
    return snn.Leaky(
        beta=torch.full(shape, float(beta)),
        threshold=torch.full(shape, float(threshold)),
        reset_mechanism="zero",
        reset_delay=False,
        learn_beta=False,
        learn_threshold=False,
        init_hidden=False,
    )


class SpikingEncoder(nn.Module):
    """A feed-forward chain of torch layers and Leaky neurons, stepped explicitly over time.

    `net` holds the layers in order; each Leaky's membrane is passed in and out explicitly (never kept in
    the module between calls), so one step is `out, state = enc.step(x_t, state)`.
    """

    def __init__(self, layers: list[nn.Module], input_shape: tuple[int, ...]):
        super().__init__()
        self.net = nn.Sequential(*layers)
        self.input_shape = tuple(input_shape)

    def neuron_layers(self) -> list[snn.Leaky]:
        return [m for m in self.net if isinstance(m, snn.Leaky)]

    def init_state(self, batch: int) -> list[torch.Tensor]:
        return [torch.zeros(batch, *m.beta.shape) for m in self.neuron_layers()]

    def step(self, x_t: torch.Tensor, state: list[torch.Tensor], record: list | None = None):
        """One time step: x_t [B, *input_shape] -> (output spikes [B, embed], new membrane list)."""
        new_state, k = [], 0
        for m in self.net:
            if isinstance(m, snn.Leaky):
                x_t, mem = m(x_t, state[k])
                new_state.append(mem)
                k += 1
                if record is not None:
                    record.append(x_t)
            else:
                x_t = m(x_t)
        return x_t, new_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Time-major input [T, B, *input_shape] -> output spikes [T, B, embed]."""
        return self.run(x)[0]

    def run(self, x: torch.Tensor, record: bool = False):
        """Like forward; with record=True also returns each Leaky layer's spikes as [T, B, *shape]."""
        state = self.init_state(x.shape[1])
        outs, per_step = [], []
        for t in range(x.shape[0]):
            rec = [] if record else None
            y, state = self.step(x[t], state, rec)
            outs.append(y)
            if record:
                per_step.append(rec)
        layers = [torch.stack(s) for s in zip(*per_step, strict=True)] if record else None
        return torch.stack(outs), layers


def image_encoder(cfg: dict) -> SpikingEncoder:
    c1, c2 = cfg["conv_channels"]
    _, h, w = cfg["image_shape"]
    h1, w1 = (h + 1) // 2, (w + 1) // 2  # 5x5 stride 2 pad 2
    h2, w2 = (h1 + 1) // 2, (w1 + 1) // 2  # 3x3 stride 2 pad 1
    b, th = cfg["beta"], cfg["threshold"]
    layers = [
        nn.Conv2d(cfg["image_shape"][0], c1, 5, stride=2, padding=2),
        leaky((c1, h1, w1), b, th),
        nn.Conv2d(c1, c2, 3, stride=2, padding=1),
        leaky((c2, h2, w2), b, th),
        nn.Flatten(),
        nn.Linear(c2 * h2 * w2, cfg["image_hidden"]),
        leaky((cfg["image_hidden"],), b, th),
        nn.Linear(cfg["image_hidden"], cfg["embed_dim"]),
        leaky((cfg["embed_dim"],), b, th),
    ]
    return SpikingEncoder(layers, tuple(cfg["image_shape"]))


def text_encoder(cfg: dict, vocab_size: int) -> SpikingEncoder:
    b, th = cfg["beta"], cfg["threshold"]
    layers = [
        nn.Linear(vocab_size, cfg["text_hidden"]),
        leaky((cfg["text_hidden"],), b, th),
        nn.Linear(cfg["text_hidden"], cfg["embed_dim"]),
        leaky((cfg["embed_dim"],), b, th),
    ]
    return SpikingEncoder(layers, (vocab_size,))


class DualEncoder(nn.Module):
    """Image and text spiking encoders plus the host-side similarity temperature."""

    def __init__(self, cfg: dict | None = None, vocab: data.Vocab | None = None):
        super().__init__()
        self.config = dict(DEFAULT_CONFIG if cfg is None else cfg)
        self.vocab = vocab if vocab is not None else data.Vocab()
        self.image = image_encoder(self.config)
        self.text = text_encoder(self.config, len(self.vocab))
        # host-side head only: cosine similarity * exp(logit_scale); ranking does not depend on it
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(10.0)))))

    @property
    def num_steps(self) -> int:
        return int(self.config["num_steps"])

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Time-major images [T, B, 1, 28, 28] -> spike-count embedding [B, embed]."""
        return self.image(x).sum(0)

    def encode_text(self, x: torch.Tensor) -> torch.Tensor:
        """Time-major bag of words [T, B, V] -> spike-count embedding [B, embed]."""
        return self.text(x).sum(0)

    def embed_images(self, images) -> torch.Tensor:
        """Convenience: float images [B, 1, 28, 28] in [0, 1], direct-encoded over num_steps."""
        return self.encode_image(data.encode_images(images, self.num_steps))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(data.encode_text(self.vocab.bag_of_words(texts), self.num_steps))


def build_model(config: dict | None = None) -> DualEncoder:
    """Entry point (examples.retrieval.model:build_model): an untrained DualEncoder."""
    return DualEncoder(config)


def checkpoint_dict(model: DualEncoder, extra: dict | None = None) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.config),
        "vocab": list(model.vocab.itos),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        **(extra or {}),
    }


def save_checkpoint(model: DualEncoder, path, extra: dict | None = None) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(checkpoint_dict(model, extra), f)


def load_pretrained(path=None) -> DualEncoder:
    """The bundled (or given) checkpoint, loaded with weights_only=True, in eval mode."""
    path = Path(path) if path is not None else CHECKPOINT
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format={ck.get('format') if isinstance(ck, dict) else type(ck).__name__})")
    vocab = data.Vocab()
    if list(ck["vocab"]) != vocab.itos:
        raise ValueError(f"{path}: its vocabulary ({len(ck['vocab'])} words) differs from the templates' "
                         f"({len(vocab)} words); retrain with examples/retrieval/train.py")
    model = DualEncoder(ck["config"], vocab)
    model.load_state_dict(ck["state_dict"])
    return model.eval()
