"""A small CMSF-style spiking image-text encoder pair with spike-level cross-modal gating (seed-models.md §1).

Image path (CMSF img_SSA_LBL at depth 1): region tokens [B, 16, 48] -> token Linear + BN + LIF (the spike
coder) -> one block: x = x + SSA(x), x = x + MLP(x), with SSA's linear-order attention
attn_lif(q @ (k^T @ v) * 0.125) (attn_lif threshold 0.5) -> token mean -> Linear + BN + LIF: the embedding.
Text path (CMSF txt_SSA_LBL): frozen MiniLM sentence features (host) as graded integer payloads -> Linear +
BN + LIF (coder) -> one residual spiking MLP block -> Linear + BN + LIF: the embedding.
Fusion (CMSF's SpikingCrossAttention, QK_Block): the image's queries summed over tokens -> attn_lif
(threshold 0.5): a spike mask that gates (ANDs) the text coder's spikes. Its output trains a pair-matching
loss (the paper's soft supervision); retrieval ranks the two embeddings, as CMSF evaluates.
Neurons: spikingjelly LIFNode(tau=2, decay_input, hard reset to 0, detach_reset), CMSF's, single-step: the
exporter calls forward once per step and state lives in the neurons. `spiking=False` builds the ANN of the
same size (ReLU for every LIF), trained by the same train.py.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spikedeploy.io.atomic import atomic_write

from . import data

CHECKPOINT = Path(__file__).resolve().parent / "checkpoint.pt"
ANN_CHECKPOINT = Path(__file__).resolve().parent / "ann_checkpoint.pt"
CHECKPOINT_FORMAT = "spikedeploy-cmsf-v1"

DEFAULT_CONFIG = {
    "num_steps": data.NUM_STEPS,
    "tokens": (data.IMAGE_SIZE // data.PATCH) ** 2,
    "patch_dim": data.PATCH * data.PATCH * 3,
    "text_dim": 384,
    "dim": 64,
    "mlp_ratio": 2,
    "embed_dim": 64,
    "init_gain": 5.0,  # x default Linear init: tau = 2 halves the input, so default drive would barely fire at T = 2
    "spiking": True,
}


def neuron(spiking: bool, threshold: float = 1.0) -> nn.Module:
    if not spiking:
        return nn.ReLU()
    from spikingjelly.activation_based import neuron as sjn

    return sjn.LIFNode(tau=2.0, v_threshold=threshold, detach_reset=True, step_mode="s")


class SpikingLinear(nn.Module):
    """Linear (over the last dim: tokens [B, N, D] or vectors [B, D]) + neuron. No BatchNorm, unlike CMSF:
    folded BN gains differ per channel, and with one weight scale per chip layer the low-gain channels kept
    too few weight bits (emulator R@1 fell from 7.7% to 1.0%; README). train.py instead trains the weights
    on the chip's grid (quantization-aware)."""

    def __init__(self, d_in: int, d_out: int, spiking: bool, threshold: float = 1.0):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.lif = neuron(spiking, threshold)

    def forward(self, x):
        return self.lif(self.fc(x))


class CMSF(nn.Module):
    def __init__(self, cfg: dict | None = None):
        super().__init__()
        self.config = dict(DEFAULT_CONFIG if cfg is None else cfg)
        c = self.config
        s, d, h = c["spiking"], c["dim"], c["dim"] * c["mlp_ratio"]
        self.img_in = SpikingLinear(c["patch_dim"], d, s)
        self.q, self.k, self.v = (SpikingLinear(d, d, s) for _ in range(3))
        self.attn_lif = neuron(s, 0.5)
        self.proj = SpikingLinear(d, d, s)
        self.mlp1, self.mlp2 = SpikingLinear(d, h, s), SpikingLinear(h, d, s)
        self.img_emb = SpikingLinear(d, c["embed_dim"], s)
        self.txt_in = SpikingLinear(c["text_dim"], d, s)
        self.txt_mlp1, self.txt_mlp2 = SpikingLinear(d, h, s), SpikingLinear(h, d, s)
        self.txt_emb = SpikingLinear(d, c["embed_dim"], s)
        self.gate_lif = neuron(s, 0.5)
        self.logit_scale = nn.Parameter(torch.tensor(2.3026))  # host-side head only: exp() = 10 at init
        self.input_shapes = {"regions": (c["tokens"], c["patch_dim"]), "sentence": (c["text_dim"],)}
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(c["init_gain"])
            self.img_emb.fc.weight.mul_(4.0)  # it reads a token mean: 1/16 of a sum

    @property
    def num_steps(self) -> int:
        return int(self.config["num_steps"]) if self.config["spiking"] else 1

    def forward(self, regions, sentence):
        """One time step: regions [B, 16, 48], sentence [B, 384] -> (image embedding spikes [B, E],
        text embedding spikes [B, E], gated text spikes [B, D])."""
        img, txt, mask, t = self.parts(regions, sentence)
        return img, txt, mask * t  # the image's query mask ANDs the text's spikes

    def parts(self, regions, sentence):
        """One step's (image embedding, text embedding, image query mask [B, D], text coder spikes [B, D]);
        train.py scores every image's mask against every text's spikes (the fusion's matching loss)."""
        x = self.img_in(regions)
        q, k, v = self.q(x), self.k(x), self.v(x)
        x = x + self.proj(self.attn_lif(q @ (k.transpose(-2, -1) @ v) * 0.125))  # CMSF's linear-order SSA
        x = x + self.mlp2(self.mlp1(x))
        img = self.img_emb(x.mean(1))
        t = self.txt_in(sentence)
        txt = self.txt_emb(t + self.txt_mlp2(self.txt_mlp1(t)))
        return img, txt, self.gate_lif(q.sum(1)), t

    def run(self, regions, sentence):
        """Direct encoding over num_steps from rest: summed outputs (spike counts for the SNN)."""
        reset(self)
        outs = None
        for _ in range(self.num_steps):
            y = self(regions, sentence)
            outs = y if outs is None else tuple(a + b for a, b in zip(outs, y, strict=True))
        reset(self)
        return outs


def reset(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset") and m is not model and callable(m.reset):
            m.reset()


def build_model(config: dict | None = None) -> CMSF:
    """Entry point (examples.cmsf.model:build_model): an untrained SNN."""
    return CMSF(config)


def save_checkpoint(model: CMSF, path, extra: dict | None = None) -> None:
    ck = {"format": CHECKPOINT_FORMAT, "config": dict(model.config),
          "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}, **(extra or {})}
    with atomic_write(path, "wb") as f:
        torch.save(ck, f)


def load_pretrained(path=None) -> CMSF:
    """The bundled SNN (or the given checkpoint), loaded with weights_only=True, in eval mode."""
    path = Path(path) if path is not None else CHECKPOINT
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint; retrain with examples/cmsf/train.py")
    cfg = dict(ck["config"])
    cfg["tokens"], cfg["patch_dim"] = int(cfg["tokens"]), int(cfg["patch_dim"])
    model = CMSF(cfg)
    model.load_state_dict(ck["state_dict"])
    return model.eval()
