"""Lower bound on the cores of any placement under the resource model (resources.py).

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
from numpy.lib.stride_tricks import sliding_window_view

from spikedeploy.partition.memo import per_projection
from spikedeploy.partition.resources import RESOURCES, Model

PAIR_UNION_MAX_WORK = 400_000_000  # rows^2 x columns of one dense projection, for its pairwise-union bound
# group-size bound on dense memory (_dense_layer_bits): rows x largest group, and the most groups it is
# worked out for (beyond that the pairwise bound, which holds for any number of groups, is used)
DENSE_DP_MAX_CELLS = 1_500_000
# what a layer's memory "needs" on a core count that cannot hold it: larger than any total, so the
# bound keeps falling with C
NO_PLACEMENT_BITS = 1 << 62
UNION_MAX_WORK = 1_200_000_000  # rows x columns x the smaller of the two, for union_lower's matrix products
DENSE_DP_MAX_GROUPS = 64


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


def spectral_norm_upper(e: np.ndarray, squarings: int = 8) -> float:
    """An upper bound on ||e||_2 from matrix products only (LAPACK's SVD crawls on a busy machine).

    M = e e^T (the smaller side) is positive semidefinite, so lambda_max(M)^k <= trace(M^k), k = 2^squarings;
    the bound exceeds ||e||_2 by at most a factor n^(1/2k) (1.2% for n = 512). Rescaling by the trace
    each step keeps the numbers in range; the last factor covers rounding."""
    m = e @ e.T if e.shape[0] <= e.shape[1] else e.T @ e
    log_scale = 0.0  # trace(M0^k) = trace(m) * exp(log_scale)
    for _ in range(squarings):
        tr = float(np.trace(m))
        if tr <= 0:
            return 0.0
        m = m / tr
        log_scale = 2 * (log_scale + math.log(tr))
        m = m @ m
    tr = float(np.trace(m))
    if tr <= 0:
        return 0.0
    return math.exp((math.log(tr) + log_scale) / 2 ** (squarings + 1)) * (1 + 1e-6) + 1e-9


def union_lower(p) -> np.ndarray | None:
    """L[m] (m = 0..rows): at most the distinct sources of any m rows of a Dense projection. None when
    every row reads every used column or the matrix is too large.

    Proof. Let Z be the 0/1 matrix of absent synapses over the used columns, r and c its row and column
    sums, T its total, E = Z - r c^T / T. If m rows G read none of b columns B, Z is 1 on G x B, so
    m b = 1_G^T Z 1_B = r(G) c(B) / T + 1_G^T E 1_B <= R_m C_b / T + ||E||_2 sqrt(m b), with R_m, C_b the
    sums of the m largest r and the b largest c (||E||_2 bounded by spectral_norm_upper). So G misses at
    most the largest b that satisfies this and reads >= columns - b sources; all rows read every used
    column. The least union of m rows does not fall as m grows, so L is made non-decreasing."""
    n, m_cols = p.w.shape
    if n * m_cols * min(n, m_cols) > UNION_MAX_WORK or int(p.row_nnz.min()) == int(np.count_nonzero(p.cols_any)):
        return None
    z = (p.w[:, p.cols_any] == 0).astype(np.float64)
    tot = float(z.sum())
    if tot == 0:
        return None
    cols = z.shape[1]
    r, c = z.sum(axis=1), z.sum(axis=0)
    sigma = spectral_norm_upper(z - np.outer(r, c) / tot)
    big_r = np.cumsum(np.sort(r)[::-1])[:, None]  # R_m for m = 1..n
    big_c = np.concatenate([[0.0], np.cumsum(np.sort(c)[::-1])])[None, :]  # C_b for b = 0..cols
    mb = np.arange(1, n + 1)[:, None] * np.arange(cols + 1)[None, :]
    # (m, b) pairs the inequality allows; the tolerance keeps borderline pairs (a smaller, safe bound)
    ok = mb <= big_r * big_c / tot + sigma * np.sqrt(mb) + 1e-9 * (mb + 1)
    missed = np.where(ok, np.arange(cols + 1)[None, :], 0).max(axis=1)
    missed[-1] = 0  # all rows read every used column
    return np.maximum.accumulate(np.concatenate([[0], cols - missed]))


def _dense_layer_bits(projs, idx: int, n: int, g_max: int):
    """C -> least memory of a layer's Dense projections when its n rows are split into <= C groups of
    <= g_max rows.

    Pairwise bound (any C): each row costs _dense_row_bits' grouped figure, and at most C rows are alone
    (a group of one), saving the C largest differences. Group-size bound (C <= DENSE_DP_MAX_GROUPS):
    in a group G of m rows a projection reads U >= max(L[m], nnz_r, u_r) sources (union_lower,
    _pair_union) and stores min(U m w, nnz(G)(w + idx)) >= sum over r in G of c_r(m) =
    min(max(L[m], nnz_r, u_r) w, nnz_r (w + idx)). So G costs >= h(m), the sum of the m smallest c_r(m),
    and a split into sizes m_1..m_C (sum n, zeros allowed) >= sum h(m_j), minimised over sizes by a
    min-plus recursion. The result is the larger of the two."""
    rows = [_dense_row_bits(p, p.weight_bits, idx) for p in projs]
    grouped = np.sum([g2 for g2, _ in rows], axis=0)
    alone = np.sum([g1 for _, g1 in rows], axis=0)
    base = int(grouped.sum())
    cum = np.concatenate([[0], np.cumsum(np.sort(grouped - alone)[::-1])])

    def pairwise(C: int) -> int:
        return base - int(cum[min(int(C), cum.size - 1)])

    unions = [union_lower(p) for p in projs]
    if all(u is None for u in unions) or g_max < 2 or n * g_max > DENSE_DP_MAX_CELLS:
        return pairwise
    h = np.zeros(g_max + 1)
    h[1] = float(alone.min())
    cost = np.zeros((g_max - 1, n))  # cost[m - 2, r] = c_r(m)
    for p, (g2, _), u in zip(projs, rows, unions, strict=True):
        w = p.weight_bits
        if u is None:
            cost += g2[None, :]
        else:
            lst = (p.row_nnz * (w + idx))[None, :]
            cost += np.maximum(g2[None, :], np.minimum(u[2 : g_max + 1, None] * w, lst))
    cost.sort(axis=1)
    csum = np.cumsum(cost, axis=1)
    h[2:] = csum[np.arange(g_max - 1), np.arange(1, g_max)]
    f = [np.concatenate([[0.0], np.full(n, np.inf)])]  # f[j][s]: least cost of s rows in <= j groups
    fixed = [False]  # f[-1] is then the value for every larger C as well
    hr = h[::-1][None, :]

    def by_size(C: int) -> int:
        while len(f) <= min(C, DENSE_DP_MAX_GROUPS) and not fixed[0]:
            win = sliding_window_view(np.concatenate([np.full(g_max, np.inf), f[-1]]), g_max + 1)
            nxt = (win + hr).min(axis=1)  # min over m of f[-1][s - m] + h[m]
            if np.array_equal(nxt, f[-1]):
                fixed[0] = True
            else:
                f.append(nxt)
        if C >= len(f) and not fixed[0]:
            return pairwise(C)
        v = f[min(C, len(f) - 1)][n]
        if not np.isfinite(v):  # C groups of <= g_max rows cannot hold the layer: no such placement
            return NO_PLACEMENT_BITS
        return max(pairwise(C), int(v))

    return by_size


def rf_lower(q, s: tuple[int, int], k: tuple[int, int], hw: tuple[int, int] | None = None):
    """At most |RF(Q)| for any set Q of q output positions (q an int or an int array) of a valid
    (unpadded, undilated) 2-D conv with stride s <= kernel k per axis and, if given, an output plane of
    hw = (H, W).

    Proof. In 1-D, outputs X read the union of [s x, s x + k): each owns its block [s x, s x + s) and the
    last adds k - s more, so >= s |X| + (k - s) inputs. Let Q have R rows and C columns (R C >= q,
    R <= min(H, q), C <= W). An input row is read by the outputs of the rows y with s0 y <= row < s0 y + k0;
    let X(row) be their columns. By the 1-D bound along rows, at least s0 R + k0 - s0 input rows are read,
    each in >= s1 |X(row)| + k1 - s1 columns; and the sum over rows of |X(row)| counts, per column x of Q,
    the input rows read by that column's outputs Y_x: >= sum_x (s0 |Y_x| + k0 - s0) = s0 q + (k0 - s0) C.
    So |RF| >= s0 s1 q + a R + b C + (k0 - s0)(k1 - s1), a = s0 (k1 - s1), b = s1 (k0 - s0) (equality for
    rectangles), minimised here over whole R and C = ceil(q / R).
    """
    scalar = np.ndim(q) == 0
    q = np.atleast_1d(np.asarray(q, dtype=np.int64))
    h, w = (int(q.max()), int(q.max())) if hw is None else (int(hw[0]), int(hw[1]))
    r = np.arange(1, min(h, int(q.max())) + 1, dtype=np.int64)[None, :]
    c = -(-q[:, None] // r)
    a, b = s[0] * (k[1] - s[1]), s[1] * (k[0] - s[0])
    edge = np.where((r <= q[:, None]) & (c <= w), a * r + b * c, np.iinfo(np.int64).max // 4).min(axis=1)
    out = s[0] * s[1] * q + edge + (k[0] - s[0]) * (k[1] - s[1])
    return int(out[0]) if scalar else out


def conv_halo_axons(p, lim_in: int) -> int:
    """Input axons a dense (groups=1) valid conv projection needs in all, however its layer is split.

    A group on one core whose neurons sit at the q positions Q reads cin |RF(Q)| >= cin F(q) input axons
    through this projection (F = rf_lower), at most lim_in; so q is one of the sizes that fit, and the
    group reads >= q min_{fitting q'} cin F(q') / q'. The groups' positions cover all P output positions:
    >= cin P min F(q') / q'. The same sum is the source layer's output axons for this projection.
    A padded conv: its interior outputs (windows wholly inside the input) form a valid conv of the same
    kernel and stride on a crop of the input; a group's interior part Q' reads RF(Q') within RF(Q), so it
    fits the limit too and the argument holds with P the interior positions (the others only add axons).
    0 where the conv is dilated, grouped, or strides past its kernel."""
    if p.kind != "conv" or p.groups != 1 or any(d != 1 for d in p.d) \
            or any(s > k for s, k in zip(p.s, p.k, strict=True)):
        return 0
    hw = tuple(_interior(n_in, n_out, k, s, pad) for n_in, n_out, k, s, pad
               in zip((p.hin, p.win), (p.hout, p.wout), p.k, p.s, p.p, strict=True))
    P = hw[0] * hw[1]
    q_top = min(P, lim_in // (p.cin * p.s[0] * p.s[1]))  # F(q) >= s0 s1 q
    if q_top < 1:
        return 0
    q = np.arange(1, q_top + 1)
    f = rf_lower(q, p.s, p.k, hw)
    fits = p.cin * f <= lim_in
    if not fits[0]:
        return 0  # one position alone does not fit: split_layer reports it
    # least axons per position, as a fraction: ceil(cin P f / q) with exact integers
    i = int(np.argmin(np.where(fits, f / q, np.inf)))
    return -(-p.cin * P * int(f[i]) // int(q[i]))


def _interior(n_in: int, n_out: int, k: int, s: int, pad: int) -> int:
    """Outputs along one axis whose window [o s - pad, o s - pad + k) lies inside [0, n_in)."""
    lo, hi = -(-pad // s), min(n_out - 1, (n_in - k + pad) // s)
    return max(0, hi - lo + 1)


def _layer_needs(model: Model, lim, idx, sharing):
    """Per layer: minimum need of each resource over every split, given at most C groups per layer.

    Returns {layer: {resource: int or callable(C) -> int}}. Neurons, memory and input axons are charged
    to the layer holding the synapses; output axons to the source layer (they are used on its cores).
    A destination layer needs at least k_min cores (its neurons and minimum memory), each holding at most
    g_max of its neurons; so a projection needs >= max(distinct sources, k_min x min fan-in) input axons
    and, from on-chip sources, >= max(distinct sources, synapses / g_max) output axons.
    Dense memory depends on C (two groups of one layer never share a core, so a layer on C cores has at
    most C groups): see _dense_layer_bits."""
    need = {k: {r: 0 for r in RESOURCES} for k in model.layers}
    mem_fn = {}
    for lname, layer in model.layers.items():
        per_neuron = sum(p.per_neuron_min_bits(sharing) for p in layer.incoming)
        g_max = min(layer.n, lim["neurons"])
        if per_neuron:
            g_max = max(1, min(g_max, lim["synapse_memory_bits"] // per_neuron))
        mem = sum(p.min_memory_bits(idx, sharing) for p in layer.incoming if p.kind != "dense")
        dense = [p for p in layer.incoming if p.kind == "dense"]
        if dense:
            dense_fn = _dense_layer_bits(dense, idx, layer.n, g_max)
            mem_fn[lname] = (lambda C, mem=mem, fn=dense_fn: mem + fn(C))
        else:
            mem_fn[lname] = (lambda C, mem=mem: mem)
        mem_lo = mem_fn[lname](layer.n)  # the least it can be for any C
        k_min = max(1, math.ceil(layer.n / lim["neurons"]), math.ceil(mem_lo / lim["synapse_memory_bits"]))
        need[lname]["neurons"] += layer.n
        need[lname]["k_min"] = k_min
        for p in layer.incoming:
            ns = per_projection("sources", p, lambda p=p, n=layer.n: max(
                p.n_sources(0, n), conv_halo_axons(p, lim["input_axons"])), lim["input_axons"])
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


