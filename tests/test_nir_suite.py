"""NIR's test-suite constructions, and synaptic delays, on Loihi 2 (README "NIR graph constructions").

Each construction is our own equivalent, built with the `nir` package, of a graph in NIR's test suite
(nir/tests/test_readwrite.py, test_architectures.py: delay, threshold from Input, a synapse into the Output,
synapses with several inputs, branches merging in a neuron, residual, CubaLIF/CubaLI with a synapse bias, ...)
and either
- quantizes for loihi2 (with the exact rewrites it needs listed in qg.meta["rewrites"]) and runs in the
  emulator; the emulator equals the float model with the chip's synapse delays spike for spike where the
  weights sit on the chip's grid (all our LIF constructions: τ = dt, weights m/127, thresholds (k + ½)/127),
  and equals Lava bit for bit on a handful of them; or
- is refused in one line naming the node and the limit, a limit the README's table lists with its reason.

Delays (item 3 of issue 16) are checked against hand-written per-synapse delay matrices, the float model,
the same graph without its Delay nodes (so the check can fail), Lava, the partitioner's memory and the
energy model's synaptic ops.
"""

from __future__ import annotations

import re
from pathlib import Path

import nir
import numpy as np
import pytest

from spikedeploy.converters.nir import from_nir
from spikedeploy.errors import TargetLimitError, UnsupportedError
from spikedeploy.graph.qparams import FoldedParams
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.simulate.float_ref import simulate_float
from spikedeploy.targets.emulator import simulate_emulator

DT = 1e-3
A = np.array
README = Path(__file__).resolve().parents[1] / "README.md"


def grid_w(out: int, inp: int, seed: int) -> np.ndarray:
    """Weights m/127 with one entry at ±1: λ = 254 puts every weight on Loihi 2's mantissa grid (2m)."""
    m = np.random.default_rng(seed).integers(-60, 100, (out, inp)).astype(float)
    m.flat[0] = 127
    return m / 127


def lif(n, k=40, **kw):
    """τ = dt, r = 1 (v = input each step), threshold (k + ½)/127: never equal to a sum of grid weights."""
    return nir.LIF(tau=np.full(n, DT), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, (k + 0.5) / 127), **kw)


def lin(out, inp, seed):
    return nir.Linear(weight=grid_w(out, inp, seed))


def aff(out, inp, seed, bias=None):
    b = np.zeros(out) if bias is None else np.asarray(bias, dtype=float)
    return nir.Affine(weight=grid_w(out, inp, seed), bias=b)


def seq(*nodes) -> nir.NIRGraph:
    return nir.NIRGraph.from_list(*nodes)


def graph(nodes: dict, edges: list) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges)


# ---- constructions that run ------------------------------------------------------------------------
# name -> (builder, rewrites expected (substrings), exact: the float model with synapse delays equals the chip)

def _delays():
    return seq(nir.Input(A([4])), nir.Delay(A([0, 2, 5, 1]) * DT), lin(5, 4, 1), lif(5, 30), lin(3, 5, 2),
               nir.Delay(A([3, 0, 7]) * DT), lif(3, 20), nir.Output(A([3])))


RUNS = {
    # test_readwrite.test_delay: Input -> Delay -> Output
    "delay_io": (lambda: seq(nir.Input(A([3])), nir.Delay(A([1, 2, 3]) * DT), nir.Output(A([3]))),
                 ["LI readout", "identity Linear", "folded into the per-synapse delays"], True),
    "delays_pre_post": (_delays, ["per input of Linear", "per output of Linear"], True),
    # test_architectures.test_sequential, with the delay after the synapse and one delay for its biased outputs
    "sequential_delay_bias": (lambda: seq(nir.Input(A([2])), aff(3, 2, 3, bias=[10 / 127, 0, 5 / 127]),
                                          nir.Delay(A([4, 4, 4]) * DT), lif(3, 30), lin(2, 3, 4), lif(2, 10),
                                          nir.Output(A([2]))),
                              ["per output of Affine"], True),
    # test_readwrite.test_threshold: Input -> Threshold -> Output
    "threshold_from_input": (lambda: seq(nir.Input(A([3])), nir.Threshold(A([0.5, 0.5, 0.5])), nir.Output(A([3]))),
                             ["identity Scale"], True),
    # test_readwrite.test_simple_with_read_write: a synapse feeding the Output
    "synapse_into_output": (lambda: seq(nir.Input(A([3])), aff(2, 3, 5, bias=[3 / 127, 0]), nir.Output(A([2]))),
                            ["LI readout"], True),
    # test_readwrite.test_scale
    "scale_into_output": (lambda: seq(nir.Input(A([3])), nir.Scale(A([1.0, 2.0, 3.0])), nir.Output(A([3]))),
                          ["LI readout"], True),
    # test_readwrite.test_flatten: nothing on chip
    "flatten_only": (lambda: seq(nir.Input(A([2, 3])), nir.Flatten(start_dim=0, end_dim=1, input_type={"input": A([2, 3])}),
                                 nir.Output(A([6]))), [], False),
    # test_readwrite: I, IF, LI, LIF, CubaLIF after a synapse
    "integrator": (lambda: seq(nir.Input(A([3])), lin(2, 3, 6), nir.I(r=np.full(2, 1 / DT)), nir.Output(A([2]))), [], False),
    "integrate_and_fire": (lambda: seq(nir.Input(A([3])), lin(2, 3, 7),
                                       nir.IF(r=np.full(2, 1 / DT), v_threshold=np.full(2, 60.5 / 127)),
                                       nir.Output(A([2]))), [], True),
    "leaky_integrator": (lambda: seq(nir.Input(A([3])), lin(2, 3, 8),
                                     nir.LI(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2)), nir.Output(A([2]))),
                         [], False),
    "lif": (lambda: seq(nir.Input(A([3])), lin(4, 3, 9), lif(4, 30), nir.Output(A([4]))), [], True),
    # CubaLIF / CubaLI with w_in and a synapse bias (u += k_s·w_in·b: spikedeploy's programmable neuron)
    "cubalif_synapse_bias": (lambda: seq(nir.Input(A([3])), aff(4, 3, 10, bias=[0.3, -0.1, 0.2, 0.0]),
                                         nir.CubaLIF(tau_mem=np.full(4, 0.004), tau_syn=np.full(4, 0.002), r=np.ones(4),
                                                     v_leak=np.zeros(4), v_threshold=np.full(4, 0.5), w_in=np.full(4, 2.0)),
                                         nir.Output(A([4]))), [], False),
    "cubali_synapse_bias": (lambda: seq(nir.Input(A([3])), aff(2, 3, 11, bias=[0.2, -0.3]),
                                        nir.CubaLI(tau_mem=np.full(2, 0.004), tau_syn=np.full(2, 0.002), r=np.ones(2),
                                                   v_leak=np.zeros(2), w_in=np.full(2, 1.5)), nir.Output(A([2]))),
                            [], False),
    # test_architectures.test_two_independent_branches (two inputs, two outputs)
    "independent_branches": (lambda: graph(
        {"in1": nir.Input(A([2])), "a": lin(3, 2, 12), "b": nir.Delay(A([1, 0, 2]) * DT), "c": lif(3, 20),
         "in2": nir.Input(A([2])), "e": lin(2, 2, 13), "f": lif(2, 20),
         "out1": nir.Output(A([3])), "out2": nir.Output(A([2]))},
        [("in1", "a"), ("a", "b"), ("b", "c"), ("c", "out1"), ("in2", "e"), ("e", "f"), ("f", "out2")]),
        ["per output of Linear 'a'"], True),
    # test_architectures.test_two_independent_branches_merging: two LIF branches straight into a LIF junction
    "branches_merging_in_neuron": (lambda: graph(
        {"in": nir.Input(A([2])), "a": lin(3, 2, 14), "c": lif(3, 20), "e": lin(3, 2, 15), "f": lif(3, 20),
         "h": nir.LIF(tau=np.full(3, DT), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.full(3, 1.5)),
         "out": nir.Output(A([3]))},
        [("in", "a"), ("a", "c"), ("in", "e"), ("e", "f"), ("c", "h"), ("f", "h"), ("h", "out")]),
        ["identity Scale 'h.from_c'", "identity Scale 'h.from_f'"], True),
    # test_architectures.test_merge_and_split_single_output: a synapse with two inputs feeding the Output
    "junction_synapse_into_output": (lambda: graph(
        {"in": nir.Input(A([2])), "a": lin(3, 2, 16), "b": lif(3, 20), "c": lin(2, 3, 17), "d": lif(2, 10),
         "e": lin(2, 3, 18), "f": lif(2, 10), "g": lin(3, 2, 19), "out": nir.Output(A([3]))},
        [("in", "a"), ("a", "b"), ("b", "c"), ("c", "d"), ("b", "e"), ("e", "f"), ("d", "g"), ("f", "g"),
         ("g", "out")]),
        ["LI readout", "one copy per source"], True),
    # test_architectures.test_residual: synapse 'a' read by a neuron and by the junction synapse 'e'
    "residual": (lambda: graph(
        {"in": nir.Input(A([2])), "a": lin(3, 2, 20), "b": lif(3, 20), "c": lin(3, 3, 21), "d": lif(3, 20),
         "e": lin(2, 3, 22), "f": lif(2, 20), "out": nir.Output(A([2]))},
        [("in", "a"), ("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("a", "e"), ("e", "f"), ("f", "out")]),
        ["one copy per source", "one copy per reader", "merged into"], False),  # merged weights W_B·W_A are off the grid
    # test_architectures.test_complex: synapse chains with several inputs, a synapse into the Output
    "complex": (lambda: graph(
        {"in": nir.Input(A([1])), "a": lin(3, 1, 23), "b": lif(3, 20), "c": lif(3, 40), "d": lin(2, 3, 24),
         "e": lin(2, 3, 25), "f": lin(2, 2, 26), "out": nir.Output(A([2]))},
        [("in", "a"), ("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("c", "e"), ("d", "f"), ("e", "f"),
         ("f", "out")]),
        ["LI readout", "one copy per source", "one copy per reader", "merged into"], False),  # merged weights W_B·W_A are off the grid
    # v_reset != 0: the state shifted by −v_reset, started at −v_reset when the layer's first input arrives
    "v_reset_integrate_and_fire": (lambda: seq(nir.Input(A([3])), lin(2, 3, 36),
                                               nir.IF(r=np.full(2, 1 / DT), v_threshold=np.full(2, 60.5 / 127),
                                                      v_reset=np.full(2, -50 / 127)), nir.Output(A([2]))),
                                   [], True),
    "v_reset_lif": (lambda: seq(nir.Input(A([3])), lin(2, 3, 33),
                                nir.LIF(tau=np.full(2, 0.004), r=np.ones(2), v_leak=np.zeros(2),
                                        v_threshold=np.full(2, 0.3), v_reset=np.full(2, 0.2)), nir.Output(A([2]))),
                    [], False),
    # overlapping, unpadded pooling before an unpadded Conv2d (the NIR paper's CNNs pool then convolve)
    "pooling_overlapping_into_conv": (lambda: seq(
        nir.Input(A([2, 7, 7])), nir.SumPool2d(kernel_size=A([3, 3]), stride=A([2, 2]), padding=A([0, 0])),
        nir.Conv2d(input_shape=(3, 3), weight=np.random.default_rng(39).normal(0, 1, (2, 2, 2, 2)), stride=1,
                   padding=0, dilation=1, groups=1, bias=np.zeros(2)), lif((2, 2, 2)), nir.Output(A([2, 2, 2]))),
        ["merged into Conv2d 'conv2d' after it"], False),
    # test_readwrite.test_nested with a spiking neuron: a LIF recurrent through a nested Delay subgraph
    "lif_recurrent_delay": (lambda: graph(
        {"in": nir.Input(A([2])), "w": lin(2, 2, 38), "a": lif(2, 60), "b": _nested_delay(), "out": nir.Output(A([2]))},
        [("in", "w"), ("w", "a"), ("a", "b"), ("b", "a"), ("a", "out")]),
        ["identity Linear 'b.b.identity'", "folded into the per-synapse delays"], True),
    # SumPool2d into the Output (test_ir's pooling nodes): pooling into neurons is a grouped Conv2d
    "sumpool_into_output": (lambda: seq(nir.Input(A([1, 4, 4])), nir.SumPool2d(kernel_size=A([2, 2]), stride=A([2, 2]),
                                                                             padding=A([0, 0])), nir.Output(A([1, 2, 2]))),
                            ["LI readout", "grouped Conv2d"], True),
}


# ---- constructions refused with a chip limit --------------------------------------------------------
# name -> (builder, error class, message pattern, the README table row that documents the limit)

def _nested_delay():
    """test_readwrite.test_nested's subgraph: Input -> Delay -> Output, used as one node."""
    return graph({"a": nir.Input(A([2])), "b": nir.Delay(A([1, 2]) * DT), "c": nir.Output(A([2]))},
                 [("a", "b"), ("b", "c")])


def _conv_delay():
    return seq(nir.Input(A([1, 4, 4])),
               nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3)) / 9, stride=1, padding=1, dilation=1,
                          groups=1, bias=np.zeros(2)),
               nir.Delay(np.full((2, 4, 4), 2 * DT)), lif((2, 4, 4)), nir.Output(A([2, 4, 4])))


REFUSED = {
    "delay_beyond_max": (lambda: seq(nir.Input(A([2])), nir.Delay(A([1, 63]) * DT), lin(2, 2, 30), lif(2),
                                     nir.Output(A([2]))),
                         TargetLimitError, r"node 'delay' \(Delay\): delay 63 steps exceeds .*limit of 62", "delay > 62 steps"),
    "delay_not_whole_steps": (lambda: seq(nir.Input(A([2])), nir.Delay(A([0.5, 1]) * DT), lin(2, 2, 31), lif(2),
                                          nir.Output(A([2]))),
                              UnsupportedError, r"node 'delay' \(Delay\): delays must be non-negative whole multiples",
                              "delay not a whole number of steps"),
    "delay_after_conv": (_conv_delay, UnsupportedError, r"Lava's Conv process has no delays", "Delay next to a Conv"),
    # test_architectures.test_sequential as written: Affine (biased) -> Delay with different delays -> LIF
    "delayed_bias_differs": (lambda: seq(nir.Input(A([2])), aff(3, 2, 32, bias=[0.1, 0.2, 0.3]),
                                         nir.Delay(A([5, 1, 2]) * DT), lif(3), nir.Output(A([3]))),
                             UnsupportedError, r"delays \[1, 2, 5\] differ between outputs of Affine", "delayed bias"),
    "delayed_bias_and_leak": (lambda: seq(nir.Input(A([2])), aff(3, 2, 37, bias=[0.1, 0.2, 0.3]),
                                          nir.Delay(A([3, 3, 3]) * DT),
                                          nir.LIF(tau=np.full(3, 0.01), r=np.ones(3), v_leak=np.full(3, 0.1),
                                                  v_threshold=np.ones(3)), nir.Output(A([3]))),
                              UnsupportedError, r"delays the bias of Affine 'affine' by 3 steps, but 'lif' also has "
                                                r"v_leak", "delayed bias"),
    "tau_beyond_8192_dt": (lambda: seq(nir.Input(A([3])), lin(2, 3, 34),
                                       nir.LIF(tau=np.full(2, 8200 * DT), r=np.ones(2), v_leak=np.zeros(2),
                                               v_threshold=np.ones(2)), nir.Output(A([2]))),
                           UnsupportedError, r"node 'lif': tau > 8192·dt on 2 neuron\(s\); the 12-bit decay .* rounds to 0", "τ > 8192·dt"),
    "pooling_overlapping_before_conv": (lambda: seq(
        nir.Input(A([2, 6, 6])), nir.SumPool2d(kernel_size=A([3, 3]), stride=A([2, 2]), padding=A([1, 1])),
        nir.Conv2d(input_shape=(3, 3), weight=np.ones((2, 2, 2, 2)), stride=1, padding=0, dilation=1, groups=1,
                   bias=np.zeros(2)), lif((2, 2, 2)), nir.Output(A([2, 2, 2]))),
        UnsupportedError, r"node 'sumpool2d' \(SumPool2d\): pooling cannot be folded", "pooling not foldable"),
    # test_readwrite.test_nested: an integrator recurrent through a Delay (I never spikes on chip)
    "integrator_recurrent_delay": (lambda: graph(
        {"in": nir.Input(A([2])), "w": lin(2, 2, 35), "a": nir.I(r=np.ones(2)), "b": _nested_delay(),
         "out": nir.Output(A([2]))},
        [("in", "w"), ("w", "a"), ("a", "b"), ("b", "a"), ("a", "out")]),
        UnsupportedError, r"reads 'a' \(I\), a never-spiking readout", "a synapse reading I / LI / CubaLI"),
}


def _inputs(g, T=14, B=2, seed=0):
    rng = np.random.default_rng(seed)
    return {n: (rng.random((T, B, *g.nodes[n].out_shape)) < 0.5).astype(np.float32) for n in g.inputs}


def _padded(xs, extra):
    return {k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) for k, v in xs.items()}


def _quantized(name):
    g = from_nir(RUNS[name][0]())
    g.dt = DT
    return g, quantize(g, "loihi2")


@pytest.mark.parametrize("name", list(RUNS))
def test_construction_quantizes_and_runs(name):
    _, want, exact = RUNS[name]
    g, qg = _quantized(name)
    rewrites = " | ".join(qg.meta["rewrites"])
    for w in want:
        assert w in rewrites, f"{name}: rewrite '{w}' missing from {qg.meta['rewrites']}"
    assert not qg.deviations
    xs = _padded(_inputs(g), 12)  # the inputs reach the deepest layer (depth + delays) within the run
    neurons = [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]
    emu = simulate_emulator(qg, xs, probes=neurons)
    # (a) the rewritten graph (qg.graph keeps the float parameters) is the original one: same spikes and
    # outputs in the zero-delay float model
    orig = [n for n in neurons if n in g.nodes]
    f0, f1 = simulate_float(g, xs, probes=orig), simulate_float(qg.graph, xs, probes=orig)
    for n in orig:
        for k in f0.traces[n]:
            np.testing.assert_allclose(f1.traces[n][k], f0.traces[n][k], rtol=1e-9, atol=1e-9, err_msg=f"{name}: {n}.{k}")
    for o in g.outputs:
        np.testing.assert_allclose(f1.outputs[o], f0.outputs[o], rtol=1e-9, atol=1e-9, err_msg=f"{name}: {o}")
    if not exact:
        return
    # (b) the chip equals the float model with the chip's synapse delays, spike for spike
    ref = simulate_float(qg.graph, xs, probes=neurons, synapse_delay=True, bias_onset=True)
    spiking = [n for n in orig if "s" in ref.traces[n]]
    readouts = {o: p for o in g.outputs for p in qg.graph.predecessors(o) if p.endswith(".readout")}
    assert spiking or readouts, name
    for o, r in readouts.items():  # the LI readout's v, in float units, is the synapse's value
        np.testing.assert_allclose(emu.outputs[o] / qg.state_scale(r), ref.outputs[o], rtol=0, atol=1e-12,
                                   err_msg=f"{name}: output {o}")
    for n in spiking:
        e, f = emu.traces[n]["s"], ref.traces[n]["s"]
        assert e.sum() > 0 and (e == 0).sum() > 0, f"{name}: '{n}' spikes always or never; the check is blind"
        bad = np.argwhere(e != f)
        assert bad.size == 0, f"{name}: '{n}' emulator != float (chip synapse delays) first at {bad[0].tolist()}"


@pytest.mark.parametrize("name", list(RUNS))
def test_construction_emulator_equals_lava(lava, name):
    g, qg = _quantized(name)
    xs = _padded(_inputs(g, T=10), 10)
    neurons = [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]
    emu, ref = simulate_emulator(qg, xs, probes=neurons), lava(qg, xs, probes=neurons)
    for n in neurons:
        for k in ("u", "v", "s"):
            if k in emu.traces[n]:
                bad = np.argwhere(emu.traces[n][k] != ref.traces[n][k])
                assert bad.size == 0, f"{name}: {n}.{k} differs first at {bad[0].tolist()}"


def _readme_rows() -> dict[str, str]:
    text = README.read_text()
    sec = text.split("## NIR graph constructions", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and not set(cells[0]) <= set("- "):
            rows[cells[0]] = line
    return rows


@pytest.mark.parametrize("name", list(REFUSED))
def test_construction_refused_with_documented_limit(name):
    build, err, pattern, row = REFUSED[name]
    with pytest.raises(err) as ei:
        quantize(from_nir(build()), "loihi2", dt=DT)
    msg = str(ei.value)
    assert "\n" not in msg and re.search(pattern, msg), msg
    rows = [line for first, line in _readme_rows().items() if first.startswith(row) and f"`{name}`" in first]
    assert len(rows) == 1, f"README's NIR table has no row '{row} (`{name}`)'"
    assert "| refused |" in rows[0], rows[0]


def test_readme_lists_every_construction():
    rows = " ".join(_readme_rows())
    for name in list(RUNS) + list(REFUSED):
        assert f"`{name}`" in " ".join(_readme_rows().values()), f"README's NIR table does not list `{name}`"
    assert rows


# ---- delays: the integers, the float model, the graph without delays, partition and energy ----------

def test_delays_become_per_synapse_delay_matrices():
    g, qg = _quantized("delays_pre_post")
    # pre: the Delay before 'linear' delays input column i by d[i]; post: the Delay after 'linear_1' delays row o
    np.testing.assert_array_equal(qg.q["linear"].delay, np.tile([0, 2, 5, 1], (5, 1)))
    np.testing.assert_array_equal(qg.q["linear_1"].delay, np.tile([[3], [0], [7]], (1, 5)))
    assert qg.q["delay"] == FoldedParams("linear") and qg.q["delay_1"] == FoldedParams("linear_1")
    assert {"delay", "delay_1"} <= set(qg.graph.nodes)  # kept (passed through by the backends)


def test_delays_change_the_spikes():
    """The same graph without its Delay nodes spikes differently, so the float comparison sees the delays."""
    g, qg = _quantized("delays_pre_post")
    xs = _padded(_inputs(g), 12)
    emu = simulate_emulator(qg, xs, probes=["lif_1"])
    nodel = g.copy()
    for d in ("delay", "delay_1"):
        p, s = nodel.predecessors(d), nodel.successors(d)
        nodel.edges = [e for e in nodel.edges if d not in e] + [(a, b) for a in p for b in s]
        del nodel.nodes[d]
    ref0 = simulate_float(nodel, xs, probes=["lif_1"], synapse_delay=True, bias_onset=True)
    assert not np.array_equal(emu.traces["lif_1"]["s"], ref0.traces["lif_1"]["s"])


def test_delay_memory_and_energy():
    from placement_checker import check_placement

    from spikedeploy.estimate.energy import estimate
    from spikedeploy.partition.placer import partition
    from spikedeploy.partition.resources import build_model, delay_field_bits
    from spikedeploy.targets.spec import get_target

    target = get_target("loihi2")
    assert delay_field_bits(target) == 6  # 0..62
    g, qg = _quantized("delays_pre_post")
    nodel = qg.graph.copy()
    for d in ("delay", "delay_1"):
        p, s = nodel.predecessors(d), nodel.successors(d)
        nodel.edges = [e for e in nodel.edges if d not in e] + [(a, b) for a in p for b in s]
        del nodel.nodes[d]
    m1, m0 = build_model(qg.graph, target, qg), build_model(nodel, target)
    p1 = {p.dst: p for p in m1.projections}
    p0 = {p.dst: p for p in m0.projections}
    for dst in ("lif", "lif_1"):
        assert p1[dst].kind == p0[dst].kind == "dense"
        assert p1[dst].total_synapses == p0[dst].total_synapses
        assert p1[dst].weight_bits == p0[dst].weight_bits + 6
    pl1, pl0 = partition(qg.graph, target, qgraph=qg), partition(nodel, target)
    check_placement(qg.graph, pl1, target, qgraph=qg)
    # one core; both layers stored as dense blocks (sources x neurons x bits, smaller than index lists here):
    # 6 more bits per stored weight, 4x5 + 5x3 of them
    assert len(pl1.cores) == len(pl0.cores) == 1
    used = pl1.cores[0].synapse_memory_bits - pl0.cores[0].synapse_memory_bits
    assert used == 6 * (4 * 5 + 5 * 3)
    e1 = estimate(qg.graph, target, pl1, assumed_rate=0.1, steps=10)
    e0 = estimate(nodel, target, pl0, assumed_rate=0.1, steps=10)
    assert e1["per_inference"]["synops"] == e0["per_inference"]["synops"] > 0  # a Delay adds no synaptic op


def test_delays_survive_the_file_and_the_search(tmp_path):
    """The quantized graph file keeps the delays (the emulator runs the loaded file as the original), and
    method='search', which builds and runs candidates, sees them too."""
    from spikedeploy.io.qgraph_file import load_qgraph, save_qgraph

    g, qg = _quantized("delays_pre_post")
    xs = _padded(_inputs(g), 12)
    save_qgraph(qg, tmp_path / "d.q.npz")
    back = load_qgraph(tmp_path / "d.q.npz")
    np.testing.assert_array_equal(back.q["linear_1"].delay, qg.q["linear_1"].delay)
    a = simulate_emulator(qg, xs, probes=["lif_1"]).traces["lif_1"]["s"]
    np.testing.assert_array_equal(simulate_emulator(back, xs, probes=["lif_1"]).traces["lif_1"]["s"], a)
    qs = quantize(g, "loihi2", method="search", calibration=xs)
    np.testing.assert_array_equal(qs.q["linear"].delay, qg.q["linear"].delay)
    ref = simulate_float(qs.graph, xs, probes=["lif_1"], synapse_delay=True, bias_onset=True)
    np.testing.assert_array_equal(simulate_emulator(qs, xs, probes=["lif_1"]).traces["lif_1"]["s"], ref.traces["lif_1"]["s"])


def test_v_reset_starts_at_minus_v_reset():
    """v_reset = −50/127 on the grid λ = 254: the shifted state starts at 64·254·50/127 = 6400 chip units, written
    in the layer's first-input step (depth 1), and the threshold is v_th − v_reset = 110.5/127 → 221."""
    g, qg = _quantized("v_reset_integrate_and_fire")
    q = qg.q["if"]
    assert q.vth == 221 and np.all(q.v_init == 6400) and q.v_init_step == 1
    assert any("v_reset != 0" in n for n in qg.meta["notes"])
    # without the start the chip would spike later: the float model started at v' = 0 differs
    xs = _padded(_inputs(g), 12)
    shifted = g.copy()
    shifted.nodes["if"].params["v_reset"] = np.zeros(2)
    shifted.nodes["if"].params["v_threshold"] = np.full(2, 110.5 / 127)
    emu = simulate_emulator(qg, xs, probes=["if"]).traces["if"]["s"]
    ref0 = simulate_float(shifted, xs, probes=["if"], synapse_delay=True, bias_onset=True).traces["if"]["s"]
    assert not np.array_equal(emu, ref0)
