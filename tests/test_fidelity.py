"""Fidelity that cannot flatter, and the quantized graph's own target deciding its arithmetic.

Hand-built graphs whose spikes are known step by step: every layer's whole response is compared (T + depth
steps), spike sets are scored by Dice over the bins that hold spikes, silent layers are not counted as
agreement, and a graph quantized for a 12-bit chip runs in 12-bit arithmetic everywhere.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from spikedeploy.errors import BackendError, TargetLimitError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.io.qgraph_file import load_qgraph, save_qgraph
from spikedeploy.quantize.fidelity import LAYER_KEYS, fidelity, spike_disagreement
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.float_ref import simulate_float, synapse_depth


def _if(name, n, thr=0.5):
    return Node(name, "IF", {"r": np.ones(n), "v_threshold": np.full(n, thr)})


def _chain3(w3=((1.0,), (0.0,))):
    """in -> fc1 -> l1 -> fc2 -> l2 -> fc3 -> l3 (2 neurons) -> out; every weight 1 except fc3 = w3.

    With synapse delays, an input spike at step t makes l1 fire at t+1, l2 at t+2, l3 (neuron 0) at t+3."""
    return Graph.chain(
        Node("in", "Input", {"shape": [1]}),
        Node("fc1", "Linear", {"weight": np.ones((1, 1))}), _if("l1", 1),
        Node("fc2", "Linear", {"weight": np.ones((1, 1))}), _if("l2", 1),
        Node("fc3", "Linear", {"weight": np.array(w3, dtype=np.float64)}), _if("l3", 2),
        Node("out", "Output"), dt=1.0).validate()


X2 = {"in": np.ones((2, 1, 1), np.float32)}  # T = 2: a spike at steps 0 and 1


def test_synapse_depth_counts_one_hop_per_synapse_chain_and_skips_back_edges():
    g = Graph.chain(Node("in", "Input", {"shape": [1, 2, 2]}), Node("c", "Conv2d", {"weight": np.ones((1, 1, 1, 1))}),
                    Node("f", "Flatten"), _if("l1", 4), Node("fc", "Linear", {"weight": np.ones((3, 4))}), _if("l2", 3),
                    Node("out", "Output"), dt=1.0)
    g.nodes["rec"] = Node("rec", "Linear", {"weight": np.eye(3)})
    g.edges += [("l2", "rec"), ("rec", "l2")]
    g.validate()
    # conv + flatten is one synapse chain (one step); the recurrent loop adds nothing to the depth
    assert synapse_depth(g) == {"in": 0, "c": 0, "f": 0, "l1": 1, "fc": 1, "l2": 2, "rec": 2, "out": 2}


def test_deepest_layer_beyond_T_is_compared_and_scores_dice_0():
    """At T = 2 the old comparison (T steps) never saw l3, which first fires at step 3, and counted its empty
    bins as agreement. Here l3's quantized spikes are on the other neuron: no spike in common."""
    g = _chain3()
    qg = quantize(g)
    w = np.asarray(qg.q["fc3"].weight)
    qg.q["fc3"].weight = w[::-1].copy()  # neuron 1 gets neuron 0's input
    f = fidelity(g, qg, X2)["fidelity"]
    assert (f["input_steps"], f["depth"], f["steps"]) == (2, 3, 5)
    l1, l2, l3 = (f["layers"][n] for n in ("l1", "l2", "l3"))
    assert set(l3) == set(LAYER_KEYS)
    # float: l3 neuron 0 fires at steps 3 and 4; quantized: neuron 1 at steps 3 and 4
    assert (l3["spikes_float"], l3["spikes_quant"], l3["spikes_both"]) == (2, 2, 0)
    assert l3["dice"] == 0.0 and l3["precision"] == 0.0 and l3["recall"] == 0.0 and not l3["silent"]
    assert l3["count_ratio"] == 1.0  # equal counts: why a count ratio alone is no fidelity figure
    for r in (l1, l2):
        assert (r["spikes_float"], r["spikes_quant"], r["dice"], r["precision"], r["recall"]) == (2, 2, 1.0, 1.0, 1.0)
    assert f["dice_min"] == 0.0 and f["dice_mean"] == pytest.approx(2 / 3) and f["layers_scored"] == 3
    assert f["silent_layers"] == []
    json.dumps(f, allow_nan=False)
    # the search's objective sees the same steps: l3's two bins on each side disagree
    assert spike_disagreement(g, qg, X2)[0] == 4


def test_identical_runs_score_1():
    g = _chain3()
    qg = quantize(g)
    f = fidelity(g, qg, X2)["fidelity"]  # exact quantization: the emulator equals the float reference
    assert f["dice_min"] == f["dice_mean"] == 1.0 and f["layers_scored"] == 3
    # the float reference itself as the "fixed-point" run: identical by construction
    same = simulate_float(g, X2, steps=5, probes=["l1", "l2", "l3"], synapse_delay=True)
    f = fidelity(g, qg, X2, run_q=same)["fidelity"]
    for r in f["layers"].values():
        assert (r["dice"], r["precision"], r["recall"], r["count_ratio"]) == (1.0, 1.0, 1.0, 1.0)
        assert r["spikes_float"] == r["spikes_quant"] == 2


def test_a_layer_silent_on_both_sides_is_reported_silent_not_as_agreement():
    g = _chain3(w3=((0.0,), (0.0,)))  # l3 never receives anything
    qg = quantize(g)
    f = fidelity(g, qg, X2)["fidelity"]
    l3 = f["layers"]["l3"]
    assert l3["silent"] and l3["spikes_float"] == l3["spikes_quant"] == 0
    assert l3["dice"] == 1.0 and l3["precision"] is None and l3["recall"] is None and l3["count_ratio"] is None
    assert f["silent_layers"] == ["l3"] and f["layers_scored"] == 2  # the headline is over l1 and l2 only
    # nothing fires anywhere: no headline figure at all, rather than a perfect one
    f = fidelity(g, qg, {"in": np.zeros((2, 1, 1), np.float32)})["fidelity"]
    assert f["dice_min"] is None and f["dice_mean"] is None and f["silent_layers"] == ["l1", "l2", "l3"]


def test_a_given_run_shorter_than_T_plus_depth_is_refused():
    g = _chain3()
    qg = quantize(g)
    short = simulate(qg, X2, probes=["l1", "l2", "l3"])  # 2 steps: l3's response is cut off
    with pytest.raises(BackendError, match=r"run_q has 2 steps.*T \+ depth = 2 \+ 3 = 5.*steps=5"):
        fidelity(g, qg, X2, run_q=short)


# ---- the QGraph's own target decides the arithmetic -----------------------------------------------

CHIP = 'name = "edge12"\n[numeric]\nstate_bits = 12\nweight_bits = 4\n'

# One IF neuron fed by 16 inputs (weights 1 -> mantissa 15, threshold 2 -> vth 30: fires when v > 30 << 6 =
# 1920). Steps 0-11: 4 inputs fire; steps 12-17: 1 input fires. Each spike adds 15 << 6 = 960 to u one step
# later (du = 4095: u holds one step's input; dv = 0: v integrates).
X12 = np.zeros((18, 1, 16), np.float32)
X12[:12, 0, :4] = 1
X12[12:, 0, :1] = 1
# 12-bit state, M = 2^11: u = 3840 > M wraps once to 3840 - 4096 = -256 (steps 1-12); v falls by 256 a step
# and saturates at -(M - 1) = -2047 from step 8; then +960 a step: -1087, -127, 833, 1793, and at step 17
# 2753 saturates at 2047 > 1920: a spike (v resets to 0), then 960.
U12 = [0] + [-256] * 12 + [960] * 6
V12 = [0, -256, -512, -768, -1024, -1280, -1536, -1792] + [-2047] * 5 + [-1087, -127, 833, 1793, 0, 960]
S12 = [17]
# Loihi 2 (24-bit): u = 3840 fires every step 1-12 (v resets to 0), then 960, 1920 (not > 1920), 2880 fires
S24 = list(range(1, 13)) + [15, 18]


@pytest.fixture()
def edge12(tmp_path):
    chip = tmp_path / "chip.toml"
    chip.write_text(CHIP)
    g = Graph.chain(Node("in", "Input", {"shape": [16]}), Node("fc", "Linear", {"weight": np.ones((1, 16))}),
                    _if("l", 1, thr=2.0), Node("out", "Output"), dt=1.0).validate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the quantizer warns, rightly, that u can wrap
        qg = quantize(g, f"fixedpoint:{chip}")
    # the hand computation above rests on these integers
    assert qg.target == "edge12" and np.all(qg.q["fc"].weight == 15) and qg.q["fc"].weight_exp == 0
    assert (qg.q["l"].du, qg.q["l"].dv, qg.q["l"].vth) == (4095, 0, 30) and qg.q["l"].bias_mant[0] == 0
    return g, qg, chip


def test_simulate_runs_a_12_bit_qgraph_in_12_bit_arithmetic(edge12, tmp_path):
    g, qg, chip = edge12
    run = simulate(qg, {"in": X12}, steps=19, probes=["l"])
    assert run.meta["arith"] == "edge12"
    assert run.traces["l"]["u"].ravel().tolist() == U12
    assert run.traces["l"]["v"].ravel().tolist() == V12
    assert np.flatnonzero(run.traces["l"]["s"].ravel()).tolist() == S12
    assert run.meta["u_wraps"] == {"l": 12} and run.meta["v_saturations"] == {"l": 6}
    # naming the QGraph's own target is fine; Loihi 2 is a contradiction, and Lava computes only Loihi 2
    assert simulate(qg, {"in": X12}, target=f"fixedpoint:{chip}").counts["l"].sum() == 1
    with pytest.raises(TargetLimitError, match="target 'loihi2' contradicts the QGraph.*'edge12' .12-bit state"):
        simulate(qg, {"in": X12}, target="loihi2")
    with pytest.raises(TargetLimitError, match="backend 'lava'.*'edge12'.*--backend emulator"):
        simulate(qg, {"in": X12}, backend="lava")
    # the arithmetic survives the file (the chip file's name alone could not be looked up again)
    save_qgraph(qg, tmp_path / "q.npz")
    back = load_qgraph(tmp_path / "q.npz")
    assert simulate(back, {"in": X12}, steps=19, probes=["l"]).traces["l"]["v"].ravel().tolist() == V12


def test_fidelity_runs_a_12_bit_qgraph_in_12_bit_arithmetic(edge12):
    g, qg, _ = edge12
    f = fidelity(g, qg, {"in": X12})["fidelity"]
    assert f["arith"] == "edge12" and f["steps"] == 19
    r = f["layers"]["l"]
    # float fires at S24 too (v += 4 > 2 at steps 1-12; then 1, 2, 3 > 2 at 15 and 18). 12-bit fires only at
    # step 17, which it reaches only because v saturated at -2047: unsaturated, v would fire at 18 with float.
    assert (r["spikes_float"], r["spikes_quant"], r["spikes_both"]) == (len(S24), len(S12), 0)
    assert r["dice"] == 0.0 and f["dice_min"] == 0.0
    # the search's objective runs in the same arithmetic: 14 float-only bins + 1 quantized-only bin
    assert spike_disagreement(g, qg, {"in": X12})[0] == len(S24) + len(S12)
    # the same graph quantized for Loihi 2 loses nothing here
    g24 = quantize(g)
    assert fidelity(g, g24, {"in": X12})["fidelity"]["layers"]["l"]["dice"] == 1.0


def _sd(*args):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("SPIKEDEPLOY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "spikedeploy", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_cli_quantize_and_simulate_use_the_qgraph_target_and_refuse_a_contradicting_one(edge12, tmp_path):
    from spikedeploy.converters.nir import write_nir

    g, _, chip = edge12
    q, x, nir = tmp_path / "q.npz", tmp_path / "x.npy", tmp_path / "g.nir"
    write_nir(g, nir)
    np.save(x, X12)
    r = _sd("quantize", nir, "--dt", 1, "--target", chip, "--calibrate", x, "-o", q, "--json")
    assert r.returncode == 0, r.stderr
    fid = json.loads(r.stdout)["fidelity"]
    assert fid["arith"] == "edge12" and fid["layers"]["l"]["spikes_quant"] == len(S12)
    r = _sd("simulate", q, "--input", x, "--steps", 19, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["spikes"]["l"] == len(S12)  # Loihi 2's arithmetic would give len(S24)
    for extra, needle in ((("--target", "loihi2"), "contradicts the QGraph"), (("--backend", "lava"), "backend 'lava'")):
        r = _sd("simulate", q, "--input", x, *extra)
        assert r.returncode == 1, (r.stdout, r.stderr)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_fidelity_reads_a_non_spiking_layer_through_the_targets_own_activation_shift(tmp_path):
    """A chip with act_shift 4 stores v_int = 16·λ·v_float, not Loihi's 64·λ·v_float: fidelity and the
    readout error must divide by the QGraph's own factor (a hard-coded 64 reads v four times too small)."""
    chip = tmp_path / "shift4.toml"
    chip.write_text('name = "shift4"\n[numeric]\nact_shift = 4\n')
    g = Graph.chain(Node("in", "Input", {"shape": [1]}), Node("fc", "Linear", {"weight": np.ones((1, 1))}),
                    Node("li", "LI", {"tau": np.full(1, 2.0), "r": np.ones(1), "v_leak": np.zeros(1)}),
                    Node("out", "Output"), dt=1.0).validate()
    x = np.zeros((4, 1, 1), np.float32)
    x[0] = 1
    qg = quantize(g, f"fixedpoint:{chip}")
    lam = qg.scale["li"]
    assert qg.state_scale("li") == 16 * lam
    # float: v = 0.5 one step after the spike, then halves (tau 2); integer: 16·λ·0.5, then dv = 2048 halves it
    v = simulate(qg, {"in": x}, steps=4, probes=["li"]).traces["li"]["v"].ravel().tolist()
    assert v == [0, 8 * lam, 4 * lam, 2 * lam]
    f = fidelity(g, qg, {"in": x})["fidelity"]
    assert f["arith"] == "shift4"
    assert f["layers"]["li"]["v_rel_rms_error"] < 1e-3 and f["outputs"]["out"]["mean_abs_error"] < 1e-3
