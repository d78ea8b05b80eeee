"""Seeded random QGraphs for checking the fixed-point emulator against Lava.

Each builder returns (QGraph, inputs, info): inputs are `{input_name: [T, B, *shape]}` int arrays; info
says what the case is meant to exercise. Float node parameters are placeholders (the simulators read only
the integer `q`); shapes come from the weights.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, SynapseParams


def _neuron(name, shape, cuba=False):
    n = int(np.prod(shape))
    if cuba:
        p = {"tau_syn": np.full(n, 5.0), "tau_mem": np.full(n, 10.0), "r": np.ones(n), "v_leak": np.zeros(n),
             "v_threshold": np.ones(n)}
        node = Node(name, "CubaLIF", p)
    else:
        p = {"tau": np.full(n, 10.0), "r": np.ones(n), "v_leak": np.zeros(n), "v_threshold": np.ones(n)}
        node = Node(name, "LIF", p)
    node.meta["shape"] = tuple(shape)
    return node


def _neuron_q(rng, shape, *, cuba, vth_range=(40, 400), bias=True, per_neuron=False):
    n = int(np.prod(shape))
    q = CubaParams(du=int(rng.integers(0, 4095)) if cuba else 4095, dv=int(rng.integers(0, 4097)),
                   vth=int(rng.integers(*vth_range)), bias_mant=np.zeros(n, np.int64), bias_exp=0)
    if per_neuron:
        q.dv = rng.integers(0, 4097, n)
        q.vth = rng.integers(*vth_range, n)
        if cuba:
            q.du = rng.integers(0, 4095, n)
    if bias:
        q.bias_mant = rng.integers(-300, 300, n) * (rng.random(n) < 0.5)
        q.bias_exp = int(rng.integers(-2, 4))
    return q


def _weights(rng, n_out, n_in, sign, lo=-256, hi=256):
    w = rng.integers(lo, hi, (n_out, n_in))
    w = w * (rng.random((n_out, n_in)) < 0.6)
    if sign == "exc":
        w = np.abs(w)
    elif sign == "inh":
        w = -np.abs(w)
    return w


def _spikes(rng, steps, batch, shape, rate):
    return (rng.random((steps, batch, *shape)) < rate).astype(np.int8)


def dense_chain(seed: int, *, steps=30, batch=2, sizes=None, sign=None, cuba=None, sparse=False, delay=False,
                graded=False, reset=None):
    """Input -> (Affine -> LIF/CubaLIF) x L -> Output, with random sign modes, weight bits and exponents."""
    rng = np.random.default_rng(seed)
    sizes = sizes or [int(rng.integers(8, 24)) for _ in range(int(rng.integers(2, 4)))]
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([sizes[0]])}))
    q: dict = {}
    prev = "in"
    info = {"kind": "dense", "layers": []}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        sm = sign or str(rng.choice(["mixed", "exc", "inh", "mixed"]))
        w = _weights(rng, n_out, n_in, sm, -300, 300)
        if sm == "inh" and i == len(sizes) - 2:
            sm = "mixed"  # keep the last layer able to spike
            w = _weights(rng, n_out, n_in, sm, -300, 300)
        exp = int(rng.integers(-2, 3))
        nwb = int(rng.integers(6, 9))
        syn, neu = f"fc{i}", f"lif{i}"
        g.add(Node(syn, "Affine", {"weight": w.astype(float), "bias": np.zeros(n_out)}))
        qs = SynapseParams(weight=w, weight_exp=exp, num_weight_bits=nwb, sign_mode=None)
        if rng.random() < 0.3:
            qs.sign_mode = sm if sm != "inh" else "inh"
        if sparse and i == 0:
            qs.sparse = True
        if delay and i == len(sizes) - 2:
            qs.delay = rng.integers(0, 6, w.shape)
        q[syn] = qs
        is_cuba = bool(rng.random() < 0.5) if cuba is None else cuba
        g.add(_neuron(neu, (n_out,), is_cuba))
        # scale thresholds with the typical input so layers neither die nor saturate
        typ = max(8, int(np.abs(w).sum(axis=1).mean() * 0.3 * 2.0**exp))
        q[neu] = _neuron_q(rng, (n_out,), cuba=is_cuba, vth_range=(max(2, typ // 2), 2 * typ + 3),
                           per_neuron=bool(rng.random() < 0.3))
        if reset:  # Lava LIFReset: zero u and v at time steps = i + 1 (mod reset)
            q[neu].reset_interval, q[neu].reset_offset = reset, i + 1
        g.connect(prev, syn)
        g.connect(syn, neu)
        prev = neu
        info["layers"].append({"sign": sm, "exp": exp, "nwb": nwb, "cuba": is_cuba})
    g.add(Node("out", "Output"))
    g.connect(prev, "out")
    g.validate()
    if graded:
        x = rng.integers(0, 4, (steps, batch, sizes[0])) * (rng.random((steps, batch, sizes[0])) < 0.4)
    else:
        x = _spikes(rng, steps, batch, (sizes[0],), float(rng.uniform(0.15, 0.45)))
    return ensure_activity(QGraph(graph=g, target="loihi2", q=q), {"in": x}), {"in": x}, info


def conv_net(seed: int, *, steps=24, batch=2):
    """Input (C,H,W) -> Conv -> LIF -> Conv (stride/padding/groups) -> LIF -> Flatten -> Affine -> LIF."""
    rng = np.random.default_rng(seed)
    c0 = int(rng.choice([1, 2, 4]))
    h, w_ = int(rng.integers(6, 10)), int(rng.integers(6, 10))
    c1 = int(rng.choice([2, 4]))
    c2 = int(rng.choice([2, 4]))
    groups = int(rng.choice([1, 2]))
    k1 = int(rng.choice([3, 2]))
    s1 = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    p1 = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([c0, h, w_])}))
    w1 = rng.integers(-60, 80, (c1, c0, 3, 3))
    g.add(Node("conv0", "Conv2d", {"weight": w1.astype(float), "stride": 1, "padding": 1}))
    w2 = rng.integers(-300, 300, (c2, c1 // groups, k1, k1 + 1))
    g.add(Node("conv1", "Conv2d", {"weight": w2.astype(float), "stride": np.array(s1), "padding": np.array(p1),
                                   "groups": groups}))
    g.add(_neuron("lif0", (c1, h, w_), cuba=bool(rng.random() < 0.5)))
    g.add(Node("flat", "Flatten"))
    g.connect("in", "conv0")
    g.connect("conv0", "lif0")
    g.connect("lif0", "conv1")
    g.infer_shapes()
    shp1 = g.nodes["conv1"].out_shape
    g.add(_neuron("lif1", shp1, cuba=bool(rng.random() < 0.5)))
    g.connect("conv1", "lif1")
    g.connect("lif1", "flat")
    n_flat = int(np.prod(shp1))
    n_out = int(rng.integers(4, 10))
    w3 = _weights(rng, n_out, n_flat, "mixed")
    g.add(Node("fc", "Linear", {"weight": w3.astype(float)}))
    g.add(_neuron("lif2", (n_out,)))
    g.add(Node("out", "Output"))
    for a, b in (("flat", "fc"), ("fc", "lif2"), ("lif2", "out")):
        g.connect(a, b)
    g.validate()
    q = {
        "conv0": SynapseParams(weight=w1, weight_exp=0, num_weight_bits=8),
        # Lava Conv ignores weight_exp and num_weight_bits; give odd values to prove the emulator does too
        "conv1": SynapseParams(weight=w2, weight_exp=int(rng.integers(1, 3)), num_weight_bits=5),
        "fc": SynapseParams(weight=w3, weight_exp=int(rng.integers(-1, 2)), num_weight_bits=8),
    }
    for name, shp, cuba in (("lif0", (c1, h, w_), g.nodes["lif0"].op == "CubaLIF"),
                            ("lif1", shp1, g.nodes["lif1"].op == "CubaLIF"), ("lif2", (n_out,), False)):
        typ = {"lif0": 150, "lif1": 800, "lif2": 400}[name]
        q[name] = _neuron_q(rng, shp, cuba=cuba, vth_range=(typ // 3, typ), bias=True)
        if name == "lif0" and rng.random() < 0.5:
            q[name].bias_mant = rng.integers(-100, 200, shp[0])  # per-channel bias
    x = _spikes(rng, steps, batch, (c0, h, w_), float(rng.uniform(0.2, 0.4)))
    info = {"kind": "conv", "groups": groups, "stride": s1, "padding": p1}
    return ensure_activity(QGraph(graph=g, target="loihi2", q=q), {"in": x}), {"in": x}, info


def recurrent_net(seed: int, *, steps=30, batch=2):
    """Input -> Affine -> LIF with a recurrent Linear (LIF -> rec -> LIF) -> Affine -> LIF -> Output."""
    rng = np.random.default_rng(seed)
    n_in, n_h, n_out = int(rng.integers(8, 16)), int(rng.integers(8, 16)), int(rng.integers(4, 8))
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([n_in])}))
    w0 = _weights(rng, n_h, n_in, "mixed")
    wr = _weights(rng, n_h, n_h, "mixed", -200, 200)
    w1 = _weights(rng, n_out, n_h, "mixed")
    g.add(Node("fc0", "Affine", {"weight": w0.astype(float), "bias": np.zeros(n_h)}))
    g.add(_neuron("h", (n_h,), cuba=True))
    g.add(Node("rec", "Linear", {"weight": wr.astype(float)}))
    g.add(Node("fc1", "Affine", {"weight": w1.astype(float), "bias": np.zeros(n_out)}))
    g.add(_neuron("o", (n_out,)))
    g.add(Node("out", "Output"))
    for a, b in (("in", "fc0"), ("fc0", "h"), ("h", "rec"), ("rec", "h"), ("h", "fc1"), ("fc1", "o"), ("o", "out")):
        g.connect(a, b)
    g.validate()
    q = {
        "fc0": SynapseParams(weight=w0, weight_exp=0, num_weight_bits=8),
        "rec": SynapseParams(weight=wr, weight_exp=int(rng.integers(-1, 1)), num_weight_bits=7),
        "fc1": SynapseParams(weight=w1, weight_exp=0, num_weight_bits=8),
        "h": _neuron_q(rng, (n_h,), cuba=True, vth_range=(200, 900)),
        "o": _neuron_q(rng, (n_out,), cuba=False, vth_range=(30, 150)),
    }
    x = _spikes(rng, steps, batch, (n_in,), 0.3)
    return ensure_activity(QGraph(graph=g, target="loihi2", q=q), {"in": x}), {"in": x}, {"kind": "recurrent"}


def overflow_net(seed: int, *, steps=30, batch=2):
    """Drives u past ±2**23 (large weights, weight_exp +2, slow current decay) and v into saturation
    (threshold above the 24-bit range, large bias)."""
    rng = np.random.default_rng(seed)
    n_in, n_h, n_out = 40, 12, 6
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([n_in])}))
    w0 = rng.integers(100, 256, (n_h, n_in)) * np.where(rng.random((n_h, n_in)) < 0.8, 1, -1)
    w0[: n_h // 2] = np.abs(w0[: n_h // 2])
    w0[n_h // 2 :] = -np.abs(w0[n_h // 2 :])
    w1 = _weights(rng, n_out, n_h, "mixed")
    g.add(Node("fc0", "Affine", {"weight": w0.astype(float), "bias": np.zeros(n_h)}))
    g.add(_neuron("h", (n_h,), cuba=True))
    g.add(Node("fc1", "Affine", {"weight": w1.astype(float), "bias": np.zeros(n_out)}))
    g.add(_neuron("o", (n_out,)))
    g.add(Node("out", "Output"))
    for a, b in (("in", "fc0"), ("fc0", "h"), ("h", "fc1"), ("fc1", "o"), ("o", "out")):
        g.connect(a, b)
    g.validate()
    vth = rng.integers(20000, 150000, n_h)
    vth[:3] = 1 << 18  # never reachable: v saturates at 2**23 - 1 < vth << 6
    q = {
        "fc0": SynapseParams(weight=w0, weight_exp=2, num_weight_bits=8),
        "fc1": SynapseParams(weight=w1, weight_exp=0, num_weight_bits=8),
        "h": CubaParams(du=int(rng.integers(0, 200)), dv=int(rng.integers(0, 100)), vth=vth,
                        bias_mant=rng.integers(-4000, 4000, n_h), bias_exp=7),
        "o": CubaParams(du=4095, dv=500, vth=300, bias_mant=np.zeros(n_out, np.int64), bias_exp=0),
    }
    x = _spikes(rng, steps, batch, (n_in,), 0.5)
    return QGraph(graph=g, target="loihi2", q=q), {"in": x}, {"kind": "overflow"}


def ensure_activity(qg: QGraph, inputs, tries: int = 8) -> QGraph:
    """Lower every threshold until each neuron layer spikes (the comparison is with Lava, so using the
    emulator to pick thresholds only avoids silent, uninformative cases)."""
    from spikedeploy.targets.emulator import simulate_emulator

    names = [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]
    for _ in range(tries):
        run = simulate_emulator(qg, inputs)
        silent = [n for n in names if run.counts[n].sum() == 0]
        if not silent:
            break
        for n in names:
            vth = np.asarray(qg.q[n].vth)
            if n in silent or names.index(n) < names.index(silent[-1]):
                qg.q[n].vth = np.maximum(vth // 2, 1) if vth.ndim else max(int(vth) // 2, 1)
    return qg


def two_input_net(seed: int, *, steps=24, batch=2):
    """Two Inputs (a (C,H,W) map and a (C,L) sequence): SumPool2d -> LIF -> Flatten -> Scale, and Conv1d ->
    LIF -> Flatten -> Linear, both summed into one LIF layer."""
    rng = np.random.default_rng(seed)
    g = Graph(dt=1e-3)
    g.add(Node("img", "Input", {"shape": np.array([2, 8, 8])}))
    g.add(Node("seq", "Input", {"shape": np.array([3, 12])}))
    g.add(Node("pool", "SumPool2d", {"kernel_size": np.array(2)}))
    g.add(_neuron("p", (2, 4, 4)))
    g.add(Node("flat_p", "Flatten"))
    g.add(Node("scale", "Scale", {"scale": np.ones(32)}))
    wc = rng.integers(-100, 120, (4, 3, 3))
    g.add(Node("conv", "Conv1d", {"weight": wc.astype(float), "stride": 2, "padding": 1}))
    g.add(_neuron("c", (4, 6), cuba=True))
    g.add(Node("flat_c", "Flatten"))
    wl = _weights(rng, 32, 24, "mixed")
    g.add(Node("fc", "Linear", {"weight": wl.astype(float)}))
    g.add(_neuron("o", (32,)))
    g.add(Node("out", "Output"))
    for a, b in (("img", "pool"), ("pool", "p"), ("p", "flat_p"), ("flat_p", "scale"), ("scale", "o"),
                 ("seq", "conv"), ("conv", "c"), ("c", "flat_c"), ("flat_c", "fc"), ("fc", "o"), ("o", "out")):
        g.connect(a, b)
    g.validate()
    q = {
        "pool": SynapseParams(weight=np.ones((2, 1, 2, 2), np.int64)),  # the pool's sum: weight 1
        "p": _neuron_q(rng, (2, 4, 4), cuba=False, vth_range=(1, 3), bias=False),
        "scale": SynapseParams(weight=rng.integers(0, 200, 32), weight_exp=0),
        "conv": SynapseParams(weight=wc),
        "c": _neuron_q(rng, (4, 6), cuba=True, vth_range=(40, 120)),
        "fc": SynapseParams(weight=wl, weight_exp=0),
        "o": _neuron_q(rng, (32,), cuba=False, vth_range=(100, 400)),
    }
    x = {"img": _spikes(rng, steps, batch, (2, 8, 8), 0.4), "seq": _spikes(rng, steps, batch, (3, 12), 0.4)}
    return ensure_activity(QGraph(graph=g, target="loihi2", q=q), x), x, {"kind": "two_input"}
