"""Independent check of a Placement: recomputes connectivity and per-core use from the Graph alone.

It does not import spikedeploy.partition.placer or partition.resources. Connectivity comes from a different method:
dense weights by their nonzeros, convolution and pooling taps by torch's `unfold` applied to an image of
source indices, chains by sparse products. The memory model is re-implemented from its documentation
(spikedeploy/partition/resources.py docstring). Checks: every chip neuron placed exactly once, no core over a limit,
the placement's reported per-core use equals the recomputation, groups of one layer never share a core.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from spikedeploy.graph.qparams import SynapseParams

NEURON_OPS = {"LIF", "IF", "LI", "CubaLIF", "CubaLI", "I", "Threshold"}
SYNAPSE_OPS = {"Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Scale", "Delay"}
SHAPE_OPS = {"Flatten"}
RES = ("neurons", "synapse_memory_bits", "input_axons", "output_axons")


def _tup(v, n):
    a = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return tuple(int(a[0]) for _ in range(n)) if a.size == 1 else tuple(int(x) for x in a[:n])


def _weight_bits(q, default: int) -> int:
    """The synapse's stored weight width (num_weight_bits), else the target's."""
    if not isinstance(q, SynapseParams) or q.num_weight_bits is None:
        return default
    return int(q.num_weight_bits)


def _node_matrix(node):
    """(structural csr out x in, kind, kernel info) of one synapse/shape node."""
    n_in, n_out = int(np.prod(node.in_shape)), int(np.prod(node.out_shape))
    if node.op in SHAPE_OPS or node.op in ("Scale", "Delay"):
        return sp.identity(n_out, format="csr"), "one_to_one", None
    if node.op in ("Affine", "Linear"):
        return sp.csr_matrix((np.asarray(node.params["weight"]) != 0).astype(np.float64)), "dense", None
    # conv / pool through unfold on an image of (source index + 1)
    ins = tuple(node.in_shape)
    if node.op in ("Conv1d", "Conv2d"):
        w = np.asarray(node.params["weight"])
        nd = w.ndim - 2
        k = tuple(w.shape[2:])
        st, pd, dl = (_tup(node.params.get(x, dv), nd) for x, dv in (("stride", 1), ("padding", 0), ("dilation", 1)))
        groups = int(node.params.get("groups", 1))
        cout = w.shape[0]
    else:
        nd = 2
        k = _tup(node.params["kernel_size"], 2)
        stv = node.params.get("stride")
        st = _tup(stv if stv is not None else k, 2)
        pd = _tup(node.params.get("padding", 0), 2)
        dl = (1, 1)
        groups = ins[0]
        cout = ins[0]
    if nd == 1:
        ins = (ins[0], 1, ins[1])
        k, st, pd, dl = (1, *k), (1, *st), (0, *pd), (1, *dl)
    cin = ins[0]
    img = torch.arange(1, n_in + 1, dtype=torch.float64).reshape(1, *ins)
    cols = F.unfold(img, kernel_size=k, dilation=dl, padding=pd, stride=st)[0]  # (cin*kh*kw, L)
    L = cols.shape[1]
    cols = cols.reshape(cin, k[0] * k[1], L).numpy().astype(np.int64)
    cin_g, cout_g = cin // groups, cout // groups
    rows_l, cols_l = [], []
    for co in range(cout):
        g = co // cout_g
        src = cols[g * cin_g : (g + 1) * cin_g].reshape(-1, L)  # taps x L
        pos = np.broadcast_to(np.arange(L), src.shape)
        ok = src > 0
        rows_l.append(co * L + pos[ok])
        cols_l.append(src[ok] - 1)
    r, c = np.concatenate(rows_l), np.concatenate(cols_l)
    m = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(n_out, n_in))
    return m, "conv", {"cout": cout, "plane": L, "kernel": cin_g * k[0] * k[1]}


def _layers(graph):
    succ = {n: [] for n in graph.nodes}
    pred = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
        pred[b].append(a)
    layers = [n for n, v in graph.nodes.items() if v.placement == "chip" and v.op in NEURON_OPS]
    for n, v in graph.nodes.items():
        if v.placement == "chip" and v.op in SYNAPSE_OPS:
            if not any(graph.nodes[s].placement == "chip" and graph.nodes[s].op in SYNAPSE_OPS | SHAPE_OPS | NEURON_OPS
                       for s in succ[n]):
                layers.append(n)
    return layers, pred


def _paths(graph, pred, layer, layer_set):
    """(source, [nodes source-side first]) for every path into `layer`."""
    v = graph.nodes[layer]
    start = [(p, [layer] if v.op in SYNAPSE_OPS else []) for p in pred[layer]]
    out = []
    while start:
        n, chain = start.pop()
        nv = graph.nodes[n]
        if nv.op == "Input" or nv.placement == "host" or nv.op in NEURON_OPS:
            out.append((n, chain))
        else:
            start.extend((p, [n, *chain]) for p in pred[n])
    return out


def _order_perm(shape, order):
    """Canonical index of the k-th neuron in placement order: "chw" (C order), "hwc" (channel last) or
    "tiles:th,tw" (channel last, positions visited tile by tile, row-major inside each tile)."""
    n = int(np.prod(shape)) if shape else 1
    if order == "chw":
        return np.arange(n)
    if order.startswith("tiles:"):
        th, tw = (int(x) for x in order.split(":")[1].split(","))
        c, h, w = shape
        pos = [y * w + x for ty in range(0, h, th) for tx in range(0, w, tw)
               for y in range(ty, min(h, ty + th)) for x in range(tx, min(w, tx + tw))]
        return np.array([p + ch * h * w for p in pos for ch in range(c)], np.int64)
    assert order == "hwc", order
    return np.moveaxis(np.arange(n).reshape(shape), 0, -1).ravel()


def check_placement(graph, placement, target, *, qgraph=None) -> dict:
    """Raise AssertionError on any inconsistency; return the recomputed per-core use."""
    lim = {"neurons": target.core.neurons, "synapse_memory_bits": target.core.synapse_memory_bits,
           "input_axons": target.core.input_axons, "output_axons": target.core.output_axons}
    sharing = bool(getattr(target.core, "conv_weight_sharing", True))
    idx_bits = max(1, math.ceil(math.log2(max(2, target.core.neurons))))
    layers, pred = _layers(graph)
    assert sorted(layers) == sorted(placement.layers), (sorted(layers), sorted(placement.layers))
    n_cores = placement.cores_used
    use = {r: np.zeros(n_cores, np.int64) for r in RES}
    syn = np.zeros(n_cores, np.int64)
    # where every chip neuron lives (canonical index -> core)
    core_of: dict[str, np.ndarray] = {}
    for lname in layers:
        node = graph.nodes[lname]
        n = int(np.prod(node.out_shape))
        info = placement.layers[lname]
        perm = _order_perm(tuple(node.out_shape), info["order"])
        where = np.full(n, -1, np.int64)
        seen_cores = set()
        for core, a, b in placement.groups[lname]:
            assert 0 <= a < b <= n, f"{lname}: bad range {a}:{b} of {n}"
            idx = perm[a:b]
            assert np.all(where[idx] == -1), f"{lname}: neurons placed twice"
            where[idx] = core
            assert core not in seen_cores, f"{lname}: two groups on core {core}"
            seen_cores.add(core)
            use["neurons"][core] += b - a
        assert np.all(where >= 0), f"{lname}: {int((where < 0).sum())} neurons not placed"
        core_of[lname] = where
    layer_set = set(layers)
    for lname in layers:
        node = graph.nodes[lname]
        perm = _order_perm(tuple(node.out_shape), placement.layers[lname]["order"])
        for src, chain in _paths(graph, pred, lname, layer_set):
            mats = [_node_matrix(graph.nodes[c]) for c in chain]
            syn_nodes = [graph.nodes[c] for c in chain if graph.nodes[c].op in SYNAPSE_OPS]
            wb = target.numeric.weight_bits
            bits = [_weight_bits(qgraph.q.get(s.name), wb) if qgraph is not None else wb
                    for s in syn_nodes] or [wb]
            w = max(bits)
            if any(graph.nodes[c].op == "Delay" for c in chain):  # a delay field per synapse (resources.py)
                w += int(target.numeric.max_delay).bit_length()
            n_src = int(np.prod(graph.nodes[src].out_shape))
            m = sp.identity(n_src, format="csr")
            for mm, _, _ in mats:
                m = (mm @ m).tocsr()
            m.data[:] = 1
            kinds = [k for _, k, _ in mats if k != "one_to_one"]
            kind = "one_to_one" if not kinds else (kinds[0] if len(kinds) == 1 else "composite")
            conv_info = next((ci for _, k, ci in mats if k == "conv"), None)
            for core, a, b in placement.groups[lname]:
                rows = perm[a:b]
                sub = m[rows]
                srcs = np.unique(sub.indices)
                g = b - a
                use["input_axons"][core] += srcs.size
                syn[core] += sub.nnz
                if kind == "one_to_one":
                    mem = g * w
                elif kind == "conv" and sharing:
                    mem = np.unique(rows // conv_info["plane"]).size * conv_info["kernel"] * w
                elif kind == "conv":
                    mem = sub.nnz * w
                else:
                    mem = min(srcs.size * g * w, sub.nnz * (w + idx_bits))
                use["synapse_memory_bits"][core] += mem
                if src in core_of:
                    cores, cnt = np.unique(core_of[src][srcs], return_counts=True)
                    use["output_axons"][cores] += cnt
    problems = []
    for c in placement.cores:
        for r in RES:
            if use[r][c.core] > lim[r]:
                problems.append(f"core {c.core}: {r} {use[r][c.core]} > {lim[r]}")
            if use[r][c.core] != getattr(c, r):
                problems.append(f"core {c.core}: {r} reported {getattr(c, r)}, recomputed {use[r][c.core]}")
        if syn[c.core] != c.synapses:
            problems.append(f"core {c.core}: synapses reported {c.synapses}, recomputed {syn[c.core]}")
    assert not problems, "\n".join(problems[:20])
    return {"use": {r: v.tolist() for r, v in use.items()}, "synapses": syn.tolist()}
