"""What a layer costs on a core: projections and the resource model the partitioner packs with.

A *layer* is a chip neuron node plus the synapse nodes feeding it; its synaptic memory lives on the
cores holding its neurons. A *projection* is one path source population -> (synapse/shape nodes) ->
layer. Sources are neuron nodes, Input nodes (spikes arrive from the host) or host-side nodes. A chip
synapse chain that ends in no neuron (e.g. `Affine -> Output`) becomes an accumulator layer of
non-spiking compartments named after its last synapse node.

For a contiguous range [a, b) of a layer's neurons (flattened C-order) each projection answers, without
materialising per-synapse data for dense or convolutional connections:

- synapses(a, b): connections into the range (conv: taps landing on padding excluded).
- n_sources(a, b): distinct source neurons feeding the range = input axons.
- needed_mask(a, b): which source neurons feed the range; a source neuron needs one output axon per
  (projection, destination core) it feeds, and sends each spike once to each such core.
- memory_bits(a, b): synaptic memory, with w = weight bits and i = ceil(log2(core neurons)):
    dense / composite  min(n_sources * g * w, nnz * (w + i))  (dense block vs. index+weight list)
    conv, sharing      out_channels_in_range * C_in/groups * kh * kw * w  (kernel stored once per core)
    conv, no sharing   synapses * w
    one-to-one         g * w
  A chain with synaptic delays (a Delay node folded into its Dense: DelayDense) stores a delay field with
  every synapse: w grows by delay_field_bits(target) = bit width of the target's max_delay (6 on Loihi 2 for
  0..62). That is an estimate: Loihi 1 has a 6-bit delay field per synapse (Davies et al. 2018, notes
  hardware-and-anchors.md), Loihi 2's synapse encoding is not published. The per-compartment delay buffers
  (dendritic accumulators, max_delay + 1 slots) are not modelled. A Delay adds no connectivity: the
  chain's connections are those of its Dense.
  Per-axon pointer overhead is not modelled. Axons are counted per projection: a neuron feeding one
  core through two synapse nodes uses two axons (an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spikedeploy.errors import GraphError, TargetLimitError, UnsupportedError
from spikedeploy.graph.ops import CONV, DENSE, ONE_TO_ONE, OPS, SPATIAL, conv_params, is_neuron, pool_params
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import SynapseParams
from spikedeploy.partition.memo import cached, is_constant

COMPOSITE_MAX_SYNAPSES = 50_000_000
RESOURCES = ("neurons", "synapse_memory_bits", "input_axons", "output_axons")  # per-core limits


def _size(shape) -> int:
    return int(np.prod(shape)) if shape else 1


class Projection:
    kind = "?"

    def __init__(self, src: str, dst: str, nodes: tuple[str, ...], n_src: int, n_dst: int, weight_bits: int):
        self.src, self.dst, self.nodes = src, dst, nodes
        self.n_src, self.n_dst, self.weight_bits = int(n_src), int(n_dst), int(weight_bits)
        self.dst_perm: np.ndarray | None = None  # destination order index -> canonical index (Layer.perm)

    @property
    def name(self) -> str:
        return f"{self.src} -> {' > '.join(self.nodes) or '(direct)'} -> {self.dst}"

    def synapses(self, a: int, b: int) -> int:
        raise NotImplementedError

    def n_sources(self, a: int, b: int) -> int:
        raise NotImplementedError

    def needed_mask(self, a: int, b: int) -> np.ndarray:
        raise NotImplementedError

    def memory_bits(self, a: int, b: int, nsrc: int, idx_bits: int, sharing: bool) -> int:
        raise NotImplementedError

    def min_memory_bits(self, idx_bits: int, sharing: bool) -> int:
        """A lower bound on the memory of the whole projection however the layer is split."""
        return self.synapses(0, self.n_dst) * self.weight_bits

    @property
    def total_synapses(self) -> int:
        return self.synapses(0, self.n_dst)

    def min_fanin(self) -> int:
        return 1

    def per_neuron_min_bits(self, sharing: bool) -> int:
        """Memory every target neuron needs whatever group it is in (0 where kernels are shared)."""
        return self.min_fanin() * self.weight_bits


class OneToOne(Projection):
    kind = "one_to_one"

    def synapses(self, a, b):
        return b - a

    def n_sources(self, a, b):
        return b - a

    def needed_mask(self, a, b):
        m = np.zeros(self.n_src, bool)
        if self.dst_perm is None:
            m[a:b] = True
        else:
            m[self.dst_perm[a:b]] = True
        return m

    def memory_bits(self, a, b, nsrc, idx_bits, sharing):
        return (b - a) * self.weight_bits


class Dense(Projection):
    """Affine / Linear: weight (out, in); zero weights are not synapses."""

    kind = "dense"
    BLOCK = 64

    def __init__(self, *args, weight: np.ndarray):
        super().__init__(*args)
        self.w = weight
        self.row_nnz = np.count_nonzero(weight, axis=1).astype(np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.row_nnz)])
        self._blockor: np.ndarray | None = None
        self._cols_any: np.ndarray | None = None

    @property
    def cols_any(self) -> np.ndarray:
        if self._cols_any is None:
            self._cols_any = self.blockor.any(axis=0) if self.blockor.size else np.zeros(self.n_src, bool)
        return self._cols_any

    @property
    def blockor(self) -> np.ndarray:
        # OR of the nonzero pattern over blocks of BLOCK rows: range queries touch at most 2*BLOCK rows.
        if self._blockor is None:
            n, B = self.w.shape[0], self.BLOCK
            nb = -(-n // B)
            out = np.zeros((nb, self.w.shape[1]), bool)
            for i in range(nb):
                out[i] = np.any(self.w[i * B : (i + 1) * B] != 0, axis=0)
            self._blockor = out
        return self._blockor

    def synapses(self, a, b):
        return int(self.cum[b] - self.cum[a])

    def needed_mask(self, a, b):
        B = self.BLOCK
        fb, lb = -(-a // B), b // B  # full blocks [fb, lb)
        if fb >= lb:
            return np.any(self.w[a:b] != 0, axis=0)
        m = self.blockor[fb:lb].any(axis=0)
        if a < fb * B:
            m |= np.any(self.w[a : fb * B] != 0, axis=0)
        if lb * B < b:
            m |= np.any(self.w[lb * B : b] != 0, axis=0)
        return m

    def n_sources(self, a, b):
        if b <= a:
            return 0
        total = int(np.count_nonzero(self.cols_any))
        if int(self.row_nnz[a:b].max()) == total:  # one full row already reaches every used column
            return total
        return int(np.count_nonzero(self.needed_mask(a, b)))

    def memory_bits(self, a, b, nsrc, idx_bits, sharing):
        w = self.weight_bits
        return min(nsrc * (b - a) * w, self.synapses(a, b) * (w + idx_bits))

    def min_fanin(self):
        return int(self.row_nnz.min()) if self.row_nnz.size else 0


class FullDense(Dense):
    """A Dense projection whose weight is one nonzero broadcast constant (partition_memo.is_constant): every
    target reads every source. Answers from the shape alone, never touching the (virtual) matrix."""

    kind = "full"

    def __init__(self, *args, weight: np.ndarray):
        Projection.__init__(self, *args)
        self.w = weight
        self.row_nnz = np.full(self.n_dst, self.n_src, np.int64)

    def synapses(self, a, b):
        return max(0, b - a) * self.n_src

    @property
    def cols_any(self) -> np.ndarray:
        return np.ones(self.n_src, bool)

    def needed_mask(self, a, b):
        return np.full(self.n_src, b > a)

    def n_sources(self, a, b):
        return self.n_src if b > a else 0

    def min_fanin(self):
        return self.n_src if self.n_dst else 0


class Sparse(Projection):
    """A chain of synapse nodes composed into one structural CSR matrix (dst x src)."""

    kind = "composite"

    def __init__(self, *args, csr):
        super().__init__(*args)
        self.indptr = csr.indptr.astype(np.int64)
        self.indices = csr.indices

    def synapses(self, a, b):
        return int(self.indptr[b] - self.indptr[a])

    def needed_mask(self, a, b):
        m = np.zeros(self.n_src, bool)
        m[self.indices[self.indptr[a] : self.indptr[b]]] = True
        return m

    def n_sources(self, a, b):
        return int(np.count_nonzero(self.needed_mask(a, b)))

    def memory_bits(self, a, b, nsrc, idx_bits, sharing):
        w = self.weight_bits
        return min(nsrc * (b - a) * w, self.synapses(a, b) * (w + idx_bits))

    def min_fanin(self):
        return int(np.diff(self.indptr).min()) if self.indptr.size > 1 else 0


def _axis_cover(o0: int, o1: int, n_in: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """Input positions read by outputs o0..o1 (inclusive) along one axis."""
    m = np.zeros(n_in, bool)
    for j in range(k):
        start, stop = o0 * s - p + j * d, o1 * s - p + j * d
        if stop < 0 or start >= n_in:
            continue
        if start < 0:
            start %= s  # first position >= 0 on the stride grid
        m[start : min(stop, n_in - 1) + 1 : s] = True
    return m


def _conv_tables(hin, win, hout, wout, k, s, p, d, tile):
    """(taps per output position, their prefix sums, both in placement position order, input positions
    read by the whole plane) of a 2-D conv geometry; `tile` as in position_order (None: row-major)."""
    vt = []
    for ax, (n_in, n_out) in enumerate(((hin, hout), (win, wout))):
        o = np.arange(n_out)[:, None] * s[ax] - p[ax] + np.arange(k[ax])[None, :] * d[ax]
        vt.append(((o >= 0) & (o < n_in)).sum(axis=1))
    taps = (vt[0][:, None] * vt[1][None, :]).ravel().astype(np.int64)
    pre = np.concatenate([[0], np.cumsum(taps)])
    if tile is None:
        taps_o, pre_o = taps, pre
    else:
        taps_o = taps[position_order(hout, wout, tile)]
        pre_o = np.concatenate([[0], np.cumsum(taps_o)])
    r = _axis_cover(0, hout - 1, hin, k[0], s[0], p[0], d[0])
    c = _axis_cover(0, wout - 1, win, k[1], s[1], p[1], d[1])
    return taps, pre, taps_o, pre_o, r[:, None] & c[None, :]


class Conv(Projection):
    """Conv1d/Conv2d and sum/avg pooling (a depthwise conv with a constant kernel), by geometry only.

    All kernel taps count as synapses (zero kernel entries included); taps on padding do not.
    """

    kind = "conv"

    def __init__(self, *args, cin, hin, win, cout, hout, wout, k, s, p, d, groups, hwc=False, tile=None):
        super().__init__(*args)
        self.hwc = hwc  # target ranges index the layer channel-last (spatial tiles), see Layer.order
        # channel-last with positions in tile order (k-th -> canonical position)
        self.pos_order = None if tile is None else cached(position_order, hout, wout, tuple(tile))
        self.cin, self.hin, self.win = cin, hin, win
        self.cout, self.hout, self.wout = cout, hout, wout
        self.k, self.s, self.p, self.d = k, s, p, d
        self.groups = groups
        self.cin_g, self.cout_g = cin // groups, cout // groups
        self.P = hout * wout
        # per-position arrays depend on the geometry only: shared by every conv of that geometry
        self.taps, self.pre, self.taps_o, self.pre_o, self.full_mask = cached(
            _conv_tables, hin, win, hout, wout, tuple(k), tuple(s), tuple(p), tuple(d), tile)
        self.full_count = int(self.full_mask.sum())

    def _cum_syn(self, x: int) -> int:
        if self.hwc:
            pos, c = divmod(x, self.cout)
            t = int(self.taps_o[pos]) if pos < self.P else 0
            return int(self.cin_g * (self.cout * self.pre_o[pos] + c * t))
        c, r = divmod(x, self.P)
        return int(self.cin_g * (c * self.pre[-1] + self.pre[r]))

    def synapses(self, a, b):
        return self._cum_syn(b) - self._cum_syn(a)

    def _plane_mask(self, p0: int, p1: int) -> np.ndarray:
        """Input positions read by output positions p0..p1-1 (placement position order)."""
        if self.pos_order is not None and (p0, p1) != (0, self.P):
            return self._positions_mask(self.pos_order[p0:p1])
        W = self.wout
        y0, x0 = divmod(p0, W)
        y1, x1 = divmod(p1 - 1, W)
        if y0 == y1:
            rects = [(y0, y0, x0, x1)]
        else:
            rects = [(y0, y0, x0, W - 1), (y1, y1, 0, x1)]
            if y1 - y0 >= 2:
                rects.append((y0 + 1, y1 - 1, 0, W - 1))
        m = np.zeros((self.hin, self.win), bool)
        for ya, yb, xa, xb in rects:
            r = _axis_cover(ya, yb, self.hin, self.k[0], self.s[0], self.p[0], self.d[0])
            c = _axis_cover(xa, xb, self.win, self.k[1], self.s[1], self.p[1], self.d[1])
            m |= r[:, None] & c[None, :]
        return m

    def _positions_mask(self, pos: np.ndarray) -> np.ndarray:
        oy, ox = np.divmod(pos, self.wout)
        m = np.zeros((self.hin, self.win), bool)
        for ky in range(self.k[0]):
            iy = oy * self.s[0] - self.p[0] + ky * self.d[0]
            for kx in range(self.k[1]):
                ix = ox * self.s[1] - self.p[1] + kx * self.d[1]
                ok = (iy >= 0) & (iy < self.hin) & (ix >= 0) & (ix < self.win)
                m[iy[ok], ix[ok]] = True
        return m

    def _group_masks(self, a: int, b: int):
        """(range of groups with a fully covered channel, {other group: spatial mask}) for outputs [a, b)."""
        if self.hwc:
            return self._group_masks_hwc(a, b)
        P, cg = self.P, self.cout_g
        c0, c1 = a // P, (b - 1) // P
        c0_full = a == c0 * P and min(b, (c0 + 1) * P) == (c0 + 1) * P
        c1_full = max(a, c1 * P) == c1 * P and b == (c1 + 1) * P
        ff = c0 if c0_full else c0 + 1
        lf = c1 if c1_full else c1 - 1
        full = range(ff // cg, lf // cg + 1) if lf >= ff else range(0)
        partial: dict[int, np.ndarray] = {}
        for c, is_full in ((c0, c0_full), (c1, c1_full)):
            g = c // cg
            if is_full or g in full:
                continue
            lo, hi = max(a, c * P) - c * P, min(b, (c + 1) * P) - c * P
            m = self._plane_mask(lo, hi)
            partial[g] = partial[g] | m if g in partial else m
        return full, partial

    def _group_masks_hwc(self, a: int, b: int):
        C, cg = self.cout, self.cout_g
        p0, c0 = divmod(a, C)
        p1, c1 = divmod(b - 1, C)
        if self.groups == 1:
            return range(0), {0: self._plane_mask(p0, p1 + 1)}
        out: dict[int, np.ndarray] = {}

        def add(g: int, m: np.ndarray) -> None:
            out[g] = out[g] | m if g in out else m

        if p1 - p0 >= 2:
            mid = self._plane_mask(p0 + 1, p1)
            for g in range(self.groups):
                add(g, mid)
        if p0 == p1:
            ends = [(p0, c0, c1)]
        else:
            ends = [(p0, c0, C - 1), (p1, 0, c1)]
        for pos, ca, cb in ends:
            m = self._plane_mask(pos, pos + 1)
            for g in range(ca // cg, cb // cg + 1):
                add(g, m)
        return range(0), out

    def n_sources(self, a, b):
        if b <= a:
            return 0
        full, partial = self._group_masks(a, b)
        return self.cin_g * (len(full) * self.full_count + sum(int(m.sum()) for m in partial.values()))

    def needed_mask(self, a, b):
        out = np.zeros((self.cin, self.hin * self.win), bool)
        full, partial = self._group_masks(a, b)
        if len(full):
            out[full.start * self.cin_g : full.stop * self.cin_g] = self.full_mask.ravel()
        for g, m in partial.items():
            out[g * self.cin_g : (g + 1) * self.cin_g] |= m.ravel()
        return out.ravel()

    def memory_bits(self, a, b, nsrc, idx_bits, sharing):
        if not sharing:
            return self.synapses(a, b) * self.weight_bits
        if self.hwc:
            p0, c0 = divmod(a, self.cout)
            p1, c1 = divmod(b - 1, self.cout)
            n_ch = c1 - c0 + 1 if p0 == p1 else (self.cout if p1 - p0 >= 2 else min(self.cout, self.cout - c0 + c1 + 1))
            return n_ch * self.cin_g * self.k[0] * self.k[1] * self.weight_bits
        n_ch = (b - 1) // self.P - a // self.P + 1
        return n_ch * self.cin_g * self.k[0] * self.k[1] * self.weight_bits

    def min_fanin(self):
        return int(self.cin_g * self.taps.min()) if self.taps.size else 0

    def per_neuron_min_bits(self, sharing):
        return 0 if sharing else self.min_fanin() * self.weight_bits

    def min_memory_bits(self, idx_bits, sharing):
        if not sharing:
            return self.total_synapses * self.weight_bits
        return self.cout * self.cin_g * self.k[0] * self.k[1] * self.weight_bits


def layer_perm(shape, tile: tuple[int, int] | None = None) -> np.ndarray | None:
    """Channel-last order for (C, H, W) / (C, L) layers: groups become spatial tiles holding all channels,
    so a conv's halo, not every channel plane, decides which cores a source neuron feeds. Returns
    perm with perm[k] = canonical (C-order) index of the k-th neuron in placement order.

    With `tile=(th, tw)` (C, H, W layers) positions go tile by tile (tiles in row-major order, positions
    row-major inside a tile, edge tiles cut short), so a range of about one tile is a compact rectangle
    whose receptive field overlaps its neighbours' only at the border (order "tiles:th,tw")."""
    shape = tuple(int(x) for x in shape or ())
    if len(shape) not in (2, 3) or int(np.prod(shape[1:])) <= 1 or shape[0] <= 1:
        return None
    idx = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if tile is None or len(shape) != 3:
        return np.moveaxis(idx, 0, -1).ravel()
    pos = position_order(shape[1], shape[2], tile)
    return (pos[:, None] + np.arange(shape[0])[None, :] * shape[1] * shape[2]).ravel()


def choose_tile(geo: dict, target) -> tuple[int, int] | None:
    """Tile (th, tw) of a conv layer's output plane that fits one core (all channels of th x tw positions
    within the neuron limit, their receptive field within the input-axon limit) with the fewest tiles,
    then the fewest input axons in all (least halo). None when rows (the "hwc" order) do as well."""
    return cached(_choose_tile, tuple(geo.items()), int(target.core.neurons), int(target.core.input_axons))


def _choose_tile(geo_items, lim_n: int, lim_in: int) -> tuple[int, int] | None:
    geo = dict(geo_items)
    H, W, cout = geo["hout"], geo["wout"], geo["cout"]
    cin_g, groups = geo["cin"] // geo["groups"], geo["groups"]

    def reach(n_out, ax):  # input extent read by n_out consecutive outputs along an axis
        n_in = (geo["hin"], geo["win"])[ax]
        return min(n_in, (n_out - 1) * geo["s"][ax] + (geo["k"][ax] - 1) * geo["d"][ax] + 1)

    best, best_key = None, None
    for th in range(1, H + 1):
        for tw in range(1, W + 1):
            if th * tw * cout > lim_n or cin_g * min(groups, cout) * reach(th, 0) * reach(tw, 1) > lim_in:
                continue
            n_tiles = -(-H // th) * -(-W // tw)
            # edge tiles are cut short; their window too
            rows = [reach(min(th, H - y), 0) for y in range(0, H, th)]
            cols = [reach(min(tw, W - x), 1) for x in range(0, W, tw)]
            axons = cin_g * min(groups, cout) * sum(rows) * sum(cols)
            est = max(-(-H * W * cout // lim_n), -(-axons // lim_in))
            key = (est, axons, n_tiles, tw != W)
            if best_key is None or key < best_key:
                best, best_key = (th, tw), key
    if best is None or best[1] == W:
        return None
    return best


def position_order(h: int, w: int, tile: tuple[int, int]) -> np.ndarray:
    """Positions (y * w + x) of an h x w plane, tile by tile (see layer_perm)."""
    th, tw = int(tile[0]), int(tile[1])
    y, x = np.divmod(np.arange(h * w), w)
    key = np.lexsort((x, y, x // tw, y // th))  # last key sorts first: tile row, tile column, row, column
    return key.astype(np.int64)


@dataclass
class Layer:
    name: str
    op: str
    n: int
    spiking: bool
    shape: tuple[int, ...] = ()
    perm: np.ndarray | None = None  # None: C-order ("chw"); else channel-last ("hwc"), see layer_perm
    tile: tuple[int, int] | None = None  # channel-last in spatial tiles ("tiles:th,tw")
    synapse_nodes: list[str] = field(default_factory=list)
    incoming: list[Projection] = field(default_factory=list)
    outgoing: list[Projection] = field(default_factory=list)
    accumulator: bool = False  # a synapse chain with no neuron behind it: non-spiking compartments

    @property
    def order(self) -> str:
        if self.perm is None:
            return "chw"
        return "hwc" if self.tile is None else f"tiles:{self.tile[0]},{self.tile[1]}"

    def canonical(self, a: int, b: int) -> np.ndarray:
        """C-order indices of placement-order neurons [a, b)."""
        return np.arange(a, b) if self.perm is None else self.perm[a:b]

    def to_order(self, x: np.ndarray) -> np.ndarray:
        """A per-neuron array in C order, reindexed to placement order."""
        return x if self.perm is None else x[self.perm]


@dataclass
class Model:
    layers: dict[str, Layer]
    order: list[str]  # layers in topological order (sources first)
    sources: dict[str, int]  # off-chip source populations (Input, host nodes) -> size
    projections: list[Projection]
    host_nodes: list[str]
    to_host: dict[str, list[str]]  # chip layer -> host/Output nodes reading it


def delay_field_bits(target) -> int:
    """Bits of the per-synapse delay field: enough for 0..max_delay (estimate, see the module docstring)."""
    return int(target.numeric.max_delay).bit_length()


def _synapse_q(qgraph, node: str) -> SynapseParams | None:
    """The synapse parameters of `node` when `qgraph` is a QGraph that has them (a float Graph has none)."""
    q = qgraph.q.get(node) if isinstance(qgraph, QGraph) else None
    return q if isinstance(q, SynapseParams) else None


def _weight_bits(qgraph, node: str, default: int) -> int:
    q = _synapse_q(qgraph, node)
    return default if q is None or q.num_weight_bits is None else int(q.num_weight_bits)


def _structural(node, weight_cap: int):
    """Structural (0/1) sparse matrix (out x in) of one synapse/shape node, for composite chains."""
    import scipy.sparse as sp

    n_in, n_out = _size(node.in_shape), _size(node.out_shape)
    if node.spec.family == "shape" or node.op in ONE_TO_ONE:
        return sp.identity(n_out, dtype=np.float32, format="csr")
    if node.op in DENSE:
        return sp.csr_matrix((np.asarray(node.params["weight"]) != 0).astype(np.float32))
    if node.op in SPATIAL:
        rows, cols = conv_coo(node)
        if rows.size > weight_cap:
            raise UnsupportedError(f"node '{node.name}': composite connection too large to partition ({rows.size} synapses)")
        return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_out, n_in))
    raise UnsupportedError(f"node '{node.name}' ({node.op}): no connectivity model for partitioning")


def conv_coo(node) -> tuple[np.ndarray, np.ndarray]:
    """(target index, source index) of every synapse of a conv/pool node (flattened C-order)."""
    g = conv_geometry(node)
    k, s, p, d = g["k"], g["s"], g["p"], g["d"]
    cin_g, cout_g = g["cin"] // g["groups"], g["cout"] // g["groups"]
    oy, ox, ky, kx = np.meshgrid(np.arange(g["hout"]), np.arange(g["wout"]), np.arange(k[0]), np.arange(k[1]), indexing="ij")
    iy, ix = oy * s[0] - p[0] + ky * d[0], ox * s[1] - p[1] + kx * d[1]
    ok = (iy >= 0) & (iy < g["hin"]) & (ix >= 0) & (ix < g["win"])
    opos = (oy * g["wout"] + ox)[ok]
    ipos = (iy * g["win"] + ix)[ok]
    rows, cols = [], []
    for co in range(g["cout"]):
        grp = co // cout_g
        for ci in range(grp * cin_g, (grp + 1) * cin_g):
            rows.append(co * g["hout"] * g["wout"] + opos)
            cols.append(ci * g["hin"] * g["win"] + ipos)
    return np.concatenate(rows), np.concatenate(cols)


def conv_geometry(node) -> dict:
    """Geometry of a Conv1d/Conv2d/pool node as a 2-D convolution (Conv1d: height 1)."""
    ins, outs = node.in_shape, node.out_shape
    if node.op in CONV:
        w = np.asarray(node.params["weight"])
        nd = w.ndim - 2
        k = tuple(int(x) for x in w.shape[2:])
        st, pd, dl = conv_params(node.params, nd)
        groups = int(node.params.get("groups", 1))
    else:
        nd = 2
        k, st, pd = pool_params(node.params)
        dl = (1, 1)
        groups = int(ins[0])
    if nd == 1:
        k, st, pd, dl = (1, *k), (1, *st), (0, *pd), (1, *dl)
        ins, outs = (ins[0], 1, ins[1]), (outs[0], 1, outs[1])
    return dict(cin=int(ins[0]), hin=int(ins[1]), win=int(ins[2]), cout=int(outs[0]), hout=int(outs[1]),
                wout=int(outs[2]), k=tuple(k), s=tuple(st), p=tuple(pd), d=tuple(dl), groups=groups)


def _projection(graph, src: str, chain: list[str], dst: str, n_dst: int, target, qgraph, perm=None,
                tile=None) -> Projection:
    nodes = [graph.nodes[c] for c in chain]
    syn = [n for n in nodes if n.spec.family == "synapse"]
    n_src = _size(graph.nodes[src].out_shape)
    wb_default = target.numeric.weight_bits
    delays = [n for n in syn if n.op == "Delay"]
    syn = [n for n in syn if n.op != "Delay"] or syn
    bits = max([_weight_bits(qgraph, n.name, wb_default) for n in syn], default=wb_default)
    if delays or any((q := _synapse_q(qgraph, n.name)) is not None and q.delay is not None for n in syn):
        bits += delay_field_bits(target)
    args = (src, dst, tuple(chain), n_src, n_dst, bits)
    if not syn or all(n.op in ONE_TO_ONE for n in syn):
        if n_src != n_dst:
            raise GraphError(f"connection {src} -> {dst}: {n_src} sources feed {n_dst} neurons one-to-one")
        proj = OneToOne(*args)
        proj.dst_perm = perm
        return proj
    if len(syn) == 1 and syn[0].op in DENSE and perm is None:
        w = np.asarray(syn[0].params["weight"])
        return (FullDense if is_constant(w) else Dense)(*args, weight=w)
    if len(syn) == 1 and syn[0].op in SPATIAL:
        geo = conv_geometry(syn[0])
        if perm is None or n_dst == geo["cout"] * geo["hout"] * geo["wout"]:
            return Conv(*args, **geo, hwc=perm is not None, tile=tile)
    m = None
    for n in nodes:
        s = _structural(n, COMPOSITE_MAX_SYNAPSES)
        m = s if m is None else (s @ m)
        m.data[:] = 1.0
        if m.nnz > COMPOSITE_MAX_SYNAPSES:
            raise UnsupportedError(
                f"synapse chain {' > '.join(chain)} into '{dst}' composes to {m.nnz} synapses; "
                "insert neurons between the synapse nodes or fold them offline"
            )
    m = m.tocsr()
    if perm is not None:
        m = m[perm]
    return Sparse(*args, csr=m.tocsr())


def build_model(graph, target, qgraph=None) -> Model:
    """Layers and projections of the chip part of `graph` (see module docstring)."""
    if any(n.out_shape is None for n in graph.nodes.values()):
        graph.infer_shapes()
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    succs: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
        succs[a].append(b)
    host_nodes = [n for n, v in graph.nodes.items() if v.placement == "host"]

    def is_pop(name: str) -> bool:
        v = graph.nodes[name]
        return v.op == "Input" or v.placement == "host" or is_neuron(v.op)

    def passes(name: str) -> bool:  # chip node spikes flow through on the way to a layer
        v = graph.nodes[name]
        return v.placement == "chip" and v.spec.family in ("synapse", "shape")

    layers: dict[str, Layer] = {}
    for name, v in graph.nodes.items():
        if v.placement == "chip" and is_neuron(v.op):
            tile = None
            if len(preds[name]) == 1 and graph.nodes[preds[name][0]].op == "Conv2d" \
                    and graph.nodes[preds[name][0]].placement == "chip" and len(v.out_shape or ()) == 3:
                tile = choose_tile(conv_geometry(graph.nodes[preds[name][0]]), target)
            sends = bool(OPS[v.op].spiking or OPS[v.op].graded)  # graded messages are events too
            layers[name] = Layer(name, v.op, _size(v.out_shape), sends, tuple(v.out_shape),
                                 cached(layer_perm, tuple(v.out_shape), tile), tile=tile)
    # accumulators: chip synapse nodes whose result reaches no chip neuron or synapse
    for name, v in graph.nodes.items():
        if v.placement == "chip" and v.spec.family == "synapse":
            if not any(passes(s) or (is_neuron(graph.nodes[s].op) and graph.nodes[s].placement == "chip")
                       for s in succs[name]):
                layers[name] = Layer(name, v.op, _size(v.out_shape), False, tuple(v.out_shape),
                                     cached(layer_perm, tuple(v.out_shape)), accumulator=True)

    projections: list[Projection] = []
    sources: dict[str, int] = {}
    for lname, layer in layers.items():
        start = [lname] if layer.accumulator else []
        todo = [(p, start) for p in preds[lname]]
        syn_nodes: list[str] = []
        while todo:
            node, chain = todo.pop()
            if is_pop(node):
                proj = _projection(graph, node, chain, lname, layer.n, target, qgraph, layer.perm, layer.tile)
                layer.incoming.append(proj)
                projections.append(proj)
                if node not in layers:
                    sources[node] = _size(graph.nodes[node].out_shape)
                continue
            if not passes(node):
                raise UnsupportedError(f"node '{node}' ({graph.nodes[node].op}) between a source and layer '{lname}' cannot be placed")
            if node in chain or len(chain) > 64:
                raise GraphError(f"cycle of synapse nodes through '{node}' with no neuron in it")
            if graph.nodes[node].spec.family == "synapse":
                syn_nodes.append(node)
            todo.extend((p, [node, *chain]) for p in preds[node])
        layer.synapse_nodes = sorted(set(syn_nodes + start))
    for p in projections:
        if p.src in layers:
            layers[p.src].outgoing.append(p)
    for lname, layer in layers.items():
        if layer.n == 0:
            raise GraphError(f"layer '{lname}' has no neurons")
    order_all, _ = graph.order()
    order = [n for n in order_all if n in layers]
    to_host: dict[str, list[str]] = {}
    for lname in layers:
        readers = []
        todo, seen = list(succs[lname]), set()
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            v = graph.nodes[s]
            if v.op == "Output" or v.placement == "host":
                readers.append(s)
            elif v.spec.family == "shape":
                todo.extend(succs[s])
        if readers:
            to_host[lname] = sorted(readers)
    return Model(layers, order, sources, projections, host_nodes, to_host)


def index_bits(target) -> int:
    return max(1, math.ceil(math.log2(max(2, target.core.neurons))))


def check_single(layer: Layer, resource: str, need: int, limit: int, target, detail: str = "") -> TargetLimitError:
    fixes = {
        "input_axons": "reduce the fan-in of these neurons (prune, or split the source population across layers), "
                       "or choose a target with more input axons per core",
        "output_axons": "reduce the fan-out of these neurons, or choose a target with more output axons per core",
        "synapse_memory_bits": "lower the weight bits (quantize to fewer bits), prune synapses, "
                               "or choose a target with more synaptic memory per core",
        "neurons": "choose a target with more neurons per core",
    }
    return TargetLimitError(
        f"layer '{layer.name}' ({layer.op}): one neuron needs {need} {resource.replace('_', ' ')}"
        f"{detail}, more than the {target.name} per-core limit of {limit}. Fix: {fixes[resource]}."
    )
