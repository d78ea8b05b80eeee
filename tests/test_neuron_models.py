"""The neurons people train with, exact in every backend.

- float: hand-computed traces of each rule (reset by subtraction with and without reset delay, zero reset
  with delay, hard/soft reset, decay_input True/False, v >= th vs v > th, CubaLIF with a bias), each also
  checked against the library that defines it (snnTorch, spikingjelly);
- fixed point: hand-computed integer traces of the emulator's programmable neuron (NeuronArith), incl. the
  proof that v >= th is v > th − 1 in integers;
- export: snnTorch defaults, Synaptic with a biased Linear, spikingjelly LIFNode/IFNode (single- and
  multi-step) give the library's spikes exactly (the export self-check), and a wrong rule is caught;
- emulator = Lava bit for bit (u, v, s) for every rule on seeded random networks and on exported models;
- refusals on targets without programmable neurons, and the IF/LIF dt warning.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import snntorch as snn
import torch
from random_qgraphs import dense_chain
from torch import nn

from spikedeploy.errors import DynamicsWarning, UnsupportedError
from spikedeploy.export import export_model
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qparams import CubaParams
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.simulate.float_ref import simulate_float
from spikedeploy.targets.emulator import simulate_emulator
from spikedeploy.targets.loihi_arith import NeuronArith

sj = pytest.importorskip("spikingjelly.activation_based.neuron")
from spikingjelly.activation_based import functional as sj_functional  # noqa: E402

# ---- float: hand-computed traces ----------------------------------------------------------------------


def _one(op, params, meta, dt=1.0):
    """Input -> Linear(1) -> one neuron -> Output."""
    nrn = Node("n", op, {k: np.asarray([v], dtype=float) for k, v in params.items()}, meta=dict(meta))
    return Graph.chain(Node("in", "Input", {"shape": [1]}), Node("fc", "Linear", {"weight": np.ones((1, 1))}), nrn,
                       Node("out", "Output"), dt=dt).validate()


def _float(g, xs):
    x = np.asarray(xs, dtype=float).reshape(-1, 1, 1)
    run = simulate_float(g, {"in": x}, probes=["n"])
    return run.traces["n"]["v"].ravel(), run.traces["n"]["s"].ravel()


LEAKY = {"tau": 2.0, "r": 2.0, "v_leak": 0.0, "v_threshold": 1.0}  # v = 0.5 v + x (snnTorch beta = 0.5, dt = 1)
X = [1.5, 0.9, 0.0, 0.3]
# v and s by hand, per rule (beta 0.5, thr 1); see each line's arithmetic
HAND = {
    # 1.5 s -> .5; .25+.9 = 1.15 s -> .15; .075; .0375+.3
    ("subtract", False): ([0.5, 0.15, 0.075, 0.3375], [1, 1, 0, 0]),
    # 1.5 s (kept); .75+.9-1 = .65; .325; .1625+.3
    ("subtract", True): ([1.5, 0.65, 0.325, 0.4625], [1, 0, 0, 0]),
    # 1.5 s -> 0; .9; .45; .225+.3
    ("zero", False): ([0.0, 0.9, 0.45, 0.525], [1, 0, 0, 0]),
    # 1.5 s (kept); v -> 0 then .9; .45; .525
    ("zero", True): ([1.5, 0.9, 0.45, 0.525], [1, 0, 0, 0]),
}


@pytest.mark.parametrize("reset,delay", list(HAND))
def test_leaky_reset_rules_by_hand_and_as_snntorch(reset, delay):
    pend = reset == "subtract" and not delay  # as the exporter marks snnTorch's rule
    v, s = _float(_one("LIF", LEAKY, {"reset": reset, "reset_delay": delay, "pending_reset": pend}), X)
    hv, hs = HAND[(reset, delay)]
    assert np.allclose(v, hv, atol=1e-12, rtol=0) and s.tolist() == hs
    # the same numbers from snnTorch itself
    lif = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism=reset, reset_delay=delay, init_hidden=True).double()
    ss, vv = [], []
    for x in X:
        ss.append(float(lif(torch.tensor([[x]], dtype=torch.float64))))
        vv.append(float(lif.mem))
    assert ss == hs and np.allclose(vv, hv, atol=1e-12, rtol=0)


def test_snntorch_subtract_without_delay_pending_reset():
    """x = [2.5, .6, 0], beta .5, thr 1. snnTorch (reset_delay=False): 2.5 s -> 1.5; the pending reset
    (1.5 > 1): .75 + .6 - 1 = .35, no spike, + 1 = 1.35; pending again: .675 - 1, no spike, + 1 = .675.
    Plain subtraction (spikingjelly-like) fires at step 1: 1.35 s -> .35; .175."""
    x = [2.5, 0.6, 0.0]
    v, s = _float(_one("LIF", LEAKY, {"reset": "subtract", "pending_reset": True}), x)
    assert np.allclose(v, [1.5, 1.35, 0.675]) and s.tolist() == [1, 0, 0]
    v, s = _float(_one("LIF", LEAKY, {"reset": "subtract"}), x)
    assert np.allclose(v, [1.5, 0.35, 0.175]) and s.tolist() == [1, 1, 0]
    lif = snn.Leaky(beta=0.5, reset_mechanism="subtract", reset_delay=False, init_hidden=True).double()
    ref = [float(lif(torch.tensor([[a]], dtype=torch.float64))) for a in x]
    assert ref == [1, 0, 0]


def test_graph_default_rule_applies_to_nodes_without_their_own():
    g = _one("LIF", LEAKY, {})
    g.reset, g.reset_delay = "subtract", True
    v, s = _float(g, X)
    assert np.allclose(v, HAND[("subtract", True)][0]) and s.tolist() == HAND[("subtract", True)][1]


def test_fire_at_equal_is_v_ge_threshold():
    g = _one("IF", {"r": 1.0, "v_threshold": 1.0}, {"fire_at_equal": True})
    assert _float(g, [0.5, 0.5, 0.5])[1].tolist() == [0, 1, 0]  # v = .5, 1.0 (= th: fires), .5
    g = _one("IF", {"r": 1.0, "v_threshold": 1.0}, {})
    assert _float(g, [0.5, 0.5, 0.5])[1].tolist() == [0, 0, 1]  # v = .5, 1.0, 1.5 (> th)


SJ_X = [1.0, 0.6, 0.8]
SJ_HAND = {
    # decay_input=True, hard reset to 0, th .5: v += (x - v)/2: .5 (>= .5 s) -> 0; .3; .3 + .25 = .55 s -> 0
    (True, 0.0): ([0.0, 0.3, 0.0], [1, 0, 1]),
    # decay_input=True, soft reset: .5 s -> 0; .3; .55 s -> .05
    (True, None): ([0.0, 0.3, 0.05], [1, 0, 1]),
    # decay_input=False, hard reset: v = v/2 + x: 1 s -> 0; .6 s -> 0; .8 s -> 0
    (False, 0.0): ([0.0, 0.0, 0.0], [1, 1, 1]),
    # decay_input=False, soft reset: 1 s -> .5; .25 + .6 = .85 s -> .35; .175 + .8 = .975 s -> .475
    (False, None): ([0.5, 0.35, 0.475], [1, 1, 1]),
}


def _sj_export(node):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(1, 1, bias=False)
            nn.init.ones_(self.fc.weight)
            self.lif = node

        def forward(self, x):
            return self.lif(self.fc(x))

    x = torch.tensor(SJ_X, dtype=torch.float32).reshape(-1, 1, 1)
    return export_model(Net(), example_inputs={"x": x}, dt=1e-3)


@pytest.mark.parametrize("decay_input,v_reset", list(SJ_HAND))
def test_spikingjelly_lif_by_hand(decay_input, v_reset):
    m = sj.LIFNode(tau=2.0, decay_input=decay_input, v_reset=v_reset, v_threshold=0.5)
    r = _sj_export(m)
    node = r.graph.nodes["lif"]
    assert node.op == "LIF" and node.meta["source_module"] == "spikingjelly.LIFNode" and node.meta["fire_at_equal"]
    assert node.meta["reset"] == ("subtract" if v_reset is None else "zero")
    assert r.check["identical"]
    run = simulate_float(r.graph, {"x": np.asarray(SJ_X).reshape(-1, 1, 1)}, probes=["lif"])
    hv, hs = SJ_HAND[(decay_input, v_reset)]
    assert np.allclose(run.traces["lif"]["v"].ravel(), hv, atol=1e-12) and run.traces["lif"]["s"].ravel().tolist() == hs
    # and spikingjelly computes the same
    sj_functional.reset_net(m)
    assert [float(m(torch.tensor([x], dtype=torch.float64))) for x in SJ_X] == [float(s) for s in hs]


def test_spikingjelly_if_maps_to_if_with_r_one_over_dt():
    r = _sj_export(sj.IFNode(v_threshold=1.0, v_reset=None))
    node = r.graph.nodes["lif"]
    assert node.op == "IF" and np.allclose(node.params["r"], 1 / 1e-3) and node.meta["reset"] == "subtract"
    run = simulate_float(r.graph, {"x": np.asarray(SJ_X).reshape(-1, 1, 1)}, probes=["lif"])
    # v: 1.0 (>= 1 fires) -> 0; .6; 1.4 fires -> .4
    assert run.traces["lif"]["s"].ravel().tolist() == [1, 0, 1]
    assert np.allclose(run.traces["lif"]["v"].ravel(), [0.0, 0.6, 0.4], atol=1e-9)


def test_cubalif_bias_enters_the_current_by_hand():
    """snnTorch Synaptic(alpha=.5, beta=.5) after a Linear with bias .4 and no input: u' = .5u + .4,
    v' = .5v + u' (NIR CubaLIF: the bias is part of the current)."""
    g = Graph.chain(Node("in", "Input", {"shape": [1]}), Node("fc", "Affine", {"weight": np.ones((1, 1)), "bias": [0.4]}),
                    Node("n", "CubaLIF", {"tau_syn": [2.0], "tau_mem": [2.0], "r": [2.0], "w_in": [2.0],
                                          "v_leak": [0.0], "v_threshold": [1.0]},
                         meta={"reset": "subtract", "reset_delay": True}),
                    Node("out", "Output"), dt=1.0).validate()
    run = simulate_float(g, {"in": np.zeros((4, 1, 1))}, probes=["n"])
    # u: .4, .6, .7, .75; v: .4, .8, 1.1 (s, kept), .55 + .75 - 1 = .3
    assert np.allclose(run.traces["n"]["u"].ravel(), [0.4, 0.6, 0.7, 0.75])
    assert np.allclose(run.traces["n"]["v"].ravel(), [0.4, 0.8, 1.1, 0.3]) and run.traces["n"]["s"].ravel().tolist() == [0, 0, 1, 0]


# ---- fixed point: hand-computed integer traces ----------------------------------------------------------


def _int_trace(a_in, *, du=4095, dv=0, vth=1, bias=0, **rule):
    na = NeuronArith(du, dv, vth, bias, 0, 1, bound_in=1e4, **rule)
    u = v = np.zeros((1, 1))
    out = []
    for a in a_in:
        u, v, s = na.step(u, v, np.full((1, 1), a * 64.0))
        out.append((int(u[0, 0]), int(v[0, 0]), int(s[0, 0])))
    return out


def test_integer_rules_by_hand():
    """du = 4095 (u = a_in << 6), dv = 0 (no leak), vth = 1 (th = 64): v grows by 64 per input."""
    a = [1, 1, 1]
    v = lambda tr: [t[1] for t in tr]  # noqa: E731
    s = lambda tr: [t[2] for t in tr]  # noqa: E731
    tr = _int_trace(a)  # Lava's LIF: 64 (not > 64); 128 s -> 0; 64
    assert v(tr) == [64, 0, 64] and s(tr) == [0, 1, 0]
    tr = _int_trace(a, reset="subtract")  # 64; 128 s -> 64; 128 s -> 64
    assert v(tr) == [64, 64, 64] and s(tr) == [0, 1, 1]
    tr = _int_trace(a, reset="subtract", reset_delay=True)  # 64; 128 s (kept); 128 + 64 - 64 = 128 s
    assert v(tr) == [64, 128, 128] and s(tr) == [0, 1, 1]
    tr = _int_trace(a, reset="zero", reset_delay=True)  # 64; 128 s (kept); 0 + 64 = 64
    assert v(tr) == [64, 128, 64] and s(tr) == [0, 1, 0]
    tr = _int_trace(a, fire_at_equal=True)  # 64 >= 64 s -> 0; each step the same
    assert v(tr) == [0, 0, 0] and s(tr) == [1, 1, 1]


def test_v_ge_th_is_v_gt_th_minus_one_in_integers():
    """For every integer v near th = vth << 6: (v >= th) == (v > th - 1), and the emulator's comparison
    threshold is th - 1 with fire_at_equal, th without."""
    for vth in (1, 7, 131071):
        th = vth << 6
        vs = np.arange(th - 3, th + 4)
        assert np.array_equal(vs >= th, vs > th - 1)
        assert float(NeuronArith(4095, 0, vth, 0, 0, 1, bound_in=1e4, fire_at_equal=True).vth[0]) == th - 1
        assert float(NeuronArith(4095, 0, vth, 0, 0, 1, bound_in=1e4).vth[0]) == th


def test_current_bias_enters_u_not_v():
    """du = 2047 (u halves), dv = 0: u = trunc(u/2) + 40 gives 40, 60, 70; v = 40, 100 (s, -> 0), 70 (s, -> 0).
    The same 40 as a v bias gives u = 0 and v = 40, 80 (s, -> 0), 40."""
    tr = _int_trace([0, 0, 0], du=2047, u_bias=40)
    assert [t[0] for t in tr] == [40, 60, 70] and [t[1] for t in tr] == [40, 0, 0] and [t[2] for t in tr] == [0, 1, 1]
    tr = _int_trace([0, 0, 0], du=2047, bias=40)
    assert [t[0] for t in tr] == [0, 0, 0] and [t[1] for t in tr] == [40, 0, 40] and [t[2] for t in tr] == [0, 1, 0]


def test_integer_pending_reset_by_hand():
    """snnTorch's subtraction without delay: a = [3, 0], th = 64, no leak. Plain: 192 s -> 128; 128 s -> 64.
    Pending: 192 s -> 128; p = 1: 128 - 64 = 64, no spike, + (1 - 0)·64 = 128."""
    tr = _int_trace([3, 0], reset="subtract")
    assert [t[1] for t in tr] == [128, 64] and [t[2] for t in tr] == [1, 1]
    tr = _int_trace([3, 0], reset="subtract", pending_reset=True)
    assert [t[1] for t in tr] == [128, 128] and [t[2] for t in tr] == [1, 0]


# ---- export: the library's spikes exactly -------------------------------------------------------------


class _Two(nn.Module):
    def __init__(self, n1, n2, bias=True):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.n1 = nn.Linear(8, 16, bias=bias), n1
        self.fc2, self.n2 = nn.Linear(16, 4, bias=bias), n2
        with torch.no_grad():
            self.fc1.weight.mul_(3)
            self.fc2.weight.mul_(3)

    def forward(self, x):
        return self.n2(self.fc2(self.n1(self.fc1(x))))


MODELS = {
    "snntorch-default-leaky": lambda: _Two(snn.Leaky(beta=0.9, init_hidden=True), snn.Leaky(beta=0.9, init_hidden=True)),
    "snntorch-synaptic-bias": lambda: _Two(snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
                                           snn.Synaptic(alpha=0.7, beta=0.8, init_hidden=True)),
    "snntorch-zero-delay-and-subtract-nodelay": lambda: _Two(snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"),
                                        snn.Leaky(beta=0.8, init_hidden=True, reset_delay=False)),
    "sj-lif-hard": lambda: _Two(sj.LIFNode(tau=2.0), sj.IFNode()),
    "sj-lif-soft-th05": lambda: _Two(sj.LIFNode(tau=2.0, v_reset=None, v_threshold=0.5), sj.IFNode(v_reset=None)),
    "sj-lif-nodecay-multistep": lambda: _Two(sj.LIFNode(tau=2.0, decay_input=False, step_mode="m"),
                                             sj.IFNode(v_reset=None, step_mode="m")),
}


def _inputs(seed=0, steps=30, batch=3):
    return {"x": torch.as_tensor((np.random.default_rng(seed).random((steps, batch, 8)) < 0.4).astype(np.float32))}


@pytest.mark.parametrize("name", list(MODELS))
def test_export_reproduces_the_library_spikes(name):
    r = export_model(MODELS[name](), example_inputs=_inputs())
    assert r.check["identical"] and r.check["spikes"] > 20, r.check
    assert r.graph.meta["provenance"]["source"] == ("spikingjelly" if name.startswith("sj") else "snntorch")
    rules = {n: (v.meta["reset"], v.meta["reset_delay"], v.meta["fire_at_equal"])
             for n, v in r.graph.nodes.items() if v.spec.family == "neuron"}
    if name.startswith("snntorch-default") or name.startswith("snntorch-synaptic"):
        assert set(rules.values()) == {("subtract", True, False)}
    if name.startswith("sj"):
        assert all(fe for _, _, fe in rules.values())


def test_export_check_catches_a_wrong_rule():
    """The check can fail: the graph of snnTorch's default Leaky with reset_delay switched off differs."""
    from spikedeploy import export as ex

    m = MODELS["snntorch-default-leaky"]()
    r = export_model(m, example_inputs=_inputs())
    g = r.graph.copy()
    for v in g.nodes.values():
        if v.op == "LIF":
            v.meta["reset_delay"] = False
    from spikedeploy.converters import torch_export as tx

    traced = tx.trace_model(m)
    recs = tx.run_steps(traced, _inputs(), 30)
    _, plan = tx.build_graph(traced, recs[0], dt=g.dt)
    _, first, bad, _ = ex._check(g, plan, _inputs(), recs, 30)
    assert first is not None and bad > 0


def test_multistep_neuron_fed_one_step_slices_equals_single_step():
    """A step_mode='m' neuron given [1, B, ...] slices keeps its state between calls: the same spikes as
    the single-step neuron (what lets the exporter run it in single-step mode)."""
    x = torch.rand(20, 3, 5, dtype=torch.float64) * 1.5
    m, s = sj.LIFNode(tau=2.0, step_mode="m").double(), sj.LIFNode(tau=2.0).double()
    a = torch.cat([m(x[t:t + 1]) for t in range(20)])
    b = torch.stack([s(x[t]) for t in range(20)])
    assert torch.equal(a, b) and a.sum() > 0


def test_reset_neurons_resets_spikingjelly_state():
    from spikedeploy.converters import torch_export as tx

    m = MODELS["sj-lif-hard"]()
    traced = tx.trace_model(m)
    r1 = tx.run_steps(traced, _inputs(), 10)
    r2 = tx.run_steps(traced, _inputs(), 10)
    assert all(torch.equal(a["n1"], b["n1"]) for a, b in zip(r1, r2, strict=True))
    assert float(m.n1.v) == 0.0  # back to its initial value, as functional.reset_net leaves it


def test_refusals_name_the_module():
    with pytest.raises(UnsupportedError, match="'n1'.*Synaptic.*reset_delay=True.*use reset_delay=False"):
        export_model(_Two(snn.Synaptic(alpha=0.5, beta=0.5, init_hidden=True, reset_mechanism="zero"),
                          snn.Leaky(beta=0.9, init_hidden=True)), example_inputs=_inputs())
    with pytest.raises(UnsupportedError, match="'n1'.*ParametricLIFNode is not supported.*LIFNode"):
        export_model(_Two(sj.ParametricLIFNode(), sj.IFNode()), example_inputs=_inputs())


def test_rules_survive_nir(tmp_path):
    from spikedeploy.converters.nir import read_nir, write_nir

    g = export_model(MODELS["sj-lif-soft-th05"](), example_inputs=_inputs()).graph
    write_nir(g, tmp_path / "m.nir")
    back = read_nir(tmp_path / "m.nir")
    for n, v in g.nodes.items():
        if v.spec.family == "neuron":
            assert {k: back.nodes[n].meta[k] for k in ("reset", "reset_delay", "fire_at_equal")} == \
                   {k: v.meta[k] for k in ("reset", "reset_delay", "fire_at_equal")}


# ---- targets ---------------------------------------------------------------------------------------------


def test_targets_without_programmable_neurons_refuse_in_one_line(tmp_path):
    g = export_model(MODELS["snntorch-default-leaky"](), example_inputs=_inputs()).graph
    with pytest.raises(UnsupportedError) as e:
        quantize(g, "loihi1")
    msg = str(e.value)
    assert "\n" not in msg and "node 'n1'" in msg and "'loihi1'" in msg and "Fix: quantize for loihi2" in msg
    toml = tmp_path / "chip.toml"
    toml.write_text('name = "mychip"\n')
    from spikedeploy.targets.fixedpoint import load_fixedpoint_target

    with pytest.raises(UnsupportedError, match="node 'n1'.*'mychip'"):
        quantize(g, load_fixedpoint_target(toml))


def test_subtract_with_v_reset_refused():
    g = _one("LIF", {**LEAKY, "v_reset": 0.2}, {"reset": "subtract"}, dt=1.0)
    with pytest.raises(UnsupportedError, match="node 'n'.*subtraction with v_reset.*Fix"):
        quantize(g, allow_approximate=True)


def test_if_layer_that_cannot_reach_threshold_at_this_dt_warns():
    g = Graph.chain(Node("in", "Input", {"shape": [4]}), Node("fc", "Linear", {"weight": np.full((3, 4), 0.5)}),
                    Node("lay", "IF", {"r": [1.0], "v_threshold": [1.0]}), Node("out", "Output"), dt=1e-4).validate()
    with pytest.warns(DynamicsWarning, match=r"node 'lay' \(IF\).*dt = 0.0001.*dt = 0.5 s"):
        quantize(g)
    g.dt = 1.0  # one full-drive step gives 2 > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", DynamicsWarning)
        quantize(g)


# ---- emulator = Lava bit for bit ----------------------------------------------------------------------------



def _neurons(qg):
    return [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]


def _same(emu, ref, names):
    for n in names:
        for k in ("u", "v", "s"):
            a, b = emu.traces[n][k], ref.traces[n][k]
            bad = np.argwhere(a != b)
            assert bad.size == 0, f"{n}.{k} differs first at {bad[0].tolist()}: {a[tuple(bad[0])]} vs {b[tuple(bad[0])]}"


# (reset, reset_delay, fire_at_equal, u_bias, pending_reset)
RULES = [("subtract", False, False, False, False), ("subtract", True, False, False, False),
         ("zero", True, False, False, False), ("zero", False, True, False, False), ("subtract", True, True, True, False),
         ("zero", False, False, True, False), ("subtract", False, True, True, False),
         ("subtract", False, False, False, True), ("subtract", False, False, True, True)]


def _equal_hits(qg, x):
    """First layer: weights 2, no leak memory (du 4095, dv 4096), no bias, vth = 2·(typical number of active
    inputs): v = 128·(active inputs) lands exactly on th = vth << 6 often, where >= and > differ."""
    w = qg.q["fc0"].weight
    qg.q["fc0"] = dataclasses.replace(qg.q["fc0"], weight=np.where(w != 0, 2, 0), weight_exp=0, sign_mode="exc",
                                      num_weight_bits=8)
    active = (x["in"] != 0).astype(float) @ (w != 0).T.astype(float)
    qg.q["lif0"] = dataclasses.replace(qg.q["lif0"], du=4095, dv=4096, bias_mant=np.zeros_like(qg.q["lif0"].bias_mant),
                                       vth=2 * max(1, int(np.median(active))))


@pytest.mark.parametrize("i,rule", list(enumerate(RULES)),
                         ids=[f"{r}-delay{d}-ge{e}-ubias{b}-pending{p}" for r, d, e, b, p in RULES])
def test_programmable_neuron_emulator_equals_lava(lava, i, rule):
    reset, delay, ge, ub, pend = rule
    qg, x, _ = dense_chain(500 + i, cuba=True if ub else None, steps=25)
    if ge:
        _equal_hits(qg, x)
    rng = np.random.default_rng(i)
    stock = {n: qg.q[n] for n in _neurons(qg)}
    for n in _neurons(qg):
        qg.q[n] = dataclasses.replace(qg.q[n], reset=reset, reset_delay=delay, fire_at_equal=ge, pending_reset=pend)
        if ub:
            qg.q[n].u_bias = rng.integers(-3000, 3000, qg.graph.nodes[n].out_shape)
    probes = _neurons(qg)
    emu = simulate_emulator(qg, x, probes=probes)
    _same(emu, lava(qg, x, probes=probes), probes)
    assert emu.counts[probes[-1]].sum() > 0
    if pend:  # the pending reset fires in this case: plain subtraction gives other traces
        for n in probes:
            qg.q[n].pending_reset = False
        plain = simulate_emulator(qg, x, probes=probes)
        assert any(not np.array_equal(plain.traces[n]["v"], emu.traces[n]["v"]) for n in probes)
    # the rule matters here: Lava's stock LIF (the parameters without the rule) gives other traces
    qg.q.update(stock)
    plain = simulate_emulator(qg, x, probes=probes)
    assert any(not np.array_equal(plain.traces[n]["v"], emu.traces[n]["v"]) for n in probes)


@pytest.mark.parametrize("name", ["snntorch-default-leaky", "snntorch-synaptic-bias", "sj-lif-soft-th05",
                                  "snntorch-zero-delay-and-subtract-nodelay"])
def test_exported_models_emulator_equals_lava(lava, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = export_model(MODELS[name](), example_inputs=_inputs()).graph
        qg = quantize(g)
    if name == "snntorch-synaptic-bias":
        assert all(qg.q[n].u_bias is not None for n in _neurons(qg))
    x = {"x": _inputs(1)["x"].numpy().astype(np.int8)}
    probes = _neurons(qg)
    emu = simulate_emulator(qg, x, probes=probes)
    _same(emu, lava(qg, x, probes=probes), probes)
    # and the quantized model is close to the float model (same spikes in most bins)
    ref = simulate_float(g, {"x": x["x"].astype(float)}, probes=probes, synapse_delay=True)
    for n in probes:
        assert (emu.traces[n]["s"] == ref.traces[n]["s"]).mean() > 0.85


def test_netx_writer_refuses_programmable_neurons(tmp_path):
    from spikedeploy.converters.netx import write_netx

    qg = quantize(export_model(MODELS["snntorch-default-leaky"](), example_inputs=_inputs()).graph,
                  bias_onset="step0")  # netx's own bias timing, so the neuron rule is what is refused
    with pytest.raises(UnsupportedError, match="node 'n1'.*programmable neuron.*reset"):
        write_netx(qg, tmp_path / "m.net")


def test_braille_cubalif_with_bias_emulator_equals_lava(lava):
    """The NIR paper's braille network (recurrent CubaLIF with synapse biases, written by snnTorch): its
    biases enter the current (u_bias) and Lava's run of our neuron equals the emulator's."""
    from paths import FIXTURES

    from spikedeploy.io.graph_files import load_any
    from spikedeploy.simulate.dispatch import random_inputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = load_any(FIXTURES / "nir-paper" / "braille_noDelay_bias_zero.nir")
        g.dt = 1e-4
        qg = quantize(g, "loihi2")
    assert any(isinstance(q, CubaParams) and q.u_bias is not None for q in qg.q.values())
    x = {k: (v != 0).astype(np.int8) for k, v in random_inputs(g, steps=30, batch=1, density=0.4, seed=3).items()}
    probes = _neurons(qg)
    emu = simulate_emulator(qg, x, probes=probes)
    _same(emu, lava(qg, x, probes=probes), probes)
    assert sum(int(emu.counts[n].sum()) for n in probes) > 0


def test_multistep_spikingjelly_model_equals_its_graph():
    """A model written in multi-step form (layer.Linear and LIFNode with step_mode='m', run on [T, B, N] at once)
    exports step by step, and the graph's float run gives the model's output spikes exactly."""
    from spikingjelly.activation_based import layer

    torch.manual_seed(0)
    m = nn.Sequential(layer.Linear(8, 16, step_mode="m"), sj.LIFNode(tau=2.0, step_mode="m"),
                      layer.Linear(16, 4, step_mode="m"), sj.LIFNode(tau=2.0, v_reset=None, v_threshold=0.5,
                                                                     step_mode="m"))
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4)
    x = _inputs(2, steps=20)["x"]
    ref = m(x).detach()
    sj_functional.reset_net(m)
    r = export_model(m, example_inputs={"input": x})
    assert r.check["identical"] and m[1].step_mode == "m"  # the caller's model is left as it was
    run = simulate_float(r.graph, {"input": x.double().numpy()})
    out = torch.as_tensor(run.outputs[r.graph.outputs[0]]).float()
    assert torch.equal(out, ref) and ref.sum() > 5
