"""Synthetic layered graphs for partitioning tests and benchmarks (deterministic under a seed).

Weights are int8 (1 byte per synapse), so the 100M-synapse benchmark graph holds 100 MB of weights.
Zero weights are avoided (values in [-127, 127] without 0) so every synapse is real.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.ops import conv_out


def _lif(name: str, n: int | tuple[int, ...]) -> Node:
    shape = (n,) if isinstance(n, int) else tuple(n)
    one = np.ones(shape, np.float32)
    return Node(name, "LIF", {"tau": one * 2.0, "r": one, "v_leak": one * 0.0, "v_threshold": one})


def _weights(rng, shape, density: float = 1.0) -> np.ndarray:
    w = rng.integers(1, 128, size=shape, dtype=np.int8)
    w *= np.where(rng.random(shape, dtype=np.float32) < 0.5, np.int8(-1), np.int8(1))
    if density < 1.0:
        w[rng.random(shape, dtype=np.float32) >= density] = 0
    return w


def dense_chain(widths: list[int], *, seed: int = 0, density: float = 1.0, recurrent: tuple[int, ...] = ()) -> Graph:
    """Input(widths[0]) -> [Linear -> LIF] for each next width -> Output. `recurrent` lists hidden layer
    indices (1-based) that also get a recurrent Linear."""
    rng = np.random.default_rng(seed)
    g = Graph(dt=1e-3)
    g.add(Node("input", "Input", {"shape": np.array([widths[0]])}))
    prev = "input"
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1):
        g.add(Node(f"fc{i}", "Linear", {"weight": _weights(rng, (n_out, n_in), density)}))
        g.add(_lif(f"lif{i}", n_out))
        g.connect(prev, f"fc{i}")
        g.connect(f"fc{i}", f"lif{i}")
        if i in recurrent:
            g.add(Node(f"rec{i}", "Linear", {"weight": _weights(rng, (n_out, n_out), density)}))
            g.connect(f"lif{i}", f"rec{i}")
            g.connect(f"rec{i}", f"lif{i}")
        prev = f"lif{i}"
    g.add(Node("output", "Output"))
    g.connect(prev, "output")
    return g.infer_shapes()


def conv_net(in_shape=(2, 32, 32), convs=((8, 3, 1, 1), (16, 3, 2, 1)), dense=(64, 10), *, pool: int = 0,
             seed: int = 0) -> Graph:
    """Input -> [Conv2d(cout, k, stride, pad[, groups]) -> LIF]* -> (SumPool2d) -> Flatten -> [Linear -> LIF]*
    -> Output."""
    rng = np.random.default_rng(seed)
    g = Graph(dt=1e-3)
    g.add(Node("input", "Input", {"shape": np.array(in_shape)}))
    prev, c = "input", in_shape[0]
    shape = tuple(in_shape)
    for i, spec in enumerate(convs, start=1):
        cout, k, s, p = spec[:4]
        groups = spec[4] if len(spec) > 4 else 1
        g.add(Node(f"conv{i}", "Conv2d", {"weight": _weights(rng, (cout, c // groups, k, k)), "stride": s,
                                          "padding": p, "groups": groups}))
        g.connect(prev, f"conv{i}")
        h, w = conv_out(shape[1], k, s, p), conv_out(shape[2], k, s, p)
        shape = (cout, h, w)
        g.add(_lif(f"clif{i}", shape))
        g.connect(f"conv{i}", f"clif{i}")
        prev, c = f"clif{i}", cout
    if pool:
        g.add(Node("pool", "SumPool2d", {"kernel_size": np.array([pool, pool]), "stride": np.array([pool, pool])}))
        g.connect(prev, "pool")
        prev = "pool"
        shape = (shape[0], shape[1] // pool, shape[2] // pool)
    g.add(Node("flat", "Flatten", {"start_dim": 0, "end_dim": -1}))
    g.connect(prev, "flat")
    prev, n_in = "flat", int(np.prod(shape))
    for j, n_out in enumerate(dense, start=1):
        g.add(Node(f"fc{j}", "Linear", {"weight": _weights(rng, (n_out, n_in))}))
        g.add(_lif(f"lif{j}", n_out))
        g.connect(prev, f"fc{j}")
        g.connect(f"fc{j}", f"lif{j}")
        prev, n_in = f"lif{j}", n_out
    g.add(Node("output", "Output"))
    g.connect(prev, "output")
    return g.infer_shapes()


def benchmark_graph(seed: int = 0) -> Graph:
    """About 1.1M neurons and 100M synapses, the shape of an event-camera vision SNN: a convolutional front
    end (most neurons; plain, strided and grouped convolutions) and a dense back end (int8 weights)."""
    return conv_net(
        in_shape=(2, 128, 128),
        convs=((24, 3, 1, 1), (24, 3, 1, 1, 4), (32, 3, 2, 1), (32, 3, 1, 1, 2), (64, 3, 2, 1), (16, 1, 1, 0),
               (4, 1, 1, 0)),
        dense=(1200, 1024, 10),
        seed=seed,
    )


# Hala Point (Intel 2024 press release and Loihi 2 brief: 1,152 Loihi 2 chips, 140,544 cores, 1.15 billion
# neurons, 128 billion synapses). HALA_COLUMN is one column of a tiled vision network: a 124 x 124 tile of a
# two-polarity event sensor -> four 3x3 conv layers of 16 channels, padded (the first reads the 2
# polarities) -> 8x8 sum pooling -> a fully connected layer of 64 neurons (fan-in 3600: within Loihi's
# 4096 input axons). 987,728 neurons and 109.98 M synapses per column, so 1152 columns hold 1.138 billion
# neurons and 126.7 billion synapses (99.6% of them in the convolutions, whose kernels are stored once per
# core; the dense layers' 265 M synapses need 8 bits each).
HALA_TILE, HALA_CHANNELS, HALA_CONVS, HALA_POOL, HALA_DENSE = 124, 16, 4, 8, 64
HALA_CHIPS = 1152


def hala_graph(columns: int = HALA_CHIPS, *, tile: int = HALA_TILE, seed: int = 0) -> Graph:
    """`columns` independent columns of HALA_COLUMN (see above) without per-synapse or per-neuron arrays:
    neuron parameters are scalars, conv kernels are small and the dense weights are one broadcast constant
    (np.broadcast_to, zero strides), which partition_model reads as a full matrix without materialising it.
    Nodes of column j are named c{j}_*; `tile` shrinks the columns for tests (same structure)."""
    rng = np.random.default_rng(seed)
    t, ch = tile, HALA_CHANNELS
    lif = {"tau": np.float32(2.0), "r": np.float32(1.0), "v_leak": np.float32(0.0), "v_threshold": np.float32(1.0)}
    pooled = ch * (t // HALA_POOL) ** 2
    dense_w = np.broadcast_to(np.int8(1), (HALA_DENSE, pooled))
    kernels = [_weights(rng, (ch, 2 if i == 0 else ch, 3, 3)) for i in range(HALA_CONVS)]
    g = Graph(dt=1e-3)

    def chain(*names):
        # Graph.connect checks the whole edge list for duplicates (quadratic over thousands of layers);
        # these edges are new by construction
        g.edges.extend(zip(names[:-1], names[1:], strict=True))

    for j in range(columns):
        c = f"c{j}_"
        g.add(Node(c + "in", "Input", {"shape": np.array([2, t, t])}))
        prev = c + "in"
        for i, k in enumerate(kernels, start=1):
            g.add(Node(f"{c}conv{i}", "Conv2d", {"weight": k, "stride": 1, "padding": 1}))
            g.add(Node(f"{c}lif{i}", "LIF", dict(lif)))
            chain(prev, f"{c}conv{i}", f"{c}lif{i}")
            prev = f"{c}lif{i}"
        g.add(Node(c + "pool", "SumPool2d", {"kernel_size": np.array([HALA_POOL] * 2),
                                             "stride": np.array([HALA_POOL] * 2)}))
        g.add(Node(c + "plif", "LIF", dict(lif)))
        g.add(Node(c + "flat", "Flatten", {"start_dim": 0, "end_dim": -1}))
        g.add(Node(c + "fc", "Linear", {"weight": dense_w}))
        g.add(Node(c + "out", "LIF", dict(lif)))
        g.add(Node(c + "output", "Output"))
        chain(prev, c + "pool", c + "plif", c + "flat", c + "fc", c + "out", c + "output")
    return g.infer_shapes()
