"""Can a LIF / IF layer reach its threshold at the graph's dt? A warning where it cannot.

IF integrates v += dt·r·x, so a model trained in steps (Sinabs' IAF: r = 1, one unit per step) and run at
dt = 1e-3 needs a thousand times the input to spike. LIF's steady state does not depend on dt, but the
time to reach it does (k = dt/tau per step). Both are checked against the strongest possible drive: every
input of the layer at 1 in every step (binary spikes; graded inputs can be larger, so this can miss a
case but never warns wrongly about spiking inputs), D = Σ max(w, 0) + max(b, 0) per neuron.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from spikedeploy.errors import DynamicsWarning
from spikedeploy.graph.ir import Graph
from spikedeploy.graph.ops import WEIGHTED

# 10x the longest run of the seed models (T <= 100 steps, ../shared/notes/seed-models.md)
MAX_STEPS = 1000


def _drive(g: Graph, name: str, n: int) -> np.ndarray | None:
    """Per-neuron strongest one-step input, or None where a predecessor is not a Linear/Affine/Conv."""
    d = np.zeros(n)
    for p in g.predecessors(name):
        node = g.nodes[p]
        w = node.params.get("weight")
        if node.op not in WEIGHTED or w is None:
            return None
        w = np.asarray(w, dtype=np.float64)
        pos = np.clip(w, 0, None).reshape(w.shape[0], -1).sum(axis=1)
        b = node.params.get("bias") if node.op != "Linear" else None
        if b is not None:
            pos = pos + np.clip(np.asarray(b, dtype=np.float64).reshape(-1), 0, None)
        if pos.size != n:
            if n % pos.size:
                return None
            pos = np.repeat(pos, n // pos.size)  # conv: per output channel, over its positions
        d += pos
    return d


def unreachable(g: Graph) -> list[str]:
    """One message per IF/LIF node none of whose neurons can reach threshold within MAX_STEPS steps."""
    msgs = []
    if g.dt is None:
        return msgs
    dt = float(g.dt)
    for name, node in g.nodes.items():
        if node.op not in ("IF", "LIF") or node.placement != "chip" or node.out_shape is None:
            continue
        n = int(np.prod(node.out_shape)) if node.out_shape else 1
        drive = _drive(g, name, n)
        if drive is None:
            continue
        p = {k: np.broadcast_to(np.asarray(node.params.get(k, 0.0), dtype=np.float64).reshape(-1)
                                if np.size(node.params.get(k, 0.0)) in (1, n) else np.zeros(1), (n,))
             for k in ("r", "v_threshold", "v_reset", "tau", "v_leak")}
        gap = p["v_threshold"] - p["v_reset"]
        if not np.all(np.isfinite(p["r"])) or np.any(gap <= 0):
            continue
        if node.op == "IF":
            inc = dt * p["r"] * drive
            with np.errstate(divide="ignore"):
                steps = np.where(inc > 0, gap / np.where(inc > 0, inc, 1), np.inf)
            need = gap / np.where(p["r"] * drive > 0, p["r"] * drive, np.nan)  # dt of one full-drive step
        else:
            v_inf = p["v_leak"] + p["r"] * drive - p["v_reset"]
            if np.all(v_inf <= gap):
                continue  # never spikes at any dt: not a dt problem
            k = np.clip(dt / p["tau"], 0, 1)
            ok = (v_inf > gap) & (k > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                steps = np.where(ok, np.log1p(-gap / np.where(ok, v_inf, 1)) / np.log1p(-np.where(ok & (k < 1), k, 0.5)),
                                 np.inf)
                steps = np.where(ok & (k >= 1), 1.0, steps)
            need = np.where(ok, p["tau"] * gap / np.where(ok, v_inf, 1), np.nan)  # k that gets there in one step
        best = float(np.min(steps))
        if best > MAX_STEPS and np.any(np.isfinite(need)):
            dt_need = float(np.nanmax(need))
            msgs.append(f"node '{name}' ({node.op}): at dt = {dt:g} s no neuron can reach its threshold within "
                        f"{MAX_STEPS} steps even with every input active every step "
                        f"({'never' if not math.isfinite(best) else f'{best:.0f} steps'}); it would spike within one "
                        f"step at dt = {dt_need:.3g} s (models trained in steps, e.g. Sinabs, use dt = 1 with r = 1)")
    return msgs


def warn_unreachable(g: Graph) -> list[str]:
    msgs = unreachable(g)
    for m in msgs:
        warnings.warn(m, DynamicsWarning, stacklevel=3)
    return msgs
