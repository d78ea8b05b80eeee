"""Exact lowerings of spiking-transformer / fusion ops onto chip primitives (README "Operations").

Each lowering has (a) a hand-computed test that fails when its rule is broken, (b) a small snnTorch model
whose export passes the self-check (the float graph's spikes equal snnTorch's, node by node, including the
lowered AND/OR nodes), and (c) that model quantized and run by the emulator and by Lava, equal bit for bit
(u, v and spikes of every neuron at every step).
"""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from spikedeploy.errors import UnsupportedError
from spikedeploy.export import export_model
from spikedeploy.graph.align import align_branches, chip_delay
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.quantize.layer_map import lower_structure
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.simulate.float_ref import simulate_float

Z = {"reset_mechanism": "zero", "reset_delay": False}


def leaky(thr=0.3, beta=0.8):
    return snn.Leaky(beta=beta, threshold=thr, **Z)


def relay():
    """beta = 0, threshold 0.5: spikes exactly where its input is 1 (v = x each step)."""
    return snn.Leaky(beta=0.0, threshold=0.5, **Z)


# ---- models, one per lowering ---------------------------------------------------------------------

class AndNet(nn.Module):
    """Two spiking branches multiplied elementwise (a gating / attention-mask product)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 10, bias=False), nn.Linear(6, 10, bias=False)
        self.la, self.lb = leaky(), leaky()
        self.o, self.lo = nn.Linear(10, 4, bias=False), leaky(0.2, 0.9)

    def forward(self, x):
        a, _ = self.la(self.a(x))
        b, _ = self.lb(self.b(x))
        return self.lo(self.o(a * b))[0]


class OrNet(nn.Module):
    """Conv -> spikes -> overlapping, padded MaxPool2d -> Linear."""

    def __init__(self):
        super().__init__()
        self.c, self.l = nn.Conv2d(1, 3, 3, padding=1, bias=False), leaky(0.5)
        self.p = nn.MaxPool2d(3, 2, padding=1)
        self.f, self.lo = nn.Linear(3 * 4 * 4, 5, bias=False), leaky(0.3, 0.9)

    def forward(self, x):
        h, _ = self.l(self.c(x))
        return self.lo(self.f(self.p(h).flatten(1)))[0]


class ResNet(nn.Module):
    """Residual adds of spike branches: into a neuron (c = lif(a + b)) and into a Linear (o(a + c))."""

    def __init__(self):
        super().__init__()
        self.a, self.la = nn.Linear(6, 10, bias=False), leaky()
        self.b, self.lb = nn.Linear(10, 10, bias=False), leaky()
        self.lc = leaky(0.5)
        self.o, self.lo = nn.Linear(10, 4, bias=False), leaky(0.2, 0.9)

    def forward(self, x):
        a, _ = self.la(self.a(x))
        b, _ = self.lb(self.b(a))
        c, _ = self.lc(a + b)
        return self.lo(self.o(a + c))[0]


class ScaleNet(nn.Module):
    """Constant scales after a synapse (2·W x) and before one (W (0.5·s))."""

    def __init__(self):
        super().__init__()
        self.a, self.la = nn.Linear(6, 10), leaky()
        self.o, self.lo = nn.Linear(10, 4, bias=False), leaky(0.2, 0.9)

    def forward(self, x):
        a, _ = self.la(2.0 * self.a(x))
        return self.lo(self.o(a * 0.5))[0]


class PoolNet(nn.Module):
    """Conv -> AvgPool -> Leaky twice (with bias, stride, padding and dilation on the second conv)."""

    def __init__(self):
        super().__init__()
        self.c, self.p, self.l = nn.Conv2d(1, 3, 3, padding=1), nn.AvgPool2d(2), leaky()
        self.c2 = nn.Conv2d(3, 2, 3, stride=2, dilation=2, padding=1)
        self.p2, self.l2 = nn.AvgPool2d(2, 1), leaky(0.1)

    def forward(self, x):
        h, _ = self.l(self.p(self.c(x)))
        return self.l2(self.p2(self.c2(h)))[0]


class TokenNet(nn.Module):
    """Spikformer-style: conv map -> tokens x.flatten(2).transpose(1, 2) -> Linear over tokens (+ BatchNorm1d
    through transposes) -> Leaky; Q AND K; residual; token mean -> head; and tokens flattened into a Dense."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.l0 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), leaky()
        self.q, self.bn1, self.lq = nn.Linear(8, 8), nn.BatchNorm1d(8), leaky()
        self.k, self.lk = nn.Linear(8, 8, bias=False), leaky()
        self.head, self.lo = nn.Linear(8, 3), leaky(0.2, 0.9)
        self.fc, self.lf = nn.Linear(16 * 8, 3, bias=False), leaky(0.2, 0.9)
        with torch.no_grad():
            for bn in (self.bn, self.bn1):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        h, _ = self.l0(self.bn(self.conv(x)))
        t = h.flatten(2).transpose(1, 2)  # [B, N=16, D=8]
        q, _ = self.lq(self.bn1(self.q(t).transpose(1, 2)).transpose(1, 2))
        k, _ = self.lk(self.k(t))
        m = (q * k + q).mean(1)  # [B, 8]
        return self.lo(self.head(m))[0], self.lf(self.fc(k.flatten(1)))[0]


class CatNet(nn.Module):
    """Two spike maps concatenated over channels into a Conv, and flattened into a Linear."""

    def __init__(self):
        super().__init__()
        self.a, self.la = nn.Conv2d(1, 3, 3, padding=1, bias=False), leaky()
        self.b, self.lb = nn.Conv2d(1, 2, 3, padding=1, bias=False), leaky()
        self.c, self.lc = nn.Conv2d(5, 4, 3, stride=2), leaky(0.5)
        self.f, self.lo = nn.Linear(5 * 6 * 6, 3, bias=False), leaky(0.2, 0.9)

    def forward(self, x):
        a, _ = self.la(self.a(x))
        b, _ = self.lb(self.b(x))
        c, _ = self.lc(self.c(torch.cat([a, b], dim=1)))
        return c, self.lo(self.f(torch.cat((a, b), 1).flatten(1)))[0]


class CatNeuronNet(nn.Module):
    """torch.cat straight into neuron layers (per-neuron beta), whose spikes feed a Conv and a Linear."""

    def __init__(self):
        super().__init__()
        self.a, self.la = nn.Conv2d(1, 3, 3, padding=1, bias=False), leaky()
        self.b, self.lb = nn.Conv2d(1, 2, 3, padding=1, bias=False), leaky()
        self.lc = snn.Leaky(beta=torch.rand(5, 6, 6) * 0.5 + 0.4, threshold=0.5, **Z)
        self.c, self.ld = nn.Conv2d(5, 4, 3, stride=2), leaky(0.4)
        self.fa, self.fb, self.le = nn.Linear(36, 4, bias=False), nn.Linear(36, 3, bias=False), leaky()
        self.f, self.lo = nn.Linear(7, 3), leaky(0.2, 0.9)

    def forward(self, x):
        a, _ = self.la(self.a(x))
        b, _ = self.lb(self.b(x))
        c, _ = self.lc(torch.cat([a, b], dim=1))
        d, _ = self.ld(self.c(c))
        f = x.flatten(1)
        e, _ = self.le(torch.cat([self.fa(f), self.fb(f)], dim=1))
        return d, self.lo(self.f(e))[0]


MODELS = {"and": (AndNet, (6,)), "or": (OrNet, (1, 8, 8)), "residual": (ResNet, (6,)),
          "scale": (ScaleNet, (6,)), "conv_pool": (PoolNet, (1, 16, 16)), "tokens": (TokenNet, (1, 4, 4)),
          "cat": (CatNet, (1, 6, 6)), "cat_neuron": (CatNeuronNet, (1, 6, 6))}


def spikes(shape, rate=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < rate).float()


def exported(kind, steps=20, batch=3):
    cls, shp = MODELS[kind]
    torch.manual_seed(0)
    x = spikes((steps, batch, *shp))
    return export_model(cls().eval(), example_inputs={"x": x}), x


# ---- (b) + (c): every model exports exactly and runs bit-exact on emulator and Lava ---------------


@pytest.mark.parametrize("kind", list(MODELS))
def test_model_exports_exactly_and_emulator_equals_lava(lava, kind):
    from spikedeploy.targets.emulator import simulate_emulator

    r, x = exported(kind)
    assert r.check["identical"] and r.check["spikes"] > 0 and not r.deviations
    assert not [n for n, v in r.graph.nodes.items() if v.placement == "host"]  # nothing left on the host
    qg = quantize(r.graph)  # each of these was refused by the quantizer before its lowering
    probes = [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]
    xs = {"x": x.numpy()}
    emu, ref = simulate_emulator(qg, xs, probes=probes), lava(qg, xs, probes=probes)
    for n in probes:
        for k in ("u", "v", "s"):
            bad = np.argwhere(emu.traces[n][k] != ref.traces[n][k])
            assert bad.size == 0, f"{kind}: {n}.{k} differs first at {bad[0].tolist()}"
    last = [n for n in probes if n in ("lo", "l2")]
    assert last and emu.counts[last[0]].sum() > 0, f"{kind}: the last layer never spiked"
    # and the placer maps the lowered layers (independent checker: every neuron once, no core over a limit)
    from placement_checker import check_placement

    from spikedeploy.partition.placer import partition
    from spikedeploy.targets.spec import get_target

    target = get_target("loihi2")
    check_placement(qg.graph, partition(qg.graph, target, qgraph=qg), target, qgraph=qg)


# ---- (a) hand-computed rules ----------------------------------------------------------------------

class _Pair(nn.Module):
    """Two inputs relayed to spikes unchanged (beta 0, threshold 0.5), then `op(a, b)` into the output."""

    def __init__(self, op):
        super().__init__()
        self.ra, self.rb, self.op = relay(), relay(), op

    def forward(self, a, b):
        sa, _ = self.ra(a)
        sb, _ = self.rb(b)
        return self.op(sa, sb)


def test_and_is_threshold_1_5_of_two_identity_synapses():
    a = torch.tensor([1.0, 1, 0, 0]).reshape(4, 1, 1).expand(4, 1, 3).contiguous()
    b = torch.tensor([1.0, 0, 1, 0]).reshape(4, 1, 1).expand(4, 1, 3).contiguous()
    r = export_model(_Pair(lambda x, y: x * y), example_inputs={"a": a, "b": b})
    g = r.graph
    thr = [n for n, v in g.nodes.items() if v.op == "Threshold"]
    assert thr == ["mul"] and float(g.nodes["mul"].params["threshold"]) == 1.5
    assert sorted(g.nodes[p].op for p in g.predecessors("mul")) == ["Scale", "Scale"]
    assert all(float(g.nodes[p].params["scale"]) == 1.0 for p in g.predecessors("mul"))
    run = simulate_float(g, {"a": a.numpy(), "b": b.numpy()})
    # hand-computed: 1 AND 1 = 1, every other pair 0 (a threshold of 0.5 would give OR: 1, 1, 1, 0)
    np.testing.assert_array_equal(run.outputs["output"][:, 0, 0], [1, 0, 0, 0])
    assert any("AND" in w for w in r.rewrites)


def test_product_with_an_analog_value_stays_on_the_host():
    a = torch.rand(4, 1, 3)
    r = export_model(_Pair(lambda x, y: x * (y + 0.5)), example_inputs={"a": a, "b": a},
                     allow_approximate=True)
    assert "Mul" in {v.op for v in r.graph.nodes.values() if v.placement == "host"}
    assert not [v for v in r.graph.nodes.values() if v.op == "Threshold"]


class _Pool(nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.r, self.pool = relay(), pool
        self.id = nn.Conv2d(1, 1, 1, bias=False)  # identity synapse: on chip a neuron reads a synapse
        nn.init.ones_(self.id.weight)

    def forward(self, x):
        s, _ = self.r(self.id(x))
        return self.pool(s)


def test_or_is_sumpool_into_threshold_0_5_and_padding_counts_nothing():
    # one spike in the top-left corner of a 4x4 map; MaxPool2d(3, stride 2, padding 1): output (2, 2)
    x = torch.zeros(1, 1, 1, 4, 4)
    x[..., 0, 0] = 1
    x[..., 3, 3] = 1
    r = export_model(_Pool(nn.MaxPool2d(3, 2, padding=1)), example_inputs={"x": x}, steps=2)
    g = r.graph
    assert g.nodes["pool.sum"].op == "SumPool2d" and g.nodes["pool"].op == "Threshold"
    assert float(g.nodes["pool"].params["threshold"]) == 0.5
    np.testing.assert_array_equal(g.nodes["pool.sum"].params["padding"], [1, 1])
    run = simulate_float(g, {"x": x.numpy()}, steps=1)
    # hand-computed: output (i, j) covers rows/cols 2i-1..2i+1: (0,0) sees the corner spike, (1,1) rows and
    # cols 1..3 see (3,3); (0,1) covers rows -1..1, cols 1..3 and (1,0) rows 1..3, cols -1..1: nothing
    np.testing.assert_array_equal(run.outputs["output"][0, 0, 0], [[1, 0], [0, 1]])
    # and the same on the quantized chip graph (grouped Conv2d with padding into Threshold)
    from spikedeploy.targets.emulator import simulate_emulator

    t = chip_delay(g)["pool"]  # two synapses (identity conv, pooling conv) on the way: step 2 on chip
    emu = simulate_emulator(quantize(g), {"x": np.repeat(x.numpy(), t + 1, axis=0)}, probes=["pool"])
    assert t == 2 and emu.traces["pool"]["s"][:t].sum() == 0
    np.testing.assert_array_equal(emu.traces["pool"]["s"][t, 0, 0], [[1, 0], [0, 1]])


def test_maxpool_of_analog_values_stays_on_the_host():
    r = export_model(nn.Sequential(nn.MaxPool2d(2)), example_inputs={"input": torch.rand(3, 1, 1, 4, 4)},
                     allow_approximate=True)
    assert [v.op for v in r.graph.nodes.values() if v.placement == "host" and v.op != "Output"] == ["MaxPool2d"]


def test_residual_sum_becomes_one_synapse_per_source():
    r, _ = exported("residual")
    g = r.graph
    # lif(a + b): an identity Scale per spike source; o(a + c): one Linear per source with o's weight
    assert [g.nodes[p].op for p in g.predecessors("lc")] == ["Scale", "Scale"]
    w = g.nodes["o"].params["weight"]
    assert np.array_equal(g.nodes["o.src1"].params["weight"], w)
    for n, v in g.nodes.items():
        if v.spec.family == "synapse":
            assert len(g.predecessors(n)) == 1, n


class _SumConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.ra, self.rb = relay(), relay()
        self.c, self.lo = nn.Conv2d(2, 3, 3, padding=1), leaky(0.4)  # with a bias: it must be added once

    def forward(self, a, b):
        sa, _ = self.ra(a)
        sb, _ = self.rb(b)
        return self.lo(self.c(sa + sb))[0]


def test_sum_into_a_conv_keeps_the_bias_on_one_copy():
    torch.manual_seed(3)
    m = _SumConv().eval()
    with torch.no_grad():
        m.c.bias.fill_(0.3)
    r = export_model(m, example_inputs={"a": spikes((8, 2, 2, 5, 5)), "b": spikes((8, 2, 2, 5, 5), seed=1)})
    g = r.graph
    assert r.check["identical"] and r.check["spikes"] > 0
    assert g.predecessors("c") == ["ra"] and g.predecessors("c.src1") == ["rb"]
    assert g.nodes["c.src1"].params["bias"] is None and np.all(g.nodes["c"].params["bias"] == np.float32(0.3))


def _chain(*nodes):
    g = Graph.chain(*nodes, dt=1e-3)
    g.validate()
    return g


def test_scale_after_and_before_a_synapse_folds_into_its_weights():
    rng = np.random.default_rng(0)
    w1, b1, w2 = rng.normal(size=(5, 4)), rng.normal(size=5), rng.normal(size=(3, 5))
    g = _chain(Node("x", "Input", {"shape": [4]}), Node("fc", "Affine", {"weight": w1, "bias": b1}),
               Node("s", "Scale", {"scale": np.arange(1.0, 6.0)}),
               Node("l", "LIF", {"tau": 2e-3, "r": 1.0, "v_leak": 0.0, "v_threshold": 0.5}),
               Node("s2", "Scale", {"scale": 0.25}), Node("fc2", "Linear", {"weight": w2}),
               Node("l2", "LIF", {"tau": 2e-3, "r": 1.0, "v_leak": 0.0, "v_threshold": 0.1}), Node("out", "Output"))
    h = g.copy()
    done = lower_structure(h)
    assert "s" not in h.nodes and "s2" not in h.nodes and len(done) == 2
    np.testing.assert_allclose(h.nodes["fc"].params["weight"], w1 * np.arange(1.0, 6.0)[:, None])  # per output
    np.testing.assert_allclose(h.nodes["fc"].params["bias"], b1 * np.arange(1.0, 6.0))
    np.testing.assert_allclose(h.nodes["fc2"].params["weight"], w2 * 0.25)
    x = {"x": rng.random((15, 2, 4)) * 2}
    a, b = simulate_float(g, x, probes=["l", "l2"]), simulate_float(h, x, probes=["l", "l2"])
    for n in ("l", "l2"):
        np.testing.assert_array_equal(a.traces[n]["s"], b.traces[n]["s"])
        assert a.traces[n]["s"].sum() > 0


def test_conv_then_avgpool_is_one_conv():
    # hand-computed: kernel [[1, 2], [3, 4]], stride 1, then 2x2 average: the 3x3 kernel sums the four
    # shifted copies, divided by 4; stride 1·2
    g = _chain(Node("x", "Input", {"shape": [1, 5, 5]}),
               Node("c", "Conv2d", {"weight": np.array([[[[1.0, 2], [3, 4]]]]), "bias": np.array([1.0])}),
               Node("p", "AvgPool2d", {"kernel_size": 2}),
               Node("l", "Threshold", {"threshold": 1.0}), Node("out", "Output"))
    h = g.copy()
    lower_structure(h)
    assert "p" not in h.nodes and list(h.nodes["c"].params["stride"]) == [2, 2]
    np.testing.assert_array_equal(h.nodes["c"].params["weight"][0, 0], np.array([[1, 3, 2], [4, 10, 6], [3, 7, 4]]) / 4)
    assert float(h.nodes["c"].params["bias"][0]) == 1.0  # four conv outputs of bias 1, averaged
    # and on random convs with stride, padding, dilation, groups: the float runs agree
    rng = np.random.default_rng(1)
    for st, pd, dl, gr, k, ps in ((1, 1, 1, 1, 3, 2), (2, 0, 1, 2, 3, 3), (1, 2, 2, 2, 3, 2), (3, 1, 1, 1, 2, 2)):
        w = rng.normal(size=(4, 4 // gr, k, k))
        g = _chain(Node("x", "Input", {"shape": [4, 13, 13]}),
                   Node("c", "Conv2d", {"weight": w, "bias": rng.normal(size=4), "stride": st, "padding": pd,
                                        "dilation": dl, "groups": gr}),
                   Node("p", "AvgPool2d", {"kernel_size": ps, "stride": max(1, ps - 1)}),
                   Node("l", "LIF", {"tau": 2e-3, "r": 1.0, "v_leak": 0.0, "v_threshold": 0.3}), Node("out", "Output"))
        h = g.copy()
        lower_structure(h)
        assert "p" not in h.nodes
        x = {"x": rng.random((6, 2, 4, 13, 13))}
        a, b = simulate_float(g, x, probes=["l"]), simulate_float(h, x, probes=["l"])
        np.testing.assert_allclose(b.traces["l"]["v"], a.traces["l"]["v"], rtol=0, atol=1e-9)


def test_padded_pool_after_conv_is_not_merged():
    g = _chain(Node("x", "Input", {"shape": [1, 6, 6]}), Node("c", "Conv2d", {"weight": np.ones((1, 1, 2, 2))}),
               Node("p", "AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
               Node("l", "Threshold", {"threshold": 1.0}), Node("out", "Output"))
    lower_structure(g)
    assert g.nodes["p"].op == "Conv2d" and g.predecessors("p") == ["c"]  # left as pooling conv: refused later
    with pytest.raises(UnsupportedError, match="reads synapse 'c'"):
        quantize(g)


# ---- branch alignment -----------------------------------------------------------------------------

def _relay_nodes(name, thr=0.5):
    return Node(f"{name}.syn", "Scale", {"scale": 1.0}), Node(name, "Threshold", {"threshold": thr})


def _diamond():
    """x -> s0 -> t0 (spikes); t0 -> (s1 -> t1 -> s2) and t0 -> s3, both into the AND node m."""
    g = Graph(dt=1e-3)
    for n in (Node("x", "Input", {"shape": [5]}), *_relay_nodes("t0"), *_relay_nodes("t1"),
              Node("s2", "Scale", {"scale": 1.0}), Node("s3", "Scale", {"scale": 1.0}),
              Node("m", "Threshold", {"threshold": 1.5}), Node("out", "Output")):
        g.add(n)
    for a, b in (("x", "t0.syn"), ("t0.syn", "t0"), ("t0", "t1.syn"), ("t1.syn", "t1"), ("t1", "s2"), ("s2", "m"),
                 ("t0", "s3"), ("s3", "m"), ("m", "out")):
        g.connect(a, b)
    return g.validate()


def _shifted_equal(g, x, steps):
    d = chip_delay(g)
    late = max(d.values())
    z = simulate_float(g, x, steps=steps + late, probes="*")
    c = simulate_float(g, x, steps=steps + late, probes="*", synapse_delay=True)
    out = {}
    for n, v in g.nodes.items():
        if v.spec.spiking:
            out[n] = np.array_equal(c.traces[n]["s"][d[n]:d[n] + steps], z.traces[n]["s"][:steps])
    return d, out


def test_alignment_inserts_relays_and_the_chip_run_is_the_shifted_zero_delay_run():
    g = _diamond()
    x = {"x": spikes((12, 2, 5), 0.5).numpy()}
    with pytest.raises(UnsupportedError, match="node 'm'"):
        chip_delay(g)  # t1 -> s2 arrives after 3 synapse steps, t0 -> s3 after 2
    # without alignment the delayed run of m is not a shifted zero-delay run (it ANDs different steps)
    z = simulate_float(g, x, steps=16, probes=["m"])
    c = simulate_float(g, x, steps=16, probes=["m"], synapse_delay=True)
    assert not any(np.array_equal(c.traces["m"]["s"][k:k + 12], z.traces["m"]["s"][:12]) for k in range(4))
    done = align_branches(g)
    assert len(done) == 1 and g.predecessors("s3") == ["s3.relay0"]  # one relay on the shorter branch
    assert g.nodes["s3.relay0"].op == "Threshold" and float(g.nodes["s3.relay0"].params["threshold"]) == 0.5
    d, ok = _shifted_equal(g, x, 12)
    assert d["m"] == 3 and d["t0"] == 1 and all(ok.values()), ok
    assert simulate_float(g, x, probes=["m"]).traces["m"]["s"].sum() > 0


def test_exported_residual_model_is_aligned():
    r, x = exported("residual")
    assert sum("relay" in w for w in r.rewrites) == 2  # lc's a-branch (1 relay), lo's a-branch (2 relays)
    assert r.graph.meta["rewrites"] == r.rewrites
    d, ok = _shifted_equal(r.graph, {"x": x.numpy()}, 20)
    assert d["lo"] == 4 and all(ok.values()), ok


class _GradedShortcut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.la = nn.Linear(4, 4, bias=False), leaky()
        self.b, self.c, self.lc = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False), leaky()

    def forward(self, x):
        a, _ = self.la(self.a(x))
        return self.lc(self.b(a) + self.c(x))[0]


def test_graded_input_on_the_shorter_branch_is_refused_in_one_line():
    with pytest.raises(UnsupportedError) as e:
        export_model(_GradedShortcut(), example_inputs={"x": torch.rand(5, 2, 4)})
    msg = str(e.value)
    assert "\n" not in msg and "node 'lc'" in msg and "'x' (a graded Input)" in msg and "fix:" in msg
    r = export_model(_GradedShortcut(), example_inputs={"x": torch.rand(5, 2, 4)}, allow_approximate=True)
    assert any("graded Input" in d for d in r.deviations)


# ---- token layouts and concatenation --------------------------------------------------------------

def test_linear_over_tokens_is_a_kernel_1_conv1d_on_the_channel_first_layout():
    r, x = exported("tokens")
    g = r.graph
    torch.manual_seed(0)
    m = TokenNet().eval()  # the same weights as exported() builds
    # k: Linear(8, 8) over [N=16, D=8] tokens -> Conv1d weight (8, 8, 1) = W, reading the [8, 16] layout
    assert g.nodes["k"].op == "Conv1d" and g.nodes["k"].params["weight"].shape == (8, 8, 1)
    np.testing.assert_array_equal(g.nodes["k"].params["weight"][:, :, 0], m.k.weight.detach().double().numpy())
    assert g.nodes["k"].out_shape == (8, 16) and g.stats()["nodes"]["k"]["synapses"] == 16 * 8 * 8  # not 128x128
    # bn1 folded into q through the transposes: per output channel γ/√(σ²+ε)
    sc = (m.bn1.weight / torch.sqrt(m.bn1.running_var + m.bn1.eps)).detach().double().numpy()
    np.testing.assert_allclose(g.nodes["q"].params["weight"][:, :, 0], m.q.weight.detach().double().numpy() * sc[:, None])
    # token mean: grouped Conv1d, weight 1/16 per (channel, token)
    mean = [n for n, v in g.nodes.items() if v.op == "Conv1d" and n.startswith("mean")]
    assert mean and all(np.all(g.nodes[n].params["weight"] == 1 / 16) and int(g.nodes[n].params["groups"]) == 8
                        for n in mean)
    # k.flatten(1) is token-major (n·8 + d); the chip layout is d·16 + n: the permutation sits in fc's columns
    w = m.fc.weight.detach().double().numpy()
    wg = g.nodes["fc"].params["weight"]
    for d, n in ((0, 1), (3, 5), (7, 15)):
        np.testing.assert_array_equal(wg[:, d * 16 + n], w[:, n * 8 + d])
    assert r.check["identical"] and r.check["spiking_nodes"] >= 6


def test_token_major_linear_becomes_one_block_dense_or_is_refused_with_the_fix():
    class TokenMajor(nn.Module):
        def __init__(self, n, d, out=3):
            super().__init__()
            self.n, self.d = n, d
            self.a, self.la, self.b = nn.Linear(4, n * d, bias=False), leaky(), nn.Linear(d, out)

        def forward(self, x):
            s, _ = self.la(self.a(x))
            return self.b(s.reshape(-1, self.n, self.d))  # Linear over the last dim of a token-major view

    torch.manual_seed(0)
    m = TokenMajor(3, 2).eval()
    r = export_model(m, example_inputs={"x": torch.rand(3, 2, 4)})
    w = r.graph.nodes["b"].params["weight"]
    wb = m.b.weight.detach().double().numpy()
    # rows o·N + n (channel-first output) read token n's two inputs (columns 2n, 2n + 1) with W[o]
    want = np.zeros((9, 6))
    for n in range(3):
        for o in range(3):
            want[o * 3 + n, 2 * n:2 * n + 2] = wb[o]
    np.testing.assert_array_equal(w, want)
    assert r.check["identical"]
    with pytest.raises(UnsupportedError) as e:  # 64 tokens of 64: the block Dense would hold 16.8 M weights
        export_model(TokenMajor(64, 64, 64), example_inputs={"x": torch.rand(2, 1, 4)})
    msg = str(e.value)
    assert "\n" not in msg and "module 'b'" in msg and "token-major" in msg and "transpose(1, 2)" in msg
    assert "limit 4,194,304" in msg


def test_channel_concat_into_a_conv_is_split_by_input_channels():
    r, _ = exported("cat")
    g = r.graph
    torch.manual_seed(0)
    m = CatNet().eval()
    assert not [v for v in g.nodes.values() if v.op == "Concat"]
    w = m.c.weight.detach().double().numpy()
    np.testing.assert_array_equal(g.nodes["c.part0"].params["weight"], w[:, :3])
    np.testing.assert_array_equal(g.nodes["c.part1"].params["weight"], w[:, 3:])
    assert g.predecessors("c.part0") == ["la"] and g.predecessors("c.part1") == ["lb"]
    assert g.nodes["c.part1"].params["bias"] is None  # the bias once
    np.testing.assert_array_equal(g.nodes["f.part1"].params["weight"], m.f.weight.detach().double().numpy()[:, 3 * 36:])


def test_synapse_into_dense_merges_into_one_dense_exactly():
    rng = np.random.default_rng(4)
    g = _chain(Node("x", "Input", {"shape": [3, 8]}),
               Node("m", "Conv1d", {"weight": rng.normal(size=(3, 1, 8)), "groups": 3, "bias": rng.normal(size=3)}),
               Node("f", "Flatten"), Node("h", "Linear", {"weight": rng.normal(size=(2, 3))}),
               Node("l", "LIF", {"tau": 2e-3, "r": 1.0, "v_leak": 0.0, "v_threshold": 0.2}), Node("out", "Output"))
    h = g.copy()
    done = lower_structure(h)
    assert "m" not in h.nodes and h.nodes["h"].op == "Affine" and h.nodes["h"].params["weight"].shape == (2, 24)
    assert any("merged" in d for d in done)
    wc, wh = g.nodes["m"].params["weight"], g.nodes["h"].params["weight"]
    # hand: h·(conv) -> column c·8 + j holds wh[:, c]·wc[c, 0, j]; bias wh·b
    np.testing.assert_allclose(h.nodes["h"].params["weight"][:, 1 * 8 + 5], wh[:, 1] * wc[1, 0, 5])
    np.testing.assert_allclose(h.nodes["h"].params["bias"], wh @ g.nodes["m"].params["bias"])
    x = {"x": rng.random((10, 2, 3, 8))}
    a, b = simulate_float(g, x, probes=["l"]), simulate_float(h, x, probes=["l"])
    np.testing.assert_allclose(b.traces["l"]["v"], a.traces["l"]["v"], rtol=0, atol=1e-12)


class _Attention(nn.Module):
    """Linear-order spike attention q (kᵀ v) on the host, q/k/v Linear over tokens on chip."""

    def __init__(self, proj_tokens: bool):
        super().__init__()
        self.conv, self.l0 = nn.Conv2d(1, 8, 3, padding=1, bias=False), leaky()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.lq, self.lk, self.lv = leaky(), leaky(), leaky()
        self.proj_tokens = proj_tokens
        self.proj, self.lp = nn.Linear(8 if proj_tokens else 128, 8), leaky()

    def forward(self, x):
        h, _ = self.l0(self.conv(x))
        t = h.flatten(2).transpose(1, 2)
        q, _ = self.lq(self.q(t))
        k, _ = self.lk(self.k(t))
        v, _ = self.lv(self.v(t))
        a = q @ (k.transpose(-2, -1) @ v) * 0.125  # [B, 16, 8] on the host
        return self.lp(self.proj(a if self.proj_tokens else a.flatten(1)))[0]


def test_host_ops_read_token_views_in_torch_order():
    torch.manual_seed(0)
    x = spikes((10, 2, 1, 4, 4))
    r = export_model(_Attention(False).eval(), example_inputs={"x": x})
    g = r.graph
    assert r.check["identical"] and r.check["spikes"] > 0
    assert {n: v.op for n, v in g.nodes.items() if v.placement == "host" and v.op != "Output"} == \
        {"matmul": "MatMul", "matmul_1": "MatMul"}
    assert all(g.nodes[n].op == "Conv1d" for n in ("q", "k", "v"))
    # the host receives lq, lk, lv in their chip layout [8, 16]; the recorded index map reorders them
    from spikedeploy.converters import torch_export as tx

    traced = tx.trace_model(_Attention(False).eval())
    _, plan = tx.build_graph(traced, tx.run_steps(traced, {"x": x}, 1)[0], dt=1e-3)
    np.testing.assert_array_equal(plan.layouts["lk"], np.arange(128).reshape(8, 16).T)
    # a chip Linear over the host's token-major [16, 8] result is refused in one line with the fix
    with pytest.raises(UnsupportedError) as e:
        export_model(_Attention(True).eval(), example_inputs={"x": x})
    assert "\n" not in str(e.value) and "module 'proj'" in str(e.value) and "host value" in str(e.value)


def test_a_read_graph_with_a_summing_synapse_is_split_per_source():
    rng = np.random.default_rng(5)
    g = Graph(dt=1e-3)
    w = rng.normal(size=(3, 4))
    for n in (Node("x", "Input", {"shape": [4]}), Node("ia", "Scale", {"scale": 1.0}),
              Node("a", "Threshold", {"threshold": 0.5}), Node("ib", "Scale", {"scale": 1.0}),
              Node("b", "Threshold", {"threshold": 0.2}), Node("fc", "Affine", {"weight": w, "bias": np.ones(3)}),
              Node("l", "LIF", {"tau": 2e-3, "r": 1.0, "v_leak": 0.0, "v_threshold": 0.3}), Node("out", "Output")):
        g.add(n)
    for e in (("x", "ia"), ("ia", "a"), ("x", "ib"), ("ib", "b"), ("a", "fc"), ("b", "fc"), ("fc", "l"), ("l", "out")):
        g.connect(*e)
    g.validate()
    h = g.copy()
    assert any("one copy per source" in d for d in lower_structure(h))
    assert h.predecessors("fc") == ["a"] and h.predecessors("fc.src1") == ["b"]
    assert h.nodes["fc.src1"].op == "Linear" and np.array_equal(h.nodes["fc.src1"].params["weight"], w)
    x = {"x": rng.random((12, 2, 4))}
    a, b = simulate_float(g, x, probes=["l"]), simulate_float(h, x, probes=["l"])
    np.testing.assert_allclose(b.traces["l"]["v"], a.traces["l"]["v"], rtol=0, atol=1e-12)
    assert a.traces["l"]["s"].sum() > 0
    quantize(g)  # refused before: "synapse 'fc' (Affine) has 2 inputs"


def test_neuron_over_a_concatenation_is_one_layer_per_part():
    r, _ = exported("cat_neuron")
    g = r.graph
    torch.manual_seed(0)
    m = CatNeuronNet().eval()
    assert "lc" not in g.nodes and not [v for v in g.nodes.values() if v.op == "Concat"]
    assert g.nodes["lc.part0"].out_shape == (3, 6, 6) and g.nodes["lc.part1"].out_shape == (2, 6, 6)
    # each part keeps its slice of the per-neuron parameters (tau = dt / (1 - beta))
    beta = m.lc.beta.detach().clamp(0, 1).double().numpy()
    np.testing.assert_allclose(g.nodes["lc.part1"].params["tau"], 1e-3 / (1 - beta[3:]))
    assert [g.nodes[p].op for p in g.predecessors("lc.part0")] == ["Scale"]  # spikes reach neurons via synapses
    assert g.predecessors("lc.part0.in") == ["la"] and g.predecessors("lc.part1.in") == ["lb"]
    assert sorted(g.predecessors("le.part0") + g.predecessors("le.part1")) == ["fa", "fb"]
    assert r.check["identical"]
