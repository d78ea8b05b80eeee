"""Sanity limits on a simulation's size, checked before any array is allocated.

A typo such as `--steps 99999999999999` would otherwise ask numpy for petabytes (a MemoryError deep inside
a backend, or the OOM killer after minutes of swapping); `--batch 0` or a negative count has no meaning.
"""

from __future__ import annotations

import math

import numpy as np

from spikedeploy.errors import InputError

MAX_STEPS = 10_000_000  # far beyond any run we know of (lava-dl's examples use up to a few thousand steps)
MAX_BATCH = 1_000_000
# random inputs and recorded outputs are float32 [T, B, ...]; 8 GiB is more than a laptop can hold
MAX_ARRAY_BYTES = 8 * 2**30


def check_run_size(graph, *, steps: int | None, batch: int | None, density: float | None = None,
                   random: bool = True) -> None:
    """Refuse steps/batch/density values that are meaningless or whose arrays would not fit in memory."""
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise InputError(f"--steps {steps}: must be between 1 and {MAX_STEPS:,} time steps")
    if batch is not None and not 1 <= batch <= MAX_BATCH:
        raise InputError(f"--batch {batch}: must be between 1 and {MAX_BATCH:,} samples")
    if density is not None and not 0.0 <= density <= 1.0:
        raise InputError(f"--density {density}: a spike probability must lie in [0, 1]")
    if not random:
        return
    graph.infer_shapes()
    t = 100 if steps is None else steps
    b = 8 if batch is None else batch
    for name in list(graph.inputs) + list(graph.outputs):
        shape = graph.nodes[name].out_shape or ()
        size = t * b * math.prod(int(x) for x in shape) * np.dtype(np.float32).itemsize
        if size > MAX_ARRAY_BYTES:
            raise InputError(f"--steps {t} × --batch {b} × {name} {list(shape)}: the {name} array would take "
                             f"{size / 2**30:,.1f} GiB (limit {MAX_ARRAY_BYTES / 2**30:.0f} GiB); use fewer steps or samples")
