"""Hand-computed fixed-point values for single neurons (no Lava needed).

The rules are Lava 0.10's PyLifModelBitAcc and Dense fixed point (../shared/notes/lava-fixed-point.md §1);
every expected number below is worked out by hand in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest
from random_qgraphs import conv_net, dense_chain, overflow_net, recurrent_net

from spikedeploy.errors import BackendError, ParameterError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, SynapseParams
from spikedeploy.targets.emulator import prepare_weights, simulate_emulator
from spikedeploy.targets.spec import NumericFormat

M = 2**23


def one_neuron(w, *, du, dv, vth, weight_exp=0, bias_mant=0, bias_exp=0, nwb=8, sign_mode=None):
    w = np.atleast_2d(np.asarray(w))
    n_in = w.shape[1]
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([n_in])}))
    g.add(Node("fc", "Linear", {"weight": w.astype(float)}))
    g.add(Node("n", "LIF", {"tau": np.ones(1), "r": np.ones(1), "v_leak": np.zeros(1), "v_threshold": np.ones(1)}))
    g.add(Node("out", "Output"))
    g.connect("in", "fc")
    g.connect("fc", "n")
    g.connect("n", "out")
    g.validate()
    q = {"fc": SynapseParams(weight=w, weight_exp=weight_exp, num_weight_bits=nwb, sign_mode=sign_mode),
         "n": CubaParams(du=du, dv=dv, vth=vth, bias_mant=np.array([bias_mant]), bias_exp=bias_exp)}
    return QGraph(graph=g, target="loihi2", q=q)


def run1(qg, spikes, steps=None, **kw):
    x = np.asarray(spikes, dtype=np.int8)
    if x.ndim == 1:
        x = x[:, None]
    r = simulate_emulator(qg, {"in": x[:, None, :]}, probes=["n"], steps=steps, **kw)
    tr = r.traces["n"]
    return tr["u"][:, 0, 0].tolist(), tr["v"][:, 0, 0].tolist(), tr["s"][:, 0, 0].tolist()


def test_decay_truncates_toward_zero_and_synapse_delays_one_step():
    # w = -1 (inhibitory, kept as is); du = 2047 -> u *= (4096 - 2048) / 4096 = 1/2, truncated toward 0.
    # The spike at step 0 reaches the neuron at step 1: u1 = -1 << 6 = -64, then -32 -16 -8 -4 -2 -1,
    # then trunc(-0.5) = 0 (a floor would stay at -1 forever). dv = 0: v sums u.
    qg = one_neuron([[-1]], du=2047, dv=0, vth=10**5)
    u, v, s = run1(qg, [1] + [0] * 9)
    assert u == [0, -64, -32, -16, -8, -4, -2, -1, 0, 0]
    assert v == [0, -64, -96, -112, -120, -124, -126, -127, -127, -127]
    assert s == [0] * 10


def test_voltage_decay_truncates_toward_zero():
    # A single input of +5 (exc weight), du = 4095 (u = 64 * a_in, no memory), dv = 1024:
    # v1 = 320; v2 = trunc(320 * 3072 / 4096) = 240; 180; 135; trunc(101.25) = 101; trunc(75.75) = 75.
    qg = one_neuron([[5]], du=4095, dv=1024, vth=10**5)
    u, v, _ = run1(qg, [1, 0, 0, 0, 0, 0, 0])
    assert u == [0, 320, 0, 0, 0, 0, 0]
    assert v == [0, 320, 240, 180, 135, 101, 75]


def test_threshold_is_strict_and_reset_clears_v_only():
    # du = 4095, dv = 4096: v = u = 64 * w each step. vth = 2 -> compared as v > 128.
    qg = one_neuron([[2]], du=4095, dv=4096, vth=2)  # v = 128: equal, no spike
    u, v, s = run1(qg, [1, 1, 1, 0])
    assert v == [0, 128, 128, 128] and s == [0, 0, 0, 0]
    # w = 3: v = 192 > 128 spikes and is reset to 0; u keeps 192
    qg = one_neuron([[3]], du=4095, dv=4096, vth=2)
    u, v, s = run1(qg, [1, 1, 1, 0])
    assert s == [0, 1, 1, 1] and v == [0, 0, 0, 0] and u == [0, 192, 192, 192]


def test_u_wraps_once_not_modulo_and_v_saturates():
    # w = 255 (exc), weight_exp = +11: a_in = 255 << 11 = 522240; 64 * a_in = 33423360 > 3 * 2**23.
    # Lava wraps a single time: 33423360 - 2**24 = 16646144, which stays above 2**23 (a modulo would
    # give -131072). v = clip(u) saturates at 2**23 - 1. vth = 2**17: vth << 6 = 2**23 > max v, no spike.
    qg = one_neuron([[255]], du=4095, dv=4096, vth=2**17, weight_exp=11)
    u, v, s = run1(qg, [1, 0])
    assert u == [0, 33423360 - 2**24]
    assert v == [0, M - 1] and s == [0, 0]
    # The same on the negative side: w = -255 (inh): -33423360 + 2**24 = -16646144; v = -(2**23 - 1).
    qg = one_neuron([[-255]], du=4095, dv=4096, vth=2**17, weight_exp=11)
    u, v, _ = run1(qg, [1, 0])
    assert u == [0, -33423360 + 2**24] and v == [0, -(M - 1)]
    # exactly +2**23 is kept, -2**23 wraps to +2**23: 64 * (256 << 9) = 2**23 (w = 256 is clipped to 255,
    # so use 2 inputs of 128: a_in = 256 << 9 = 131072)
    qg = one_neuron([[128, 128]], du=4095, dv=4096, vth=2**17, weight_exp=9, sign_mode="exc")
    u, _, _ = run1(qg, [[1, 1], [0, 0]])
    assert u == [0, M]
    qg = one_neuron([[-128, -128]], du=4095, dv=4096, vth=2**17, weight_exp=9, sign_mode="inh")
    u, _, _ = run1(qg, [[1, 1], [0, 0]])
    assert u == [0, M]


def test_u_wrap_accumulating():
    # du = -1 gives a decay factor of 4096 (no leak). 64 * (255 << 7) = 2088960 per step:
    # 2088960, 4177920, 6266880, 8355840, then 10444800 > 2**23 wraps to 10444800 - 2**24 = -6332416.
    qg = one_neuron([[255]], du=-1, dv=4096, vth=2**17, weight_exp=7)
    u, _, _ = run1(qg, [1] * 6)
    assert u == [0, 2088960, 4177920, 6266880, 8355840, -6332416]


def test_bias_mant_wraps_int16_and_bias_exp_shifts():
    # no input; du = 4095, dv = 4096 so v = u + bias each step (u = 0).
    cases = [
        (40000, 0, 40000 - 65536),  # stored as int16: -25536
        (40000, 1, (40000 - 65536) * 2),
        (-7, -1, -4),  # right shift floors: -7 >> 1 = -4
        (5000, 7, 640000),
        (-32768 - 1, 0, 32767),  # -32769 wraps to +32767
    ]
    for bm, be, want in cases:
        qg = one_neuron([[0]], du=4095, dv=4096, vth=2**17, bias_mant=bm, bias_exp=be)
        _, v, _ = run1(qg, [0, 0, 0])
        assert v == [want] * 3, (bm, be)


def test_weight_exp_shifts_the_sum_not_each_weight():
    # w = [-1, -1], weight_exp = -1: (-1 + -1) >> 1 = -1 (shifting each weight first would give -2).
    qg = one_neuron([[-1, -1]], du=4095, dv=0, vth=10**5, weight_exp=-1)
    u, _, _ = run1(qg, [[1, 1], [0, 0]])
    assert u == [0, -64]


def test_weight_preparation_matches_lava_rules():
    # MIXED, 8 bits: clip to [-256, 255], then the LSB is dropped
    assert prepare_weights(np.array([1, 3, -1, 300, -300, 254]), None, 8).tolist() == [0, 2, -2, 254, -256, 254]
    # EXC, 6 bits: k = 8 - 6 = 2
    assert prepare_weights(np.array([255, 7, 3, 0]), None, 6).tolist() == [252, 4, 0, 0]
    # INH, 7 bits: applied to -W, k = 1
    assert prepare_weights(np.array([-255, -3, -300]), None, 7).tolist() == [-254, -2, -254]
    # a given sign mode wins over the weights: EXC clips negatives to 0
    assert prepare_weights(np.array([-5, 9]), "exc", 8).tolist() == [0, 9]
    with pytest.raises(ParameterError):
        prepare_weights(np.array([1, 2]), None, 9)


def test_generic_default_format_equals_loihi2_and_rounding_changes_it():
    qg, x, _ = dense_chain(11, steps=25, batch=3)
    a = simulate_emulator(qg, x, probes=["lif0"])
    b = simulate_emulator(qg, x, probes=["lif0"], mode=NumericFormat())
    assert all(np.array_equal(a.traces["lif0"][k], b.traces["lif0"][k]) for k in "uvs")
    qg1 = one_neuron([[-1]], du=2047, dv=0, vth=10**5)
    u, _, _ = run1(qg1, [1] + [0] * 9, mode=NumericFormat(rounding="nearest"))
    # round half away from zero: -64 -32 -16 -8 -4 -2 -1, then -0.5 -> -1 and it stays there
    assert u == [0, -64, -32, -16, -8, -4, -2, -1, -1, -1]
    # fewer state bits: u wraps at 2**15 instead of 2**23. 64 * 255 * 4 = 65280 -> 65280 - 65536 = -256
    u, _, _ = run1(one_neuron([[255]], du=4095, dv=4096, vth=100, weight_exp=2), [1, 0],
                   mode=NumericFormat(state_bits=16))
    assert u == [0, -256]


@pytest.mark.parametrize("build", [dense_chain, conv_net, recurrent_net])
def test_batch_and_chunking_do_not_change_results(build):
    qg, x, _ = build(21)
    names = [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]
    whole = simulate_emulator(qg, x, probes=names)
    tiny = simulate_emulator(qg, x, probes=names, chunk_bytes=1)  # one step per chunk
    single = simulate_emulator(qg, {"in": x["in"][:, 1:2]}, probes=names)
    for n in names:
        for k in "uvs":
            assert np.array_equal(whole.traces[n][k], tiny.traces[n][k])
            assert np.array_equal(whole.traces[n][k][:, 1:2], single.traces[n][k])


def test_steps_beyond_input_see_zeros_and_errors_name_the_input():
    qg = one_neuron([[3]], du=4095, dv=4096, vth=2)
    u, _, s = run1(qg, [1, 1], steps=4)
    assert u == [0, 192, 192, 0] and s == [0, 1, 1, 0]
    with pytest.raises(BackendError, match="'in'"):
        simulate_emulator(qg, {"other": np.zeros((3, 1, 1))})
    with pytest.raises(BackendError, match="integers"):
        simulate_emulator(qg, {"in": np.full((3, 1, 1), 0.5)})


def test_compiled_program_runs_many_batches_like_fresh_runs():
    from spikedeploy.errors import InputError
    from spikedeploy.targets.emulator import compile_emulator

    qg, x, _ = dense_chain(3, batch=4)
    probes = ["lif0"]
    prog = compile_emulator(qg, probes=probes)
    for xs in (x["in"][:, :2], x["in"][:, 2:], x["in"]):  # state is reset between calls
        fresh = simulate_emulator(qg, {"in": xs}, probes=probes)
        again = simulate_emulator(prog, {"in": xs})
        np.testing.assert_array_equal(again.outputs["out"], fresh.outputs["out"])
        np.testing.assert_array_equal(again.traces["lif0"]["v"], fresh.traces["lif0"]["v"])
    with pytest.raises(InputError, match=r"input 'in' holds values up to 3 .*graded_inputs=\{'in': 3\}"):
        simulate_emulator(prog, {"in": x["in"] * 3})
    with pytest.raises(BackendError, match="compile_emulator\\(probes=...\\)"):
        simulate_emulator(prog, x, probes=["lif1"])
    graded = compile_emulator(qg, graded_inputs={"in": 3})
    np.testing.assert_array_equal(simulate_emulator(graded, {"in": x["in"] * 3}).outputs["out"],
                                  simulate_emulator(qg, {"in": x["in"] * 3}).outputs["out"])


@pytest.mark.parametrize("build", [dense_chain, recurrent_net, overflow_net])
def test_batch_split_across_threads_equals_one_thread(monkeypatch, build):
    """Slices of the batch run in parallel, each through the whole network (step by step for the
    recurrent graph); the joined result must be the single-thread one, event counters included, and a
    reused program must count each call's events afresh."""
    from spikedeploy.targets.emulator import compile_emulator, kernels

    qg, x, _ = build(4, batch=3 * 9)
    probes = [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]
    monkeypatch.setattr(kernels, "_threads", lambda: 1)
    one = simulate_emulator(qg, x, probes=probes, chunk_bytes=1 << 12)
    monkeypatch.setattr(kernels, "_threads", lambda: 3)
    prog = compile_emulator(qg, probes=probes)
    for _ in range(2):
        par = simulate_emulator(prog, x, chunk_bytes=1 << 12)
        assert par.meta["threads"] == 3 and "threads" not in one.meta
        for k in one.counts:
            np.testing.assert_array_equal(par.counts[k], one.counts[k], err_msg=k)
        np.testing.assert_array_equal(par.outputs["out"], one.outputs["out"])
        for n in probes:
            for var in "uvs":
                np.testing.assert_array_equal(par.traces[n][var], one.traces[n][var], err_msg=f"{n}.{var}")
        assert par.meta["u_wraps"] == one.meta["u_wraps"]
        assert par.meta["v_saturations"] == one.meta["v_saturations"]
    if build is overflow_net:
        assert sum(one.meta["u_wraps"].values()) > 0 and sum(one.meta["v_saturations"].values()) > 0


def test_progress_reaches_one_on_every_backend(monkeypatch):
    """simulate(progress=) reports the fraction done: per chunk (emulator, batch split or not), per step
    (float) and per sample (Lava); the values stay in [0, 1] and end at 1."""
    from spikedeploy.simulate.dispatch import simulate
    from spikedeploy.targets.emulator import kernels

    qg, x, _ = dense_chain(6, batch=18, steps=40)
    cases = [("emulator", 1, {"in": x["in"]}), ("emulator", 2, {"in": x["in"]}), ("float", 1, {"in": x["in"]}),
             ("lava", 1, {"in": x["in"][:, :2]})]
    for backend, threads, inputs in cases:
        monkeypatch.setattr(kernels, "_threads", lambda threads=threads: threads)
        seen = []
        model = qg.graph if backend == "float" else qg
        if backend == "lava":
            pytest.importorskip("lava")
        simulate(model, inputs, backend=backend, progress=seen.append)
        assert seen and all(0 <= f <= 1 for f in seen), (backend, seen)
        assert max(seen) == pytest.approx(1.0), (backend, threads, seen)
        if threads == 1:
            assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0), backend


def test_output_sums_every_layer_that_feeds_it():
    """An Output fed by two LIF layers holds the sum of their spikes, per step, sample and neuron."""
    rng = np.random.default_rng(3)
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([6])}))
    q = {}
    for name in ("a", "b"):
        w = 2 * rng.integers(-20, 60, (4, 6))
        g.add(Node(f"fc_{name}", "Linear", {"weight": w.astype(float)}))
        g.add(Node(name, "LIF", {"tau": np.ones(4), "r": np.ones(4), "v_leak": np.zeros(4),
                                 "v_threshold": np.ones(4)}))
        g.connect("in", f"fc_{name}")
        g.connect(f"fc_{name}", name)
        q[f"fc_{name}"] = SynapseParams(weight=w, weight_exp=0, num_weight_bits=8)
        q[name] = CubaParams(du=1024, dv=512, vth=int(rng.integers(20, 60)))
    g.add(Node("out", "Output"))
    g.connect("a", "out")
    g.connect("b", "out")
    g.validate()
    x = (rng.random((30, 3, 6)) < 0.5).astype(np.int8)
    r = simulate_emulator(QGraph(graph=g, target="loihi2", q=q), {"in": x}, probes=["a", "b"], chunk_bytes=256)
    sa, sb = r.traces["a"]["s"].astype(int), r.traces["b"]["s"].astype(int)
    assert sa.sum() > 0 and sb.sum() > 0 and ((sa == 1) & (sb == 1)).any()  # both fire, sometimes together
    np.testing.assert_array_equal(r.outputs["out"], sa + sb)


def test_synapse_bound_is_one_sided_for_spikes():
    # by hand: spikes (x >= 0) reach at most the positive or the negative weights of a row, graded inputs
    # of either sign reach sum |w|
    from spikedeploy.targets.emulator.stages import _row_bound

    w = np.array([[3, -5, 2], [-1, -1, 4]])
    assert _row_bound(w, signed=False) == 5  # row 0: +5 or -5; row 1: +4 or -2
    assert _row_bound(w, signed=True) == 10
    assert _row_bound(np.zeros((0, 3)), signed=False) == 0


@pytest.mark.parametrize("graded", [True, False])
def test_scale_multiplies_each_element_one_step_late(graded):
    # by hand: a Scale is a diagonal Dense, y[t] = floor(w * x[t - 1] * 2**exp) per element; spikes count as
    # 0/1, graded inputs with their sign and size
    w = np.array([4, -2, 0, 6, -8, 2])
    g = Graph(dt=1e-3)
    g.add(Node("in", "Input", {"shape": np.array([6])}))
    g.add(Node("sc", "Scale", {"scale": np.ones(6)}))
    g.add(Node("n", "LIF", {"tau": np.ones(6), "r": np.ones(6), "v_leak": np.zeros(6), "v_threshold": np.ones(6)}))
    g.add(Node("out", "Output"))
    for a, b in (("in", "sc"), ("sc", "n"), ("n", "out")):
        g.connect(a, b)
    g.validate()
    q = {"sc": SynapseParams(weight=w, weight_exp=-1, num_weight_bits=8),
         "n": CubaParams(du=4095, dv=0, vth=10**6, bias_mant=np.zeros(6, np.int64), bias_exp=0)}
    qg = QGraph(graph=g, target="loihi2", q=q)
    rng = np.random.default_rng(3)
    x = rng.integers(-5, 6, (7, 2, 6)) if graded else rng.integers(0, 2, (7, 2, 6))
    r = simulate_emulator(qg, {"in": x}, probes=["sc"])
    want = np.zeros((7, 2, 6), np.int64)
    want[1:] = np.floor(x[:-1] * w / 2)
    np.testing.assert_array_equal(r.traces["sc"]["s"], want)
