"""Quantization-aware fine-tuning onto the weights Loihi 2 realizes, as lava-dl trains its networks.

The spiking encoders are chaotic enough that rounding each weight to Loihi 2's 8-bit mantissa (mixed-sign
weights: 7 bits and a sign, relative error ~1e-2) flips a third of the deep layers' spikes (spike Dice 0.67)
and costs 6 points of zero-shot accuracy, although the float model with those rounded weights equals the chip
to Dice > 0.95. So the last training phase runs the forward pass on the chip's weights (straight-through
gradients), and the checkpoint stores them: the float model is then the one the chip runs.

The grid comes from spikedeploy itself: export the encoder, quantize it exactly as the pipeline does, and read
back where each synapse's largest weight lands, its weight exponent and sign mode (`Grid`). Thresholds are snapped to vth / λ.
`check_on_grid` reports how exactly a quantized graph holds its float weights and thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from spikedeploy.export import export_model
from spikedeploy.quantize.quantizer import _grid, quantize
from spikedeploy.simulate.float_ref import synapse_depth
from spikedeploy.targets.spec import get_target

TARGET = "loihi2"


@dataclass(frozen=True)
class Grid:
    """How the quantizer maps a synapse's weights w (quantize.Quantizer.layer_q): the largest |w| to the
    mantissa `top` · 2^e, every weight to step · rint(a / (step · 2^e)) · 2^e within [lo, hi] · 2^e."""
    top: int
    e: int
    step: int
    lo: int
    hi: int

    def snap(self, w: torch.Tensor) -> torch.Tensor:
        mx = w.detach().abs().max()
        unit = self.step * 2.0**self.e
        a = w * (self.top * 2.0**self.e) / mx
        q = torch.clamp(torch.round(a / unit) * unit, self.lo * 2.0**self.e, self.hi * 2.0**self.e)
        return q * mx / (self.top * 2.0**self.e)


def frames(x: np.ndarray, T: int, pad: int) -> np.ndarray:
    """Direct encoding: the same frame for T steps, then `pad` zero steps so the delayed layers finish."""
    out = np.zeros((T + pad, *x.shape), np.float32)
    out[:T] = x[None].astype(np.float32)
    return out


def calibration_images(seed: int = 0, n: int = 64) -> np.ndarray:
    """The training images whose activity sets the percentile ranges, in fine-tuning and in the pipeline."""
    from examples.spikeclip import data

    train = data.train_split(seed)
    return train.images[np.random.default_rng(seed).choice(len(train.labels), n, replace=False)]


def export_quantize(module: nn.Module, name: str, x: np.ndarray, calib: np.ndarray, T: int, *, image: bool,
                    out_dir=None):
    """Export one encoder and quantize it for Loihi 2 with percentile ranges from `calib` (the pipeline's and
    fine-tuning's one way to do it). Returns (export result, chip graph, QGraph, output depth, calibration)."""
    from examples.retrieval.pipeline import PIXEL_SCALE, integer_image_input

    scale = PIXEL_SCALE if image else 1.0
    sample = {name: torch.as_tensor(x[:8].astype(np.float32) / scale)[None]}
    kw = {} if out_dir is None else {"out_path": out_dir / f"{name}.nir", "onnx_path": out_dir / f"{name}.onnx"}
    exp = export_model(module, example_inputs=sample, steps=T, dt=1e-3, **kw)
    g = integer_image_input(exp.graph, name) if image else exp.graph
    (out,) = g.outputs
    depth = synapse_depth(g)[out]
    cal = {name: frames(calib, T, depth)}
    qg = quantize(g, TARGET, method="percentile", calibration=cal)
    return exp, g, qg, depth, cal


def _module_of(node: str, modules: dict[str, nn.Module]) -> str | None:
    """The torch module a synapse node was exported from: its own name, or a copy of it ('head.src1')."""
    base = node.split(".src")[0]
    return base if base in modules and hasattr(modules[base], "weight") else None


def chip_grids(module: nn.Module, qg) -> tuple[dict[str, Grid], dict[str, float]]:
    """Per synapse module its chip grid, and per neuron module the threshold the chip realizes (vth / λ).
    The grid is relative to the module's own largest weight, so the largest weight keeps λ where it is."""
    fmt = get_target(TARGET).numeric
    modules = dict(module.named_modules())
    grids: dict[str, Grid] = {}
    for lay in qg.meta["layers"].values():
        for syn, rep in lay["weights"].items():
            mod = _module_of(syn, modules)
            if mod is None or mod in grids:
                continue
            step, m = _grid(fmt, int(qg.q[syn].num_weight_bits), rep["sign_mode"])
            lo = -(2**fmt.weight_bits) if rep["sign_mode"] == "mixed" else (-m if rep["sign_mode"] == "inh" else 0)
            grids[mod] = Grid(top=int(rep["max_mantissa"]), e=int(rep["weight_exp"]), step=step, lo=lo,
                              hi=m if rep["sign_mode"] != "inh" else 0)
    thresholds = {n: float(np.max(qg.q[n].vth)) / qg.scale[n] for n in qg.meta["layers"]
                  if n in modules and hasattr(modules[n], "v_threshold")}
    return grids, thresholds


class _OnGrid(nn.Module):
    """weight -> its nearest grid value in the forward pass, identity in the backward pass (straight-through)."""

    def __init__(self, grid: Grid):
        super().__init__()
        self.grid = grid

    def forward(self, w):
        return w + (self.grid.snap(w) - w).detach()


def attach(module: nn.Module, grids: dict[str, Grid]) -> None:
    """Every listed module computes with its chip weights from now on (until `detach_snapped`)."""
    modules = dict(module.named_modules())
    for name, grid in grids.items():
        parametrize.register_parametrization(modules[name], "weight", _OnGrid(grid))


def set_thresholds(module: nn.Module, thresholds: dict[str, float]) -> None:
    modules = dict(module.named_modules())
    for name, th in thresholds.items():
        modules[name].v_threshold = th


def detach_snapped(module: nn.Module) -> None:
    """Store the chip weights as the module's weights (ends `attach`)."""
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def check_on_grid(qg) -> dict:
    """How exactly a QGraph holds its float graph: the largest relative weight error of any synapse, and
    whether every neuron's threshold λ·θ is an integer."""
    worst = max((r["rel_rms_error"] for lay in qg.meta["layers"].values() for r in lay["weights"].values()),
                default=0.0)
    th_exact = all(abs(qg.scale[n] * float(np.ravel(qg.graph.nodes[n].params["v_threshold"])[0])
                       - float(np.max(qg.q[n].vth))) < 1e-6
                   for n in qg.meta["layers"] if "v_threshold" in qg.graph.nodes[n].params)
    return {"weight_rel_rms_error_max": float(worst), "thresholds_exact": bool(th_exact)}
