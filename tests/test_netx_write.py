"""write_netx: QGraph -> lava-dl netx .net that lava-dl's own netx.hdf5.Network runs bit for bit like the emulator.

Acceptance: QGraphs -> .net -> netx.hdf5.Network in Lava (Loihi2SimCfg fixed_pt), spikes of every layer and
v of the last layer equal the emulator's. Round trips: write -> read_netx gives the same integer arithmetic
and the same emulator output; lava-dl's own .net files -> read_netx -> write_netx give back the datasets
netx reads. Refusals name the node and the reason, and leave no file behind.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from random_qgraphs import _neuron, ensure_activity

from spikedeploy.converters.netx import netx_layers, read_netx, write_netx
from spikedeploy.errors import BackendError, RepairWarning, UnsupportedError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, SynapseParams, fields_of
from spikedeploy.targets.emulator import prepare_weights, simulate_emulator

STEPS = 30


def _spikes(rng, shape, rate=0.3, steps=STEPS):
    return (rng.random((steps, 1, *shape)) < rate).astype(np.int8)


def _nq(du, dv, vth, bias_mant=0, bias_exp=0):
    return CubaParams(du=du, dv=dv, vth=vth, bias_mant=np.asarray(bias_mant), bias_exp=bias_exp)


def _mixed_even(rng, shape, hi=127):
    w = 2 * rng.integers(-hi, hi + 1, shape)
    return w * (rng.random(shape) < 0.7)


def mlp(seed=0, delay=True):
    """24 -> 16 (CubaLIF) -> 12 (LIF) -> 8 (LIF), with what netx can hold exactly:
    fc0: mixed even weights, exp 0, bias 64*m via bias_exp 6;
    fc1: excitatory odd weights with weight_exp +1 (the file holds W << 1), bias 4*m at bias_exp 4, axonal delays;
    fc2: mixed mantissas 4*a (+2 on one synapse per row) at weight_exp -2: the floored sum equals sum(a*s) exactly,
         so the file holds the small odd integers a, which netx shifts up again (its own negative exponent)."""
    rng = np.random.default_rng(seed)
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([24])}))
    w0 = _mixed_even(rng, (16, 24))
    w1 = (2 * rng.integers(0, 64, (12, 16)) + 1) * (rng.random((12, 16)) < 0.8)
    a2 = (2 * rng.integers(-3, 3, (8, 12)) + 1)  # odd, -5..5
    w2 = 4 * a2
    w2[np.arange(8), rng.integers(0, 12, 8)] += 2  # low bits that never carry: row sum of residues 2 < 4
    q = {
        "fc0": SynapseParams(weight=w0, weight_exp=0, num_weight_bits=8, sign_mode=None),
        "fc1": SynapseParams(weight=w1, weight_exp=1, num_weight_bits=8, sign_mode="exc"),
        "fc2": SynapseParams(weight=w2, weight_exp=-2, num_weight_bits=8, sign_mode=None),
        "l0": _nq(1000, 300, 300, rng.integers(-3, 4, 16), 6),
        "l1": _nq(4095, 500, 900, 4 * rng.integers(-20, 20, 12), 4),
        "l2": _nq(4095, 200, 12, np.zeros(8, np.int64), 0),
    }
    if delay:
        q["fc1"].delay = np.repeat(rng.integers(0, 4, (12, 1)), 16, axis=1)
    for syn, neu, _n_in, n_out, cuba in (("fc0", "l0", 24, 16, True), ("fc1", "l1", 16, 12, False),
                                        ("fc2", "l2", 12, 8, False)):
        g.add(Node(syn, "Linear", {"weight": q[syn].weight.astype(float)}))
        g.add(_neuron(neu, (n_out,), cuba=cuba))
    g.add(Node("out", "Output"))
    for a, b in (("in", "fc0"), ("fc0", "l0"), ("l0", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"),
                 ("l2", "out")):
        g.connect(a, b)
    g.validate()
    x = _spikes(rng, (24,))
    qg = ensure_activity(QGraph(graph=g, target="loihi2", q=q), {"in": x})
    return qg, {"in": x}, {"fc2": a2}


def convnet(seed=0):
    """(2, 8, 8) -> conv 3x3 pad 1 -> LIF (per-channel bias) -> conv (2,3) stride (2,1) pad (0,1) groups 2
    -> CubaLIF -> flatten -> dense -> LIF."""
    rng = np.random.default_rng(seed)
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([2, 8, 8])}))
    w0 = rng.integers(-60, 90, (4, 2, 3, 3))
    w1 = rng.integers(-300, 300, (4, 2, 2, 3))  # conv weights pass netx unchanged, no 8-bit limit
    g.add(Node("c0", "Conv2d", {"weight": w0.astype(float), "stride": 1, "padding": 1}))
    g.add(_neuron("l0", (4, 8, 8)))
    g.add(Node("c1", "Conv2d", {"weight": w1.astype(float), "stride": np.array([2, 1]), "padding": np.array([0, 1]),
                                "groups": 2}))
    g.connect("in", "c0")
    g.connect("c0", "l0")
    g.connect("l0", "c1")
    g.infer_shapes()
    s1 = tuple(g.nodes["c1"].out_shape)
    g.add(_neuron("l1", s1, cuba=True))
    g.add(Node("flat", "Flatten"))
    n_flat = int(np.prod(s1))
    w2 = _mixed_even(rng, (6, n_flat))
    g.add(Node("fc", "Linear", {"weight": w2.astype(float)}))
    g.add(_neuron("l2", (6,)))
    g.add(Node("out", "Output"))
    for a, b in (("c1", "l1"), ("l1", "flat"), ("flat", "fc"), ("fc", "l2"), ("l2", "out")):
        g.connect(a, b)
    g.validate()
    q = {
        "c0": SynapseParams(weight=w0, weight_exp=0, num_weight_bits=8),
        "c1": SynapseParams(weight=w1, weight_exp=0, num_weight_bits=8),
        "fc": SynapseParams(weight=w2, weight_exp=0, num_weight_bits=8),
        "l0": _nq(4095, 800, 100, 64 * rng.integers(-20, 40, 4), 0),  # per channel, bias_exp 0
        "l1": _nq(2000, 400, 600, rng.integers(-3, 5, 4), 6),
        "l2": _nq(4095, 300, 300),
    }
    x = _spikes(rng, (2, 8, 8))
    return ensure_activity(QGraph(graph=g, target="loihi2", q=q), {"in": x}), {"in": x}, {}


def neurons(qg):
    return [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]


# ---- Lava: netx.hdf5.Network built from the written file --------------------------------------------
@pytest.fixture(scope="module")
def netx_mod():
    try:
        from spikedeploy.targets.lava.compat import netx
    except BackendError as e:  # pragma: no cover - Lava is a dev dependency
        pytest.skip(str(e))
    try:
        return netx()
    except BackendError as e:
        pytest.skip(str(e))


def run_netx(nx, path, x):
    """Run lava-dl's Network from `path` on x [T, 1, *shape] (CHW); spikes of every layer [T, n] (CHW order)
    and v of the last layer, as Lava's Monitors record them."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    net = nx.hdf5.Network(net_config=str(path))
    steps = x.shape[0]
    shp = tuple(net.inp.shape)
    data = x[:, 0].reshape(steps, *([shp[2], shp[1], shp[0]] if len(shp) == 3 else [-1]))
    if len(shp) == 3:
        data = data.transpose(0, 3, 2, 1)  # CHW -> Lava's WHC
    src = RingBuffer(data=np.moveaxis(data, 0, -1).astype(np.int32))
    src.s_out.connect(net.inp)
    mons = []
    for blk in net.layers:
        m = Monitor()
        m.probe(blk.neuron.s_out, steps)
        mons.append(m)
    mv = Monitor()
    mv.probe(net.layers[-1].neuron.v, steps)
    try:
        net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        spikes = []
        for blk, m in zip(net.layers, mons, strict=True):
            s = np.asarray(m.get_data()[blk.neuron.name]["s_out"])
            if s.ndim == 4:
                s = s.transpose(0, 3, 2, 1)  # WHC -> CHW
            spikes.append(s.reshape(steps, -1))
        v = np.asarray(mv.get_data()[net.layers[-1].neuron.name]["v"]).reshape(steps, -1)
    finally:
        net.stop()
    return spikes, v


@pytest.mark.parametrize("build", [mlp, convnet], ids=["dense-mlp", "conv-conv-flatten-dense"])
def test_lava_netx_runs_the_written_file_like_the_emulator(build, netx_mod, tmp_path):
    qg, x, _ = build()
    path = write_netx(qg, tmp_path / "net.net")
    names = neurons(qg)
    emu = simulate_emulator(qg, x, probes=names)
    spikes, v = run_netx(netx_mod, path, x["in"])
    assert len(spikes) == len(names)
    for n, s in zip(names, spikes, strict=True):
        want = emu.traces[n]["s"][:, 0].reshape(STEPS, -1)
        assert want.sum() > 0, f"{n} is silent; the comparison would prove little"
        np.testing.assert_array_equal(s, want, err_msg=n)
    np.testing.assert_array_equal(v, emu.traces[names[-1]]["v"][:, 0].reshape(STEPS, -1))


# ---- round trips -------------------------------------------------------------------------------------
def _dense_arith(q):
    """(integer weights F, 0) such that the synapse's output is exactly F @ s, when it is one."""
    p = prepare_weights(q.weight, q.sign_mode, q.num_weight_bits).astype(np.int64)
    e = int(q.weight_exp)
    return p << e if e >= 0 else p >> -e


@pytest.mark.parametrize("build", [mlp, convnet], ids=["dense-mlp", "conv-conv-flatten-dense"])
def test_write_read_gives_the_same_arithmetic_and_output(build, tmp_path):
    qg, x, known = build()
    rq = read_netx(write_netx(qg, tmp_path / "n.net"))
    ours, theirs = neurons(qg), neurons(rq)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        qa, qb = qg.q[a], rq.q[b]
        for k in ("du", "dv", "vth"):
            assert int(np.asarray(getattr(qa, k)).ravel()[0]) == getattr(qb, k), (a, k)
        shp = qg.graph.nodes[a].out_shape
        from spikedeploy.targets.loihi_arith import effective_bias, expand_param

        ba = effective_bias(expand_param(qa.bias_mant, shp, a), expand_param(qa.bias_exp, shp, a))
        bb = effective_bias(qb.bias_mant.reshape(-1), qb.bias_exp)
        np.testing.assert_array_equal(np.broadcast_to(ba, bb.shape), bb, err_msg=a)
    syn_a = [n for n, v in qg.graph.nodes.items() if v.op in ("Linear", "Affine", "Conv2d")]
    syn_b = [n for n, v in rq.graph.nodes.items() if v.op in ("Linear", "Conv2d")]
    for a, b in zip(syn_a, syn_b, strict=True):
        if qg.graph.nodes[a].op == "Conv2d":
            np.testing.assert_array_equal(rq.q[b].weight, qg.q[a].weight)
            continue
        # netx's shifted mantissas with its negative exponent compute exactly the file's integer sums
        fb = prepare_weights(rq.q[b].weight, rq.q[b].sign_mode, rq.q[b].num_weight_bits).astype(np.int64)
        eb = rq.q[b].weight_exp
        assert eb <= 0 and np.all(fb % 2**-eb == 0)
        want = known.get(a, _dense_arith(qg.q[a]))  # fc2: the odd integers the mantissas were built from
        np.testing.assert_array_equal(fb >> -eb, want, err_msg=a)
        if a in known:  # the small odd weights: netx chose a negative exponent of its own
            assert eb < 0 and rq.q[b].num_weight_bits < 8
        if qg.q[a].delay is not None:
            np.testing.assert_array_equal(rq.q[b].delay, qg.q[a].delay)
    e1 = simulate_emulator(qg, x, probes=ours)
    e2 = simulate_emulator(rq, {"input": x["in"]}, probes=theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(e1.traces[a]["s"], e2.traces[b]["s"])
        np.testing.assert_array_equal(e1.traces[a]["v"], e2.traces[b]["v"])
        np.testing.assert_array_equal(e1.traces[a]["u"], e2.traces[b]["u"])


LAVADL = [("FIXTURE", None), ("tiny.net", None), ("mnist.net", None), ("gts/ntidigits/ntidigits.net", 5),
          ("gts/pilotnet_lif/network.net", None)]


def _as_netx_reads(key, v):
    v = np.asarray(v)
    if key in ("weight", "weight_rec", "bias"):
        v = v.astype(int)
        return v.reshape(v.shape[:4]) if key == "weight" and v.ndim == 5 else v
    if key in ("stride", "padding", "dilation"):
        return np.broadcast_to(v.ravel(), (2,)) if v.size == 1 else v.ravel()
    if key == "type":
        return (v.ravel()[0] if v.ndim else v[()]).decode()
    return v.ravel()[0] if key in ("groups", "iDecay", "vDecay", "vThMant") else v


@pytest.mark.parametrize("rel,num_layers", LAVADL, ids=[r for r, _ in LAVADL])
def test_lavadl_files_written_back_hold_what_netx_reads(rel, num_layers, fixtures_dir, lavadl_netx_dir, tmp_path):
    src = fixtures_dir / "netx" / "nir_docs_network.net" if rel == "FIXTURE" else lavadl_netx_dir / rel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        qg = read_netx(src, num_layers=num_layers)
        out = write_netx(qg, tmp_path / "back.net")
        again = read_netx(out)
    with h5py.File(src) as f, h5py.File(out) as g:
        if "simulation" in f:
            assert {k: int(v[()]) for k, v in g["simulation"].items()} == {k: int(v[()]) for k, v in
                                                                           f["simulation"].items()}
        n = len(f["layer"]) if num_layers is None else num_layers
        # a file without an input layer (the NIR docs fixture) gets one, with the shape netx infers
        off = int(_as_netx_reads("type", f["layer/0/type"][()]) != "input")
        assert len(g["layer"]) == n + off
        if off:
            assert _as_netx_reads("type", g["layer/0/type"][()]) == "input"
            assert list(g["layer/0/shape"][()]) == [f["layer/0/weight"].shape[1]]
        for i in range(n):
            a, b = f[f"layer/{i}"], g[f"layer/{i + off}"]
            kind = _as_netx_reads("type", a["type"][()])
            assert _as_netx_reads("type", b["type"][()]) == kind
            keys = {"shape", "weight", "stride", "padding", "dilation", "groups"} & set(a)
            if kind == "input":
                keys = {"shape"} | ({"weight", "bias"} & set(a) if "neuron" in a else set())
            if kind in ("dense", "flatten"):  # netx reads np.prod(shape); slayer writes (N, 1, 1)
                keys.discard("shape")
                assert np.prod(b["shape"][()]) == np.prod(a["shape"][()])
            if kind == "dense":  # netx reshapes 1-D weights to (N, -1)
                keys.discard("weight")
                np.testing.assert_array_equal(b["weight"][()], _as_netx_reads("weight", a["weight"][()]).reshape(
                    int(np.prod(a["shape"][()])), -1), err_msg=f"layer {i} weight")
            for k in keys:
                np.testing.assert_array_equal(_as_netx_reads(k, b[k][()]), _as_netx_reads(k, a[k][()]),
                                              err_msg=f"layer {i} {k}")
            if "bias" in a and kind != "input":
                np.testing.assert_array_equal(_as_netx_reads("bias", b["bias"][()]) if "bias" in b else 0,
                                              _as_netx_reads("bias", a["bias"][()]), err_msg=f"layer {i} bias")
            if "delay" in a:
                want = np.clip(np.asarray(a["delay"][()]), 0, 62).astype(int)
                np.testing.assert_array_equal(b["delay"][()], want)
            if "neuron" in a:
                for k in ("iDecay", "vDecay", "vThMant"):
                    assert _as_netx_reads(k, b[f"neuron/{k}"][()]) == _as_netx_reads(k, a[f"neuron/{k}"][()])
    # and reading the written file gives back the same QGraph parameters
    assert len(again.q) == len(qg.q)  # names shift by one where an input layer was added
    for (name, qa), qb in zip(qg.q.items(), again.q.values(), strict=True):
        assert type(qa) is type(qb), name
        for k, v in fields_of(qa).items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(getattr(qb, k), v, err_msg=f"{name} {k}")
            else:
                assert getattr(qb, k) == v, (name, k)


def test_quantized_graph_without_bias_is_written(tmp_path):
    """The quantizer's output (maxabs, no bias) writes as is; read back, the emulator gives the same spikes."""
    from spikedeploy.quantize.quantizer import quantize

    def lif(name, n):
        return Node(name, "LIF", {"tau": np.full(n, 10e-3), "r": np.full(n, 10.0), "v_leak": np.zeros(n),
                                  "v_threshold": np.full(n, 0.3)})

    rng = np.random.default_rng(1)
    g = Graph.chain(Node("in", "Input", {"shape": [20]}),
                    Node("fc0", "Linear", {"weight": rng.normal(0, 0.5, (16, 20))}), lif("l0", 16),
                    Node("fc1", "Linear", {"weight": rng.normal(0, 0.5, (6, 16))}), lif("l1", 6),
                    Node("out", "Output"), dt=1e-3).validate()
    qg = quantize(g, "loihi2")
    x = _spikes(rng, (20,), 0.5)
    rq = read_netx(write_netx(qg, tmp_path / "q.net"))
    a = simulate_emulator(qg, {"in": x})
    b = simulate_emulator(rq, {"input": x})
    assert a.counts["l1"].sum() > 0
    np.testing.assert_array_equal(a.counts["l0"], b.counts["1.neuron"])
    np.testing.assert_array_equal(a.counts["l1"], b.counts["2.neuron"])


def _biased_graph(seed=2):
    """Affine (with bias) -> LIF -> Affine -> LIF: biases the quantizer puts below netx's step of 64."""
    def lif(name, n):
        return Node(name, "LIF", {"tau": np.full(n, 10e-3), "r": np.full(n, 10.0), "v_leak": np.zeros(n),
                                  "v_threshold": np.full(n, 0.3)})

    rng = np.random.default_rng(seed)
    return Graph.chain(Node("in", "Input", {"shape": [20]}),
                       Node("fc0", "Affine", {"weight": rng.normal(0, 0.5, (16, 20)), "bias": rng.normal(0, 0.02, 16)}),
                       lif("l0", 16),
                       Node("fc1", "Affine", {"weight": rng.normal(0, 0.5, (6, 16)), "bias": rng.normal(0, 0.02, 6)}),
                       lif("l1", 6), Node("out", "Output"), dt=1e-3).validate()


def test_biased_graph_quantized_for_netx_runs_in_lava_like_the_emulator(netx_mod, tmp_path):
    """Quantized as usual, the biases are finer than netx's fixed bias_exp 6 and the writer refuses them;
    quantized with bias_exp_min = 6 (what `quantize --netx` does), lava-dl runs the file bit for bit like
    the emulator runs the quantized graph."""
    from spikedeploy.converters.netx import NETX_BIAS_EXP
    from spikedeploy.quantize.quantizer import quantize

    g = _biased_graph()
    # netx runs every bias from step 0: a graph whose biases wait for their layer's first input is refused
    with pytest.raises(UnsupportedError, match="node 'l0': its bias waits 1 step.*bias_onset='step0'"):
        write_netx(quantize(g, "loihi2"), tmp_path / "late.net")
    with pytest.raises(UnsupportedError, match="multiple of 2\\^6"):
        write_netx(quantize(g, "loihi2", bias_onset="step0"), tmp_path / "fine.net")
    qg = quantize(g, "loihi2", bias_exp_min=NETX_BIAS_EXP, bias_onset="step0")
    assert qg.meta["bias_exp_min"] == NETX_BIAS_EXP
    assert all(int(qg.q[n].bias_exp) >= NETX_BIAS_EXP for n in ("l0", "l1"))
    assert any(np.any(qg.q[n].bias_mant != 0) for n in ("l0", "l1")), "no bias survived; the test proves little"
    path = write_netx(qg, tmp_path / "q.net")
    x = _spikes(np.random.default_rng(3), (20,), 0.4)
    emu = simulate_emulator(qg, {"in": x}, probes=["l0", "l1"])
    spikes, v = run_netx(netx_mod, path, x)
    for n, s in zip(("l0", "l1"), spikes, strict=True):
        want = emu.traces[n]["s"][:, 0].reshape(STEPS, -1)
        assert want.sum() > 0, f"{n} is silent"
        np.testing.assert_array_equal(s, want, err_msg=n)
    np.testing.assert_array_equal(v, emu.traces["l1"]["v"][:, 0].reshape(STEPS, -1))


def test_cli_quantize_netx_writes_both_files_or_neither(tmp_path):
    import subprocess
    import sys

    from spikedeploy.converters.nir import write_nir

    write_nir(_biased_graph(), tmp_path / "g.nir")
    cmd = [sys.executable, "-m", "spikedeploy", "quantize", str(tmp_path / "g.nir"), "-o", str(tmp_path / "q.sdq"),
           "--netx", str(tmp_path / "q.net"), "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "q.sdq").exists() and (tmp_path / "q.net").exists()
    assert read_netx(tmp_path / "q.net").graph.nodes
    # a target netx cannot hold: refused before either file is written
    r = subprocess.run([*cmd[:-5], "--target", "loihi1", "-o", str(tmp_path / "l1.sdq"), "--netx",
                        str(tmp_path / "l1.net"), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert not (tmp_path / "l1.sdq").exists() and not (tmp_path / "l1.net").exists()


# ---- refusals ----------------------------------------------------------------------------------------
def _small():
    rng = np.random.default_rng(3)
    g = Graph.chain(Node("in", "Input", {"shape": [6]}), Node("fc", "Linear", {"weight": np.ones((4, 6))}),
                    _neuron("l", (4,)), Node("out", "Output"), dt=1e-3).validate()
    q = {"fc": SynapseParams(weight=_mixed_even(rng, (4, 6)) + 2, weight_exp=0, num_weight_bits=8, sign_mode=None),
         "l": _nq(4095, 100, 50)}
    return QGraph(graph=g, target="loihi2", q=q)


def _mut(fn):
    def build():
        qg = _small()
        fn(qg)
        return qg
    return build


def _bias(qg):
    qg.q["l"].bias_mant, qg.q["l"].bias_exp = np.array([64, 32, 0, 0]), 0


def _per_neuron_dv(qg):
    qg.q["l"].dv = np.array([1, 2, 3, 4])


def _carry(qg):
    qg.q["fc"].weight, qg.q["fc"].weight_exp = np.full((4, 6), 6), -2  # 6 = 4 + 2: residues 2 * 6 >= 4


def _big(qg):
    qg.q["fc"].weight, qg.q["fc"].weight_exp, qg.q["fc"].sign_mode = np.full((4, 6), 200), 1, "exc"


def _zero(qg):
    qg.q["fc"].weight = np.zeros((4, 6), np.int64)


def _reset(qg):
    qg.q["l"].reset_interval = 10


def _delay(qg):
    qg.q["fc"].delay = np.full((4, 6), 70)


def _bias16(qg):
    qg.q["l"].bias_mant, qg.q["l"].bias_exp = np.array([30000, 0, 0, 0]), 7


def _loihi1(qg):
    qg.target = "loihi1"


def _host(qg):
    g = qg.graph
    g.add(Node("soft", "Softmax", {}, placement="host"))
    g.edges.remove(("l", "out"))
    g.connect("l", "soft")
    g.connect("soft", "out")
    g.infer_shapes()


def _branch(qg):
    g = qg.graph
    g.add(Node("fc2", "Linear", {"weight": np.ones((4, 4))}))
    g.add(_neuron("l2", (4,)))
    for a, b in (("l", "fc2"), ("fc2", "l2"), ("l2", "out")):
        g.connect(a, b)
    g.infer_shapes()


def _two_inputs(qg):
    g = qg.graph
    g.add(Node("in2", "Input", {"shape": [6]}))
    g.connect("in2", "fc")


def _recurrent(qg):
    g = qg.graph
    g.add(Node("rec", "Linear", {"weight": np.eye(4)}))
    g.connect("l", "rec")
    g.connect("rec", "l")
    g.infer_shapes()
    qg.q["rec"] = SynapseParams(weight=2 * np.eye(4, dtype=np.int64), weight_exp=0, num_weight_bits=8)


def _scale(qg):
    g = qg.graph
    g.nodes["fc"] = Node("fc", "Scale", {"scale": np.ones(6)})
    g.edges = [e for e in g.edges if e != ("fc", "l")]
    g.nodes["l"] = _neuron("l", (6,))
    g.connect("fc", "l")
    g.infer_shapes()


def _conv_bias():
    qg, _, _ = convnet()
    qg.q["l0"].bias_mant = 64 * np.arange(4 * 8 * 8).reshape(4, 8, 8)
    return qg


REFUSALS = [
    (_mut(_bias), r"node 'l' \(LIF\): bias 32 .* not a multiple of 2\^6"),
    (_mut(_per_neuron_dv), r"node 'l' \(LIF\): per-neuron dv .* one vDecay per layer"),
    (_mut(_carry), r"node 'fc' \(Linear\): weight_exp -2 floors .* can carry"),
    (_mut(_big), r"node 'fc' \(Linear\): integer weights 400\.\.400 do not survive netx's optimize_weight_bits"),
    (_mut(_zero), r"node 'fc' \(Linear\): all weights are zero"),
    (_mut(_reset), r"node 'l' \(LIF\): resets periodically .*reset_interval"),
    (_mut(_delay), r"node 'fc' \(Linear\): delays 70\.\.70 are outside netx's 0\.\.62"),
    (_mut(_bias16), r"node 'l' \(LIF\): bias .* beyond int16"),
    (_mut(_loihi1), r"quantized for 'loihi1'"),
    (_mut(_host), r"node 'soft' \(Softmax\): runs on the host"),
    (_mut(_branch), r"node 'l' \(LIF\): feeds 2 nodes"),
    (_mut(_two_inputs), r"one input; this graph has 2"),
    (_mut(_recurrent), r"node 'l' \(LIF\): recurrent connection rec -> l"),
    (_mut(_scale), r"node 'fc' \(Scale\): elementwise scaling has no netx layer"),
    (_conv_bias, r"node 'l0' \(LIF\): bias varies within a channel"),
]


@pytest.mark.parametrize("build,match", REFUSALS, ids=[m.split(":")[0][:40] for _, m in REFUSALS])
def test_refusals_name_the_node_and_leave_the_old_file(build, match, tmp_path):
    qg = build()
    p = tmp_path / "keep.net"
    p.write_bytes(b"old")
    with pytest.raises(UnsupportedError, match=match):
        write_netx(qg, p)
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.net"]


def test_the_small_graph_itself_is_writable(tmp_path):
    """The refusal cases differ from a writable graph only by what they break."""
    layers = netx_layers(_small())
    assert [lc["type"] for lc in layers] == ["input", "dense"]
    assert layers[1]["neuron"] == {"type": "CUBA", "iDecay": 4096, "vDecay": 100, "vThMant": 50}
    with h5py.File(write_netx(_small(), tmp_path / "s.net")) as f:
        assert f["layer/0/type"].dtype == np.dtype("S10") and f["layer/0/type"].shape == (1,)
        assert f["layer/1/weight"].dtype.kind == "i"
        assert "messageBits" not in f["layer/1/neuron"]
