"""Neuron and synapse counts computed straight from raw HDF5 datasets, with h5py and explicit loops.

Deliberately independent of spikedeploy (no Graph, no ops.py): the tests compare these with Graph.stats().
"""

from __future__ import annotations

import h5py
import numpy as np


def _pair(v) -> tuple[int, int]:
    a = np.asarray(v).astype(int).ravel()
    return (int(a[0]), int(a[0])) if a.size == 1 else (int(a[0]), int(a[1]))


def conv_taps(in_hw, out_hw, kernel, stride, padding, dilation) -> int:
    """Number of (output position, kernel tap) pairs whose tap lands inside the unpadded input."""
    (ih, iw), (oh, ow) = in_hw, out_hw
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n = 0
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                iy = oy * sh - ph + ky * dh
                if not 0 <= iy < ih:
                    continue
                for kx in range(kw):
                    ix = ox * sw - pw + kx * dw
                    if 0 <= ix < iw:
                        n += 1
    return n


def out_size(n, k, s, p, d=1) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------------------------- netx
def netx_counts(path, num_layers=None) -> dict:
    """{'neurons', 'synapses'} of a lava-dl .net file: neurons = product of each neuron layer's shape;
    synapses = dense weight entries (+ recurrent) and conv (output channel, input channel/group, valid tap)."""
    neurons = synapses = 0
    with h5py.File(path, "r") as f:
        layers = f["layer"]
        n = len(layers) if num_layers is None else num_layers
        prev_shape = None  # (C, H, W) or (N,)
        for i in range(n):
            lc = layers[str(i)]
            kind = lc["type"][()][0].decode() if lc["type"].shape else lc["type"][()].decode()
            shape = tuple(int(x) for x in np.asarray(lc["shape"][()]).ravel()) if "shape" in lc else None
            if kind == "input":
                prev_shape = shape
                if "neuron" in lc:
                    neurons += int(np.prod(shape))
            elif kind in ("dense", "dense_rec"):
                w = lc["weight"][()]
                synapses += int(w.size)
                if kind == "dense_rec":
                    synapses += int(lc["weight_rec"][()].size)
                neurons += int(np.prod(shape))
                prev_shape = (int(np.prod(shape)),)
            elif kind == "conv":
                w = lc["weight"][()]
                co, cig, kh, kw = w.shape[:4]
                c, h, wd = prev_shape
                st, pd, dl = (_pair(lc[k][()]) for k in ("stride", "padding", "dilation"))
                oh, ow = out_size(h, kh, st[0], pd[0], dl[0]), out_size(wd, kw, st[1], pd[1], dl[1])
                assert (co, oh, ow) == shape, (i, (co, oh, ow), shape)
                synapses += co * cig * conv_taps((h, wd), (oh, ow), (kh, kw), st, pd, dl)
                neurons += int(np.prod(shape))
                prev_shape = shape
            elif kind == "flatten":
                prev_shape = (int(np.prod(prev_shape)),)
            else:
                raise ValueError(f"layer {i}: {kind}")
    return {"neurons": neurons, "synapses": synapses}


# ---------------------------------------------------------------------------------------------- NIR
_NEURONS = {"LIF": "v_threshold", "IF": "v_threshold", "CubaLIF": "v_threshold", "LI": "tau", "CubaLI": "tau_mem",
            "I": "r", "Threshold": "threshold"}


def _walk(group, prefix=""):
    for name, g in group["nodes"].items():
        t = g["type"][()].decode()
        if t == "NIRGraph":
            yield from _walk(g, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", t, g


def nir_counts(path) -> dict:
    """{'neurons', 'synapses'} of a .nir file from raw datasets: neurons from neuron parameter shapes;
    Affine/Linear weight entries; Conv2d and SumPool2d taps over output positions (pool input shape taken
    from the neuron node feeding it)."""
    with h5py.File(path, "r") as f:
        nodes = {name: (t, g) for name, t, g in _walk(f["node"])}
        edges = [(a.decode(), b.decode()) for a, b in f["node"]["edges"][()]]
        neurons = synapses = 0
        for name, (t, g) in nodes.items():
            if t in _NEURONS:
                neurons += int(np.prod(g[_NEURONS[t]].shape))
            elif t in ("Affine", "Linear"):
                synapses += int(g["weight"].size)
            elif t == "Conv2d":
                w = g["weight"]
                co, cig, kh, kw = w.shape
                h, wd = (int(x) for x in g["input_shape"][()])
                st, pd, dl = (_pair(g[k][()]) for k in ("stride", "padding", "dilation"))
                oh, ow = out_size(h, kh, st[0], pd[0], dl[0]), out_size(wd, kw, st[1], pd[1], dl[1])
                synapses += co * cig * conv_taps((h, wd), (oh, ow), (kh, kw), st, pd, dl)
            elif t in ("SumPool2d", "AvgPool2d"):
                pred = [a for a, b in edges if b == name]
                c, h, wd = nodes[pred[0]][1]["r"].shape
                k, st, pd = (_pair(g[x][()]) for x in ("kernel_size", "stride", "padding"))
                oh, ow = out_size(h, k[0], st[0], pd[0]), out_size(wd, k[1], st[1], pd[1])
                synapses += c * conv_taps((h, wd), (oh, ow), k, st, pd, (1, 1))
            elif t in ("Scale", "Delay"):
                synapses += int(np.prod(g[t.lower()].shape))
    return {"neurons": neurons, "synapses": synapses}
