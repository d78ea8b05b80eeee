"""One small model per multimodal SNN family, written the way the papers' code is written (token tensors
[B, N, D], `flatten(2).transpose(1, 2)`, Linear over tokens with BatchNorm1d through a transpose, `@`
attention, residual adds of spike branches, spike products, MaxPool on spikes, concatenation), with
single-step forwards. `../shared/notes/seed-models.md` describes the originals. Used as
`package.module:factory` entry points by the CLI tests (tests/test_families.py).
"""

from __future__ import annotations

import snntorch as snn
import torch
from torch import nn

D, N_IMG = 16, 16  # channels (= token width) and tokens of a 8x8 image after one 2x2 pool


def leaky(**kw):
    """snnTorch's defaults (reset by subtraction, reset_delay=True), as people train them."""
    return snn.Leaky(beta=0.9, **kw)


def hard_leaky(**kw):
    return snn.Leaky(beta=0.5, reset_mechanism="zero", reset_delay=False, **kw)


def sj_lif(threshold=1.0):
    """spikingjelly's LIF as CMSF builds it: tau = 2, decay_input, hard reset to 0, single-step."""
    from spikingjelly.activation_based import neuron

    return neuron.LIFNode(tau=2.0, v_threshold=threshold, detach_reset=True, step_mode="s")


def spk(out):
    """Spikes of a neuron call: snnTorch returns (spikes, membrane), spikingjelly the spikes."""
    return out[0] if isinstance(out, tuple) else out


def _bn_stats(model: nn.Module, seed: int) -> nn.Module:
    """Eval-mode BatchNorms with non-trivial statistics, so that folding them is tested."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 0.2)
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            m.weight.data.copy_(1.0 + torch.rand(n, generator=gen))
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2)
    return model.eval()


class TokenLinear(nn.Module):
    """Linear over the last dim of [B, N, D] tokens, BatchNorm1d over channels through a transpose, a
    neuron: the block Spikformer, CMSF and S-CMRL repeat."""

    def __init__(self, d_in, d_out, neuron):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out)
        self.lif = neuron()

    def forward(self, x):
        y = self.bn(self.fc(x).transpose(1, 2)).transpose(1, 2)
        return spk(self.lif(y))


class Tokenizer(nn.Module):
    """SPS: Conv3x3 + BN + spiking neuron + MaxPool on spikes, then tokens [B, N, D]."""

    def __init__(self, c_in, neuron):
        super().__init__()
        self.conv = nn.Conv2d(c_in, D, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(D)
        self.lif = neuron()
        self.pool = nn.MaxPool2d(2)

    def forward(self, img):
        s = spk(self.lif(self.bn(self.conv(img))))
        return self.pool(s).flatten(2).transpose(1, 2)


# ---- SpikeCLIP-style: Spikformer image encoder + spiking MLP text encoder --------------------------------
class SpikformerCLIP(nn.Module):
    def __init__(self, vocab=12, words=3, dim_out=8):
        super().__init__()
        self.tok = Tokenizer(1, leaky)
        self.q, self.k, self.v = (TokenLinear(D, D, leaky) for _ in range(3))
        self.attn_lif = leaky(threshold=0.5)
        self.proj = TokenLinear(D, D, leaky)
        self.mlp = TokenLinear(D, D, leaky)
        self.head = nn.Linear(D, dim_out)
        self.head_lif = leaky()
        self.txt1 = nn.Linear(vocab * words, 32)
        self.txt_lif1 = leaky()
        self.txt2 = nn.Linear(32, dim_out)
        self.txt_lif2 = leaky()
        self.input_shapes = {"image": (1, 8, 8), "text": (vocab * words,)}

    def forward(self, image, text):
        x = self.tok(image)
        q, k, v = self.q(x), self.k(x), self.v(x)
        attn = (q @ k.transpose(-2, -1)) @ v * 0.125
        x = x + self.proj(self.attn_lif(attn)[0])  # residual of two spike branches
        x = x + self.mlp(x)
        img = self.head_lif(self.head(x.mean(1)))[0]  # token mean, projection
        txt = self.txt_lif2(self.txt2(self.txt_lif1(self.txt1(text))[0]))[0]
        return img, txt


def spikformer_clip():
    torch.manual_seed(10)
    return _bn_stats(SpikformerCLIP(), 10)


# ---- S-CMRL-style: audio and visual SPS, cross-modal attention, residual, concatenation ------------------
class CrossModalAV(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.audio = Tokenizer(1, hard_leaky)
        self.visual = Tokenizer(1, hard_leaky)
        self.q = TokenLinear(D, D, hard_leaky)  # from the audio stream
        self.k = TokenLinear(D, D, hard_leaky)  # from the visual stream
        self.v = TokenLinear(D, D, hard_leaky)
        self.attn_lif = hard_leaky(threshold=0.5)
        self.proj = TokenLinear(D, D, hard_leaky)
        self.head = nn.Linear(2 * D, classes)
        self.head_lif = hard_leaky()
        self.input_shapes = {"audio": (1, 8, 8), "visual": (1, 8, 8)}

    def forward(self, audio, visual):
        a, v = self.audio(audio), self.visual(visual)
        attn = (self.q(a) @ self.k(v).transpose(-2, -1)) @ self.v(v) * 0.25
        fused = a + 1.5 * self.proj(self.attn_lif(attn)[0])  # cross-modal residual, alpha = 1.5
        feat = torch.cat([fused.mean(1), v.mean(1)], dim=1)
        return self.head_lif(self.head(feat))[0]


def scmrl_av():
    torch.manual_seed(11)
    m = CrossModalAV()
    with torch.no_grad():
        m.head.weight.mul_(6.0)  # a token mean is small: a stronger head spikes within a few steps
    return _bn_stats(m, 11)


# ---- CMSF-style: T = 2, linear-order attention q (k^T v), spike gating across modalities ----------------
class CMSFRetrieval(nn.Module):
    """spikingjelly neurons, T = 2. Region features and sentence features (from host-side encoders) into
    spiking encoders; spiking cross-attention, the sentence querying the regions in CMSF's linear order
    q (kᵀ v); the regions' key mask gates the sentence's spikes (spike AND)."""

    def __init__(self, feat=12, regions=4, dim=D):
        super().__init__()
        self.img_in = TokenLinear(feat, dim, sj_lif)
        self.txt_in = nn.Linear(feat, dim)
        self.txt_lif = sj_lif()
        self.q = TokenLinear(dim, dim, sj_lif)  # from the sentence
        self.k, self.v = (TokenLinear(dim, dim, sj_lif) for _ in range(2))  # from the regions
        self.attn_lif = sj_lif(threshold=0.5)
        self.out = TokenLinear(dim, dim, sj_lif)
        self.gate_lif = sj_lif(threshold=0.5)
        self.emb = nn.Linear(dim, dim)
        self.emb_lif = sj_lif()
        self.input_shapes = {"regions": (regions, feat), "sentence": (feat,)}

    def forward(self, regions, sentence):
        x = self.img_in(regions)  # [B, R, D] spikes
        t = self.txt_lif(self.txt_in(sentence))  # [B, D] spikes
        q = self.q(t.unsqueeze(1))  # [B, 1, D]: one text token
        k, v = self.k(x), self.v(x)
        a = self.attn_lif(q @ (k.transpose(-2, -1) @ v) * 0.125)  # cross-attention, text -> regions
        cross = self.out(a).squeeze(1)  # [B, D]
        mask = self.gate_lif(k.sum(1))  # the regions' keys summed: a spike mask
        fused = mask * t  # gates the text's spikes (spike AND across modalities)
        return self.emb_lif(self.emb(x.mean(1))), fused + cross  # image embedding; fused text embedding


def cmsf_retrieval():
    torch.manual_seed(12)
    m = CMSFRetrieval()
    with torch.no_grad():  # tau = 2 with decay_input halves every input: stronger weights make T = 2 spike
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.mul_(4.0)
    return _bn_stats(m, 12)


# ---- ASH-style hybrid: an ANN front end on the host, a spiking semantic encoder on chip -----------------
class HybridASH(nn.Module):
    """Image: Conv + ReLU + MaxPool (an ANN visual encoder, float, on the host); text: spikes. Both reach a
    spiking encoder on chip; the image features enter as graded payloads with a calibrated scale."""

    def __init__(self, vocab=12, dim=8):
        super().__init__()
        self.visual = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.img = nn.Linear(4 * 4 * 4, 16)
        self.img_lif = hard_leaky()
        self.txt = nn.Linear(vocab, 16)
        self.txt_lif = hard_leaky()
        self.img_out = nn.Linear(16, dim)
        self.img_out_lif = hard_leaky()
        self.txt_out = nn.Linear(16, dim)
        self.txt_out_lif = hard_leaky()
        self.input_shapes = {"image": (1, 8, 8), "text": (vocab,)}

    def forward(self, image, text):
        f = self.visual(image).flatten(1)
        i = self.img_out_lif(self.img_out(self.img_lif(self.img(f))[0]))[0]
        t = self.txt_out_lif(self.txt_out(self.txt_lif(self.txt(text))[0]))[0]
        return i, t


def hybrid_ash():
    torch.manual_seed(13)
    m = HybridASH()
    with torch.no_grad():
        for mod in (m.img, m.txt, m.img_out, m.txt_out):
            mod.weight.mul_(4.0)
    return m.eval()


# ---- spike-driven self-attention (masks and column sums): all on chip -----------------------------------
class SpikeDrivenAttention(nn.Module):
    """Spike-Driven Transformer's SDSA: q ⊙ SN(Σ_tokens k ⊙ v), no product of two dynamic matrices."""

    def __init__(self):
        super().__init__()
        self.tok = Tokenizer(1, hard_leaky)
        self.q, self.k, self.v = (TokenLinear(D, D, hard_leaky) for _ in range(3))
        self.kv_lif = hard_leaky(threshold=0.5)
        self.proj = TokenLinear(D, D, hard_leaky)
        self.input_shapes = {"image": (1, 8, 8)}

    def forward(self, image):
        x = self.tok(image)
        q, k, v = self.q(x), self.k(x), self.v(x)
        mask = self.kv_lif((k * v).sum(1, keepdim=True))[0]  # [B, 1, D] column sums of k AND v, a spike mask
        return self.proj(q * mask)  # the mask gates every token's queries


def spike_driven_attention():
    torch.manual_seed(14)
    m = SpikeDrivenAttention()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.mul_(3.0)
    return _bn_stats(m, 14)
