"""SpikeCLIP-style model at small scale: a Spikformer image encoder and a spiking MLP text encoder whose spike
counts are projected (host) into the frozen MiniLM space, and the ANN of the same size.

Written the way SpikeCLIP's code is (seed-models.md §2): conv tokenizer with BN and MaxPool, token tensors
[B, N, D] from `flatten(2).transpose(1, 2)`, q/k/v = Linear over tokens + BN1d + LIF, `q @ kᵀ @ v × 0.125`
(no softmax; a host op), `attn_lif` with threshold 0.5, MLP block, token mean, projection. Neurons are
spikingjelly's LIFNode as SpikeCLIP builds them (tau = 2, hard reset to 0, detach_reset). Forwards are single
steps (the exporter calls them once per step); the embedding is the last LIF layer's spike count over T.
The two projections to 384-d and the cosine head run on the host after the counts are read off the chip.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spikedeploy.io.atomic import atomic_write

from . import data

CHECKPOINT = Path(__file__).resolve().parent / "checkpoint.pt"
CHECKPOINT_FORMAT = "spikedeploy-spikeclip-v1"
TEACHER_DIM = 384  # all-MiniLM-L6-v2 hidden size (its config.json)

# dim 24: the head reads every token of the three residual branches through the token mean, 3 · 49 · dim input
# axons per head neuron, and a Loihi 2 core takes 4096 (dim 32 needs 4704: the model would not fit the chip)
DEFAULT_CONFIG = {"num_steps": data.NUM_STEPS, "c1": 16, "dim": 24, "embed": 128, "text_hidden": 128,
                  "vocab": 0}


def lif(threshold: float = 1.0, spiking: bool = True) -> nn.Module:
    """SpikeCLIP's MultiStepLIFNode, single-step: tau 2, decay_input, hard reset to 0, sigmoid surrogate.
    The ANN twin uses a ReLU in every neuron's place."""
    if not spiking:
        return nn.ReLU()
    from spikingjelly.activation_based import neuron

    return neuron.LIFNode(tau=2.0, v_threshold=threshold, detach_reset=True, step_mode="s")


class TokenLinear(nn.Module):
    """Conv1d(k=1) over tokens as SpikeCLIP writes it (Linear on [B, N, D]) and a LIF; no BN (see ImageEncoder)."""

    def __init__(self, d_in: int, d_out: int, spiking: bool, threshold: float = 1.0):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out, bias=False)
        self.lif = lif(threshold, spiking)

    def forward(self, x):
        return self.lif(self.fc(x))


class ImageEncoder(nn.Module):
    """Spikformer: conv tokenizer (14x14 -> pool -> 7x7 = 49 tokens), one attention block and one MLP block with
    residual adds, token mean, a Linear + LIF whose spikes are the image embedding.

    No BatchNorm and no bias anywhere (SpikeCLIP has BN after every conv/linear): on the chip a layer L synapses
    deep receives its input L steps late but its bias from step 0, so a folded BN bias would drive it before the
    image arrives and the chip would no longer compute what torch does. Bias-free layers rest until their input
    arrives; train.py calibrates each layer's initial weight scale instead of BN.
    """

    def __init__(self, cfg: dict, spiking: bool = True):
        super().__init__()
        c1, d, e = cfg["c1"], cfg["dim"], cfg["embed"]
        self.conv1, self.lif1 = nn.Conv2d(1, c1, 3, padding=1, bias=False), lif(1.0, spiking)
        self.pool = nn.MaxPool2d(2)  # on spikes: OR on chip
        self.conv2, self.lif2 = nn.Conv2d(c1, d, 3, padding=1, bias=False), lif(1.0, spiking)
        self.q, self.k, self.v = (TokenLinear(d, d, spiking) for _ in range(3))
        self.attn_lif = lif(0.5, spiking)  # SpikeCLIP model.py: attn_lif threshold 0.5
        self.proj = TokenLinear(d, d, spiking)
        self.mlp1, self.mlp2 = TokenLinear(d, 2 * d, spiking), TokenLinear(2 * d, d, spiking)
        self.head, self.head_lif = nn.Linear(d, e, bias=False), lif(1.0, spiking)
        self.input_shapes = {"image": (1, 14, 14)}

    def synapses(self) -> list[tuple[nn.Module, nn.Module]]:
        """(synapse, the neuron it drives) in forward order, for the weight-scale calibration in train.py."""
        return [(self.conv1, self.lif1), (self.conv2, self.lif2), (self.q.fc, self.q.lif), (self.k.fc, self.k.lif),
                (self.v.fc, self.v.lif), (self.proj.fc, self.proj.lif), (self.mlp1.fc, self.mlp1.lif),
                (self.mlp2.fc, self.mlp2.lif), (self.head, self.head_lif)]

    def forward(self, image):
        x = self.pool(self.lif1(self.conv1(image)))
        x = self.lif2(self.conv2(x)).flatten(2).transpose(1, 2)  # [B, 49, D] tokens
        q, k, v = self.q(x), self.k(x), self.v(x)
        x = x + self.proj(self.attn_lif((q @ k.transpose(-2, -1)) @ v * 0.125))
        x = x + self.mlp2(self.mlp1(x))
        return self.head_lif(self.head(x.mean(1)))


class TextEncoder(nn.Module):
    """SpikeCLIP's text encoder is an MLP (Linear -> LIF -> Linear); here over a binary bag of words, bias-free."""

    def __init__(self, cfg: dict, spiking: bool = True):
        super().__init__()
        h, e = cfg["text_hidden"], cfg["embed"]
        self.fc1, self.lif1 = nn.Linear(cfg["vocab"], h, bias=False), lif(1.0, spiking)
        self.fc2, self.lif2 = nn.Linear(h, e, bias=False), lif(1.0, spiking)
        self.input_shapes = {"text": (cfg["vocab"],)}

    def synapses(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.fc1, self.lif1), (self.fc2, self.lif2)]

    def forward(self, text):
        return self.lif2(self.fc2(self.lif1(self.fc1(text))))


class SpikeCLIP(nn.Module):
    """Both encoders, the host projections into the teacher's 384-d space and the logit scale."""

    def __init__(self, cfg: dict | None = None, spiking: bool = True):
        super().__init__()
        self.config = dict(DEFAULT_CONFIG if cfg is None else cfg)
        self.config["vocab"] = len(data.Vocab())
        self.spiking = spiking
        self.vocab = data.Vocab()
        self.image = ImageEncoder(self.config, spiking)
        self.text = TextEncoder(self.config, spiking)
        e = self.config["embed"]
        self.image_proj = nn.Linear(e, TEACHER_DIM, bias=False)  # SpikeCLIP: Linear 384 -> 512 after the mean
        self.text_proj = nn.Linear(e, TEACHER_DIM, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))  # exp = 10

    @property
    def steps(self) -> int:
        return int(self.config["num_steps"]) if self.spiking else 1

    def _counts(self, enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        from spikedeploy.converters.torch_export import reset_neurons

        reset_neurons(enc)
        out = sum(enc(x) for _ in range(self.steps))  # direct encoding: the same frame every step
        reset_neurons(enc)
        return out

    def image_counts(self, images_u8) -> torch.Tensor:
        """uint8 images [B, 1, 14, 14] -> spike counts [B, embed] (ANN: activations)."""
        return self._counts(self.image, torch.as_tensor(images_u8).float() / 255.0)

    def text_counts(self, bow) -> torch.Tensor:
        return self._counts(self.text, torch.as_tensor(bow))

    def embed_images(self, images_u8) -> torch.Tensor:
        return self.image_proj(self.image_counts(images_u8))

    def embed_prompts(self) -> torch.Tensor:
        """[10 * len(TEMPLATES), 384] projected text embeddings of every prompt, class-major."""
        return self.text_proj(self.text_counts(self.vocab.bag_of_words([p for p, _ in data.prompts()])))


def build_image_encoder() -> ImageEncoder:
    """Entry point (examples.spikeclip.model:build_image_encoder) for `spikedeploy export`."""
    return load_pretrained().image


def checkpoint_dict(snn: SpikeCLIP, ann: SpikeCLIP, record: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "config": dict(snn.config), "vocab": list(snn.vocab.itos),
            "snn": {k: v.detach().clone() for k, v in snn.state_dict().items()},
            "ann": {k: v.detach().clone() for k, v in ann.state_dict().items()}, "unseen": list(data.UNSEEN),
            # spikingjelly keeps v_threshold outside the state dict; qat.py moves them onto the chip's grid
            "thresholds": {n: float(m.v_threshold) for n, m in snn.named_modules() if hasattr(m, "v_threshold")},
            "train_record": {k: v for k, v in record.items() if isinstance(v, int | float | str)}}


def save_checkpoint(snn: SpikeCLIP, ann: SpikeCLIP, record: dict, path) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(checkpoint_dict(snn, ann, record), f)


def load_pretrained(path=None, which: str = "snn") -> SpikeCLIP:
    """The bundled (or given) checkpoint's SNN or ANN, loaded with weights_only=True, in eval mode."""
    path = Path(path) if path is not None else CHECKPOINT
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    if list(ck["vocab"]) != data.Vocab().itos or list(ck["unseen"]) != list(data.UNSEEN):
        raise ValueError(f"{path}: its prompts or held-out classes differ from data.py's; retrain with "
                         "examples/spikeclip/train.py")
    model = SpikeCLIP(ck["config"], spiking=which == "snn")
    model.load_state_dict(ck[which])
    if which == "snn":
        modules = dict(model.named_modules())
        for n, th in ck.get("thresholds", {}).items():
            modules[n].v_threshold = float(th)
    return model.eval()
