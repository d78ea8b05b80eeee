"""Checking what a simulation is fed: one array per Input node, time-major `[T, B, *shape]`.

Every backend (float, emulator, Lava) takes its inputs through `time_major_inputs`, so a mistake gets the
same message whichever backend the user picked.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from spikedeploy.checks.sim_inputs import check_input_values
from spikedeploy.errors import InputError


def time_major_inputs(graph, inputs: Mapping) -> tuple[dict[str, np.ndarray], int, int]:
    """Arrays reshaped to `[T, B, *shape]` per Input node, the longest T, and the common batch size.

    Inputs may differ in T (shorter ones are zero-padded by the backends) but not in B. Torch tensors are
    accepted. Only the trailing size must match the node's shape (a flat `[T, B, C*H*W]` is accepted).
    """
    names = graph.inputs
    missing = [n for n in names if n not in inputs]
    extra = [k for k in inputs if k not in names]
    if missing or extra:
        raise InputError(f"inputs do not match the graph: missing {missing or '-'}, unknown {extra or '-'}; "
                         f"the graph's inputs are {names} (CLI: --input NAME=X.npy for each)")
    feeds, Ts, Bs = {}, set(), set()
    for n in names:
        a = inputs[n]
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        check_input_values(n, a)
        shape = graph.nodes[n].out_shape
        if a.ndim < 2 or int(np.prod(a.shape[2:])) != int(np.prod(shape)):
            raise InputError(f"input '{n}': expected an array [T, B, {', '.join(map(str, shape))}], "
                             f"got shape {list(a.shape)}")
        feeds[n] = a.reshape(a.shape[0], a.shape[1], *shape)
        Ts.add(a.shape[0])
        Bs.add(a.shape[1])
    if len(Bs) > 1:
        raise InputError(f"inputs disagree on the batch size: {sorted(Bs)}")
    return feeds, max(Ts, default=0), Bs.pop() if Bs else 0
