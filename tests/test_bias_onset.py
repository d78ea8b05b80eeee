"""Bias onset: on chip every synapse adds a step, so a layer at synapse depth d sees its first input at step d.
A trained model (no delays) never lets a layer integrate its bias alone; quantize(bias_onset="depth") holds
each bias (and CubaLIF synapse bias) at 0 until step d, in the emulator and in Lava.

References: the zero-delay float run (the chip timing must equal it shifted by each layer's depth, exactly),
hand-computed depths, and Lava's simulation (equal to the emulator bit for bit across the onset steps).
"""

from __future__ import annotations

import numpy as np
import pytest

from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qparams import CubaParams
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.float_ref import simulate_float, synapse_depth

T = 6


def mlp(cuba: bool = False) -> Graph:
    """in(12) -> Affine -> LIF -> Affine -> LIF|CubaLIF -> Affine -> LIF -> out; biases that drive every layer
    alone, and v_leak."""
    rng = np.random.default_rng(3)
    sizes = (12, 10, 8, 6)
    nodes = [Node("in", "Input", {"shape": [sizes[0]]})]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        nodes.append(Node(f"fc{i}", "Affine", {"weight": rng.normal(0, 0.6, (b, a)),
                                               "bias": rng.uniform(0.2, 0.6, b)}))
        if cuba and i == 1:
            nodes.append(Node(f"n{i}", "CubaLIF", {"tau_syn": np.full(b, 4e-3), "tau_mem": np.full(b, 8e-3),
                                                   "r": np.ones(b), "v_leak": np.zeros(b),
                                                   "v_threshold": np.full(b, 1.0), "w_in": np.ones(b)}))
        else:
            nodes.append(Node(f"n{i}", "LIF", {"tau": np.full(b, 5e-3), "r": np.full(b, 2.0),
                                               "v_leak": np.full(b, 0.05), "v_threshold": np.full(b, 1.0)}))
    nodes.append(Node("out", "Output"))
    return Graph.chain(*nodes, dt=1e-3).validate()


def spikes_in(batch: int, steps: int = T, seed: int = 0) -> dict[str, np.ndarray]:
    x = (np.random.default_rng(seed).random((steps, batch, 12)) < 0.4).astype(np.float32)
    return {"in": x}


def test_depths_are_the_synapse_hops():
    assert {n: d for n, d in synapse_depth(mlp()).items() if n.startswith("n")} == {"n0": 1, "n1": 2, "n2": 3}


def test_chip_timing_with_bias_onset_is_the_zero_delay_run_shifted():
    g = mlp()
    x = spikes_in(4)
    zero_delay = simulate_float(g, x, probes="*")
    late = simulate_float(g, x, steps=T + 3, probes="*", synapse_delay=True, bias_onset=True)
    step0 = simulate_float(g, x, steps=T + 3, probes="*", synapse_delay=True)
    depth = synapse_depth(g)
    for n in ("n0", "n1", "n2"):
        d = depth[n]
        for k in ("v", "s"):
            np.testing.assert_array_equal(late.traces[n][k][d:d + T], zero_delay.traces[n][k], err_msg=f"{n}.{k}")
        assert not np.any(late.traces[n]["v"][:d])
    # without the onset, the deep layers have integrated their bias alone before their input arrives
    assert not np.array_equal(step0.traces["n2"]["v"][3:3 + T], zero_delay.traces["n2"]["v"])
    assert zero_delay.traces["n2"]["s"].sum() > 0


def test_quantize_records_the_onsets():
    qg = quantize(mlp())
    assert qg.meta["bias_onset"] == "depth"
    assert {n: qg.q[n].bias_onset for n in ("n0", "n1", "n2")} == {"n0": 1, "n1": 2, "n2": 3}
    assert not any(q.bias_onset for q in quantize(mlp(), bias_onset="step0").q.values() if isinstance(q, CubaParams))
    netx_like = mlp()
    netx_like.meta["format"] = "netx"  # lava-dl trains with the delays: its biases act from step 0
    assert quantize(netx_like).meta["bias_onset"] == "step0"
    with pytest.raises(Exception, match="unknown bias onset 'late'.*auto, depth, step0"):
        quantize(mlp(), bias_onset="late")


@pytest.mark.parametrize("cuba", [False, True], ids=["lif", "cuba-synapse-bias"])
def test_emulator_holds_each_bias_until_its_onset(cuba):
    qg = quantize(mlp(cuba))
    if cuba:
        assert np.any(qg.q["n1"].u_bias)  # the CubaLIF's synapse bias sits in u
    x = spikes_in(3)
    on = simulate(qg, x, backend="emulator", steps=T + 3, probes=["n0", "n1", "n2"])
    off = simulate(quantize(mlp(cuba), bias_onset="step0"), x, backend="emulator", steps=T + 3,
                   probes=["n0", "n1", "n2"])
    for n, d in (("n0", 1), ("n1", 2), ("n2", 3)):
        assert not np.any(on.traces[n]["v"][:d]) and not np.any(on.traces[n]["u"][:d])
        assert np.any(off.traces[n]["v"][:d])  # step0: the bias alone moves v before the input arrives
        assert np.any(on.traces[n]["v"][d])  # the bias acts from the onset step


@pytest.mark.parametrize("cuba", [False, True], ids=["lif", "cuba-synapse-bias"])
def test_lava_equals_emulator_across_the_onsets(lava, cuba):
    qg = quantize(mlp(cuba))
    x = spikes_in(2, seed=1)  # two samples: the biases go back to 0 between them
    probes = ["n0", "n1", "n2"]
    emu = simulate(qg, x, backend="emulator", steps=T + 3, probes=probes)
    lrun = lava(qg, x, steps=T + 3, probes=probes)
    for n in probes:
        for k in ("u", "v", "s"):
            np.testing.assert_array_equal(emu.traces[n][k], lrun.traces[n][k], err_msg=f"{n}.{k}")
    assert emu.traces["n0"]["s"].sum() > 0 and np.any(emu.traces["n1"]["u"][2:])


def test_cli_bias_onset_option(tmp_path):
    from click.testing import CliRunner

    from spikedeploy.cli.main import cli
    from spikedeploy.converters.nir import write_nir
    from spikedeploy.io.qgraph_file import load_qgraph

    write_nir(mlp(), tmp_path / "g.nir")
    for opt, want, onset in (([], "depth", 3), (["--bias-onset", "step0"], "step0", 0)):
        res = CliRunner().invoke(cli, ["quantize", str(tmp_path / "g.nir"), "--dt", "1e-3", *opt,
                                       "-o", str(tmp_path / "q.npz")])
        assert res.exit_code == 0, res.output
        qg = load_qgraph(tmp_path / "q.npz")
        assert qg.meta["bias_onset"] == want and qg.q["n2"].bias_onset == onset
