"""Run: what a simulation backend produced.

Arrays are time-major. `outputs[name]` is `[T, B, ...]` for each Output node; `counts[node]` is the
number of spikes per time step per sample, `[T, B]`, for every spiking node (and Input nodes);
`traces[node]` optionally holds full state (`v`, `u`, `s`) as `[T, B, ...]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Run:
    backend: str
    steps: int
    batch: int
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def spikes_per_node(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.counts.items()}
