"""Running a lava-dl netx network as lava-dl's own tests run it: an image as the input layer's bias, and the
neurons' state reset every N steps (lava-dl's `io.reset.Reset` / `LIFReset`).

A netx input layer has no synapse: its neurons are driven by their bias (lava-dl's input blocks), so an
image enters as the bias mantissas of the first neuron layer, not as spikes. lava-dl's recordings
(pilotnet_lif, tinynet) were made with every layer l reset before the dynamics of step t (1-based) when
t % N == (offset + l) % N, offset 1 (tests/test_emulator_vs_lavadl.py found it by fitting).
"""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import InputError
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams

INT16 = (-(2**15), 2**15 - 1)  # Lava stores bias_mant as int16 (a larger value would wrap silently)


def neuron_layers(qg: QGraph) -> list[str]:
    g = qg.graph
    return [n for n in g.order()[0] if g.nodes[n].spec.family == "neuron"]


def drive_input_layer(qg: QGraph, bias: np.ndarray, where: str) -> str:
    """Set the first neuron layer's bias mantissas to `bias` (its CHW shape, or Lava's WHC layout as lava-dl
    stores images, transposed; when both read alike, Lava's). Returns a note for the run."""
    g = qg.graph
    g.infer_shapes()
    first = neuron_layers(qg)[0]
    if not isinstance(qg.q.get(first), CubaParams):
        raise InputError(f"{where}: --input-bias sets the bias of a CUBA input layer; the first neuron layer "
                         f"'{first}' ({g.nodes[first].op}) has none; fix: give the input as --input")
    if not any(g.nodes[p].op == "Input" for p in g.predecessors(first)):
        raise InputError(f"{where}: --input-bias drives a netx input layer (neurons fed by an Input without a "
                         f"synapse); the first neuron layer '{first}' reads a synapse; fix: give the image as --input")
    shape = tuple(int(d) for d in g.nodes[first].out_shape)
    b = np.asarray(bias)
    if b.dtype.kind not in "iuf" or (b.dtype.kind == "f" and not np.all(np.trunc(b) == b)):
        raise InputError(f"{where}: bias mantissas must be integers (got {b.dtype}); scale and round them first")
    if b.shape == shape[::-1]:
        b = b.transpose(tuple(range(b.ndim))[::-1])  # Lava's (W, H, C) -> (C, H, W)
    elif b.shape != shape:
        raise InputError(f"{where}: shape {b.shape} fits neither layer '{first}' ({shape}, CHW) nor Lava's layout "
                         f"{shape[::-1]} (WHC); fix: give one image of that layer's shape")
    if b.size and (b.min() < INT16[0] or b.max() > INT16[1]):
        raise InputError(f"{where}: bias mantissas {int(b.min())}..{int(b.max())} exceed Lava's int16 range "
                         f"{INT16[0]}..{INT16[1]}; fix: scale the image down")
    qg.q[first].bias_mant = b.astype(np.int64)
    qg.q[first].bias_onset = 0
    return f"layer '{first}' driven by the bias image {where} (lava-dl's input block)"


def set_resets(qg: QGraph, interval: int, offset: int = 1) -> str:
    """Reset u and v of every neuron layer l before step t (1-based) when t % interval == (offset + l) % interval."""
    if interval < 1:
        raise InputError(f"--reset-interval must be at least 1 step, got {interval}")
    layers = neuron_layers(qg)
    other = [n for n in layers if not isinstance(qg.q.get(n), CubaParams)]
    if other:
        raise InputError(f"--reset-interval resets CUBA neuron layers (Lava LIFReset); layer '{other[0]}' "
                         f"({qg.graph.nodes[other[0]].op}) has no such reset; fix: run without --reset-interval")
    for layer, n in enumerate(layers):
        qg.q[n].reset_interval = int(interval)
        qg.q[n].reset_offset = int(offset + layer) % int(interval)
    return (f"u and v of layer l (0..{len(layers) - 1}) reset every {interval} steps, at step t with "
            f"t % {interval} == ({offset} + l) % {interval}")
