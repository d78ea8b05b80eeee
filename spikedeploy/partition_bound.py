"""Lower bound on the cores of any placement under the resource model (partition_model.py).

Every bound here holds for any assignment of neurons to cores, contiguous or not, subject only to the
model's rule that two groups of one layer never share a core (so a layer on C cores has at most C groups).
The partitioner reports cores used against it; tests check each piece against brute force.

Per resource the bound is ceil(total need / per-core capacity), with total need taken at its minimum
over all splits: neurons; synapse memory (nnz x weight bits or shared kernels; dense projections by
`_dense_layer_bits`); input and output axons (one per source neuron and projection, or a conv's least
halo, `conv_halo_axons`); raised where layers whose every neuron fills a core's input axons must have
cores of their own (`lower_bound`).
"""

from __future__ import annotations

import math

import numpy as np

from .partition_model import RESOURCES, Model

PAIR_UNION_MAX_WORK = 200_000_000  # rows^2 x columns of one dense projection, for its pairwise-union bound


def _pair_union(p) -> np.ndarray | None:
    """Per target neuron r of a Dense projection: min over other neurons r' of |supp(r) u supp(r')|, the
    fewest distinct sources any group holding r and one more neuron reads. None when it cannot exceed
    nnz_r (every row reads every used column) or the product is too large to compute."""
    n, m = p.w.shape
    if n < 2 or not p.row_nnz.size or int(p.row_nnz.min()) == int(np.count_nonzero(p.cols_any)):
        return None
    if n * n * m > PAIR_UNION_MAX_WORK:
        return None
    s = (p.w != 0).astype(np.float32)
    inter = s @ s.T
    union = p.row_nnz[:, None] + p.row_nnz[None, :] - np.rint(inter).astype(np.int64)
    np.fill_diagonal(union, np.iinfo(np.int64).max)
    return union.min(axis=1)


def _dense_row_bits(p, w: int, idx: int):
    """(per-row bits in any group of >= 2 neurons, per-row bits alone) for a Dense projection.

    A group G stores min(nsrc(G) x |G| x w, nnz(G) x (w + idx)) bits. For |G| >= 2 every row r in G has
    nsrc(G) >= max(nnz_r, u_r) (u_r from _pair_union), so the group stores at least
    sum_r min(max(nnz_r, u_r) x w, nnz_r x (w + idx)) since min(sum a, sum b) >= sum min(a, b). A single
    row stores nnz_r x w."""
    alone = p.row_nnz * w
    u = _pair_union(p)
    if u is None:
        return alone, alone
    return np.minimum(np.maximum(p.row_nnz, u) * w, p.row_nnz * (w + idx)), alone


def _min_perimeter(a: float, b: float, q: float, r_max: float) -> float:
    """min of a R + b q / R over real R in [1, r_max] (R rows, q / R the fewest columns they need)."""
    if a <= 0:
        return b * q / r_max
    r = min(max(1.0, math.sqrt(b * q / a)), r_max)
    return a * r + b * q / r


def rf_lower(q: float, s: tuple[int, int], k: tuple[int, int], hw: tuple[int, int] | None = None) -> float:
    """F(q) <= |RF(Q)| for any set Q of q output positions of a valid (unpadded, undilated) 2-D conv with
    stride s <= kernel k per axis and, if given, an output plane of hw = (H, W); F(q) / q does not grow
    with q.

    Proof. In 1-D, outputs X read the union of [s x, s x + k): each owns its block [s x, s x + s) and the
    last adds k - s more, so >= s |X| + (k - s) inputs. Let Q have R rows and C columns (R C >= q, R <= H,
    C <= W). An input row is read by the outputs of the rows y with s0 y <= row < s0 y + k0; let X(row)
    be their columns. By the 1-D bound along rows, at least s0 R + k0 - s0 input rows are read, each in
    >= s1 |X(row)| + k1 - s1 columns; and sum over rows of |X(row)| counts, per column x of Q, the input
    rows read by that column's outputs Y_x: >= sum_x (s0 |Y_x| + k0 - s0) = s0 q + (k0 - s0) C. So
    |RF| >= s0 s1 q + a R + b C + (k0 - s0)(k1 - s1), a = s0 (k1 - s1), b = s1 (k0 - s0) (equality for
    rectangles). With C >= q / R: >= ... + min over R in [1, H] of (a R + b q / R), and the same with the
    roles of rows and columns swapped; F takes the larger. Each term over q is a minimum of functions
    that do not grow with q, so F(q) / q does not grow either.
    """
    h, w = (math.inf, math.inf) if hw is None else hw
    a, b = s[0] * (k[1] - s[1]), s[1] * (k[0] - s[0])
    edge = max(_min_perimeter(a, b, q, h), _min_perimeter(b, a, q, w))
    return s[0] * s[1] * q + edge + (k[0] - s[0]) * (k[1] - s[1])


def conv_halo_axons(p, lim_in: int) -> int:
    """Input axons a dense (groups=1) valid conv projection needs in all, however its layer is split.

    A group on one core whose neurons sit at the positions Q reads cin x |RF(Q)| <= lim_in input axons
    through this projection, so |Q| <= q_max with cin F(q_max) = lim_in (rf_lower); as F(q)/q falls with q,
    each group reads >= cin |Q| F(q_max) / q_max, and the groups' positions cover all P output positions:
    >= cin P F(q_max) / q_max. The same sum is the source layer's output axons for this projection.
    0 where the conv is padded, dilated, grouped, or strides past its kernel."""
    if p.kind != "conv" or p.groups != 1 or any(p.p) or any(d != 1 for d in p.d) \
            or any(s > k for s, k in zip(p.s, p.k, strict=True)):
        return 0
    budget = lim_in / p.cin
    hw = (p.hout, p.wout)
    if rf_lower(1, p.s, p.k, hw) > budget:
        return 0  # one position alone does not fit: split_layer reports it
    lo, hi = 1.0, float(p.P)
    if rf_lower(hi, p.s, p.k, hw) <= budget:
        lo = hi
    for _ in range(100):  # bisection for q_max
        mid = (lo + hi) / 2
        if rf_lower(mid, p.s, p.k, hw) <= budget:
            lo = mid
        else:
            hi = mid
    return max(0, math.ceil(p.cin * p.P * rf_lower(lo, p.s, p.k, hw) / lo - 1e-6))


def _layer_needs(model: Model, lim, idx, sharing):
    """Per layer: minimum need of each resource over every split, given at most C groups per layer.

    Returns {layer: {resource: int or callable(C) -> int}}. Neurons, memory and input axons are charged
    to the layer holding the synapses; output axons to the source layer (they are used on its cores).
    A destination layer needs at least k_min cores (its neurons and minimum memory), each holding at most
    g_max of its neurons; so a projection needs >= max(distinct sources, k_min x min fan-in) input axons
    and, from on-chip sources, >= max(distinct sources, synapses / g_max) output axons.
    Dense memory uses _dense_row_bits: a row alone is cheaper than in a group, but two groups of one layer
    never share a core, so with C cores at most C rows of a layer are alone: the bound subtracts the C
    largest savings."""
    need = {k: {r: 0 for r in RESOURCES} for k in model.layers}
    mem_fn = {}
    for lname, layer in model.layers.items():
        mem = 0
        grouped, saving = [], []
        for p in layer.incoming:
            if p.kind == "dense":
                g2, g1 = _dense_row_bits(p, p.weight_bits, idx)
                grouped.append(g2)
                saving.append(g2 - g1)
            else:
                mem += p.min_memory_bits(idx, sharing)
        if grouped:
            base = mem + int(sum(int(x.sum()) for x in grouped))
            sav = np.sort(np.sum(saving, axis=0))[::-1]
            cum = np.concatenate([[0], np.cumsum(sav)])
            mem_fn[lname] = (lambda C, base=base, cum=cum: base - int(cum[min(int(C), cum.size - 1)]))
        else:
            mem_fn[lname] = (lambda C, mem=mem: mem)
        mem_lo = mem_fn[lname](layer.n)  # the least it can be for any C
        per_neuron = sum(p.per_neuron_min_bits(sharing) for p in layer.incoming)
        k_min = max(1, math.ceil(layer.n / lim["neurons"]), math.ceil(mem_lo / lim["synapse_memory_bits"]))
        g_max = min(layer.n, lim["neurons"])
        if per_neuron:
            g_max = max(1, min(g_max, lim["synapse_memory_bits"] // per_neuron))
        need[lname]["neurons"] += layer.n
        need[lname]["k_min"] = k_min
        for p in layer.incoming:
            ns = max(p.n_sources(0, layer.n), conv_halo_axons(p, lim["input_axons"]))
            need[lname]["input_axons"] += max(ns, k_min * p.min_fanin())
            if p.src in model.layers:
                need[p.src]["output_axons"] += max(ns, math.ceil(p.total_synapses / g_max))
        # every neuron of this layer alone fills a core's input axons (axons are counted per projection)
        need[lname]["saturates_inputs"] = sum(p.min_fanin() for p in layer.incoming) >= lim["input_axons"]
    return need, mem_fn


def lower_bound(model: Model, lim, idx, sharing):
    """Lower bound on the cores of any placement, per resource and overall (see _layer_needs).

    Per resource: ceil(total need / per-core capacity) at the least C with bound(C) <= C (the dense
    memory bound depends on the core count C). Overall, also: a layer X whose every neuron reads
    at least `input_axons` distinct sources fills the input axons of each core it is on, so no neuron
    with any input can share those cores; X's layers then need sum k_min(X) cores of their own, and the
    remaining layers whose neurons all have inputs need their per-resource bound on top.
    """
    need, mem_fn = _layer_needs(model, lim, idx, sharing)

    def totals_for(names, C):
        t = {r: 0 for r in RESOURCES}
        for k in names:
            for r in RESOURCES:
                t[r] += mem_fn[k](C) if r == "synapse_memory_bits" else need[k][r]
        return t

    def by_res(t):
        return {r: math.ceil(t[r] / lim[r]) if t[r] else 0 for r in RESOURCES}

    names = list(model.layers)
    excl = [k for k in names if need[k]["saturates_inputs"]]
    rest = [k for k in names if k not in excl and any(p.min_fanin() > 0 for p in model.layers[k].incoming)]

    def bound(C):
        t = totals_for(names, C)
        lb = by_res(t)
        overall = max(lb.values(), default=0)
        if excl:
            overall = max(overall, sum(need[k]["k_min"] for k in excl)
                          + max(by_res(totals_for(rest, C)).values(), default=0))
        return t, lb, overall

    # bound(C) does not grow with C; any placement on C* cores has bound(C*) <= C*, so the least C with
    # bound(C) <= C is a lower bound. It lies in [bound(inf), bound(bound(inf))].
    lo = bound(1 << 40)[2]
    hi = max(lo, bound(lo)[2])
    while lo < hi:
        mid = (lo + hi) // 2
        if bound(mid)[2] <= mid:
            hi = mid
        else:
            lo = mid + 1
    t, lb, overall = bound(lo)
    return t, lb, overall


