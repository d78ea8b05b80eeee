"""Sigma-delta (SDNN) neurons with graded spikes against lava-dl 0.6.0's recorded ground truths and Lava.

The recordings come with the lava-dl wheel (`tests/lava/lib/dl/netx/gts/`), in Lava's layout (W, H, C, T)
or (N, T); a sink RingBuffer with as many columns as steps holds step t in column t.

pilotnet_sdnn/output.npy   test_hdf5.py test_pilotnet_sdnn: network.net in Lava's fixed-point CPU model, the
                           one-column input replayed for 9 steps (a RingBuffer loops), straight into the
                           input layer's Delta a_in; the Sigma readout's message per step.
pilotnet_sdnn/act0, sigma1, sigma2 (20 steps) and sigma{1..4}_square (square_network.net, 33x33 input):
                           Loihi 2 chip recordings (test_hdf5_nx.py, which compares only the last of 5 steps):
                           act0 is the input layer's messages, sigmaK the K-th conv layer's sigma state.
tinynet_sdnn               test_blocks.py: an Input block (Delta, vth 20) fed a sinusoidally scaled input,
                           a Conv block (SigmaDelta, vth 20, bias, stride 2) run for one step, and a Dense
                           block with a Sigma neuron fed layer1.npy.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from spikedeploy.converters.netx import read_netx
from spikedeploy.errors import UnsupportedError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import SigmaDeltaParams, SynapseParams
from spikedeploy.targets.emulator import simulate_emulator


def tl(a: np.ndarray) -> np.ndarray:
    """Lava (W, H, C, T) or (N, T) -> [T, C, H, W] or [T, N]."""
    a = np.moveaxis(np.asarray(a), -1, 0)
    return a.transpose(0, 3, 2, 1) if a.ndim == 4 else a


def sdnn_nodes(qg):
    return [n for n in qg.graph.order()[0] if qg.graph.nodes[n].op == "SigmaDelta"]


def run_constant(qg, image_whc: np.ndarray, steps: int, **kw):
    x = np.repeat(image_whc.transpose(2, 1, 0)[None, None], steps, axis=0)
    return simulate_emulator(qg, {qg.graph.inputs[0]: x}, **kw)


@pytest.fixture(scope="module")
def pilot(lavadl_netx_dir):
    d = lavadl_netx_dir / "gts" / "pilotnet_sdnn"
    return d, read_netx(d / "network.net"), np.load(d / "input.npy")[..., 0]


def test_pilotnet_sdnn_reads_as_netx_builds_it(pilot):
    d, qg, _ = pilot
    n = sdnn_nodes(qg)
    assert [qg.q[k].mode for k in n] == ["delta"] + ["sigma_delta"] * 7 + ["sigma"]
    assert [qg.q[k].vth for k in n] == [0, 13, 0, 0, 0, 23, 1, 6, None]
    with h5py.File(d / "network.net") as f:
        np.testing.assert_array_equal(qg.q["1.neuron"].bias[:, 0, 0], f["layer/1/bias"][()].astype(np.int64))
    assert all(qg.q[k].spike_exp == 6 and qg.q[k].state_exp == 6 for k in n)


def test_pilotnet_sdnn_output_matches_lavadl(pilot):
    d, qg, image = pilot
    run = run_constant(qg, image, 9)
    out = run.outputs["output"][:, 0, 0]
    gt = np.load(d / "output.npy")[0]
    assert np.count_nonzero(gt) == 8
    np.testing.assert_array_equal(out, gt)


def test_pilotnet_sdnn_matches_loihi2_chip_sigma(pilot):
    d, qg, image = pilot
    n = sdnn_nodes(qg)
    run = run_constant(qg, image, 20, probes=n[:3])
    np.testing.assert_array_equal(run.traces[n[0]]["s"][:, 0], tl(np.load(d / "act0.npy")))
    for k in (1, 2):
        gt = tl(np.load(d / f"sigma{k}.npy"))
        assert np.abs(gt).sum() > 0
        np.testing.assert_array_equal(run.traces[n[k]]["u"][:, 0], gt, err_msg=f"sigma{k}")


def test_pilotnet_sdnn_square_matches_loihi2_chip_sigma(pilot):
    d, _, image = pilot
    qg = read_netx(d / "square_network.net")
    n = sdnn_nodes(qg)
    run = run_constant(qg, image[:33, :33], 20, probes=n)
    np.testing.assert_array_equal(run.traces[n[0]]["s"][:, 0], tl(np.load(d / "act0.npy")[:33, :33]))
    for k in range(1, 5):
        gt = tl(np.load(d / f"sigma{k}_square.npy"))
        assert np.abs(gt).sum() > 0
        np.testing.assert_array_equal(run.traces[n[k]]["u"][:, 0], gt, err_msg=f"sigma{k}_square")


# ---- tinynet_sdnn: lava-dl's block tests, as a netx file holding the same two layers ------------------------
def _tinynet_sdnn_net(path, d):
    w_lava = np.load(d / "layer1_kernel.npy")  # (out, x, y, in), as Lava's Conv takes it
    w_torch = w_lava.transpose(0, 3, 2, 1)[:, :, ::-1, ::-1]  # what netx's file holds (netx flips it back)

    def group(g, **kv):
        for k, v in kv.items():
            g.create_dataset(k, data=v)

    with h5py.File(path, "w") as f:
        l0, l1 = f.create_group("layer/0"), f.create_group("layer/1")
        group(l0, type=np.array([b"input"], "S10"), shape=np.array([3, 16, 16]))
        group(l0.create_group("neuron"), type=np.bytes_(b"SDNN"), vThMant=np.int64(20))
        group(l1, type=np.array([b"conv"], "S10"), shape=np.array([24, 6, 6]), weight=w_torch.astype(np.float32),
              bias=np.load(d / "layer1_bias.npy").astype(np.float32), stride=np.array([2, 2]),
              padding=np.array([0, 0]), dilation=np.array([1, 1]), groups=np.int64(1))
        group(l1.create_group("neuron"), type=np.bytes_(b"SDNN"), vThMant=np.int64(20))
    return read_netx(path)


def test_tinynet_sdnn_input_and_conv_blocks(tmp_path, lavadl_netx_dir):
    d = lavadl_netx_dir / "gts" / "tinynet_sdnn"
    qg = _tinynet_sdnn_net(tmp_path / "tinynet_sdnn.net", d)
    steps = 15
    # test_blocks.py test_input's input, computed the same way
    x = np.repeat(np.load(d / "input_bias.npy")[..., None], steps, axis=3)
    x = (x * np.sin(2 * np.pi * np.arange(steps) / steps)).astype(int)
    run = simulate_emulator(qg, {"input": tl(x)[:, None]}, probes=["0.neuron", "1.neuron"])
    gt_in = tl(np.load(d / "input.npy"))
    assert np.count_nonzero(gt_in) > 1000
    np.testing.assert_array_equal(run.traces["0.neuron"]["s"][:, 0], gt_in)
    # the Conv block ran one step (its sink's other 15 columns stay 0): the bias alone crosses vth
    gt_conv = tl(np.load(d / "layer1.npy"))
    assert np.count_nonzero(gt_conv[0]) == 144 and not gt_conv[1:].any()
    np.testing.assert_array_equal(run.traces["1.neuron"]["s"][0, 0], gt_conv[0])


def test_tinynet_sdnn_sigma_dense_block(lavadl_netx_dir):
    """A Dense block (weights as given: 8 bits, exponent 0, sign mode from the weights) into a Sigma neuron.
    The block's synapse gets num_message_bits 0 (Input/Dense blocks default to binary input), so Lava sees
    layer1's graded messages as spikes where they are nonzero; the emulator is fed exactly that."""
    d = lavadl_netx_dir / "gts" / "tinynet_sdnn"
    w = np.load(d / "layer2_weight.npy")
    g = Graph(dt=1.0)
    g.add(Node("input", "Input", params={"shape": np.array([w.shape[1]])}))
    g.add(Node("dense", "Linear", params={"weight": w.astype(np.float32)}))
    g.add(Node("sigma", "SigmaDelta", params={"v_threshold": np.zeros(w.shape[0]), "relu": np.asarray(0),
                                              "delta": np.asarray(0)}))
    g.add(Node("output", "Output"))
    for a, b in (("input", "dense"), ("dense", "sigma"), ("sigma", "output")):
        g.connect(a, b)
    q = {"dense": SynapseParams(weight=w, weight_exp=0, num_weight_bits=8, sign_mode=None),
         "sigma": SigmaDeltaParams(mode="sigma", spike_exp=6, state_exp=6)}
    qg = QGraph(graph=g, target="loihi2", q=q, scale={"sigma": 1.0})
    spikes = (np.load(d / "layer1.npy").reshape(-1, 16) != 0).astype(np.int8)  # (864, 16), Lava's flat order
    run = simulate_emulator(qg, {"input": spikes.T[:, None]})
    gt = np.load(d / "layer2.npy").T
    assert np.count_nonzero(gt) == 1500
    np.testing.assert_array_equal(run.outputs["output"][:, 0], gt)


def test_sigma_readout_with_bias_is_refused(tmp_path, lavadl_netx_dir):
    src = lavadl_netx_dir / "gts" / "pilotnet_sdnn" / "network.net"
    p = tmp_path / "bad.net"
    p.write_bytes(src.read_bytes())
    with h5py.File(p, "a") as f:
        f.create_dataset("layer/9/bias", data=np.zeros(1, np.float32))
    with pytest.raises(UnsupportedError, match=r"bad\.net: layer 9 \(dense\): a sigma_output .* bias"):
        read_netx(p)


def test_lava_equals_emulator_on_pilotnet_sdnn(lava, pilot):
    """Lava's own sigma-delta processes (lava.proc.sdn) on the same QGraph: every message, sigma and act."""
    _, qg, image = pilot
    n = sdnn_nodes(qg)
    steps = 10
    x = np.repeat(image.transpose(2, 1, 0)[None, None], steps, axis=0)
    x[5:] = x[5:] // 2  # a change mid-run, so every layer sends deltas of both signs
    emu = simulate_emulator(qg, {"input": x}, probes=n)
    ref = lava(qg, {"input": x}, probes=n)
    np.testing.assert_array_equal(emu.outputs["output"], ref.outputs["output"])
    for k in n:
        for what in ref.traces[k]:
            np.testing.assert_array_equal(emu.traces[k][what], ref.traces[k][what], err_msg=f"{k} {what}")
        np.testing.assert_array_equal(emu.counts[k], ref.counts[k], err_msg=k)
    assert sum(int(emu.counts[k].sum()) for k in n) > 1000


def test_float_view_tracks_the_integer_run(pilot):
    """The float backend runs the SigmaDelta view (the same rule without the floors of the message shift):
    with Lava's synapse delay it stays within 0.2% of the integer output's range on pilotnet_sdnn."""
    from spikedeploy.simulate.float_ref import simulate_float

    _, qg, image = pilot
    x = np.repeat(image.transpose(2, 1, 0)[None, None], 9, axis=0).astype(np.float64)
    f = simulate_float(qg.graph, {"input": x}, synapse_delay=True).outputs["output"][:, 0, 0]
    e = run_constant(qg, image, 9).outputs["output"][:, 0, 0]
    assert not np.array_equal(f, e)  # the floors matter, a little
    assert np.abs(f - e).max() < 2e-3 * np.abs(e).max()


def test_cli_simulate_reproduces_pilotnet_sdnn(pilot, tmp_path):
    """From the command line alone: the recorded input replayed for 9 steps as a graded [T, B, C, H, W] array."""
    import subprocess
    import sys

    d, _, image = pilot
    x = tmp_path / "x.npy"
    np.save(x, np.repeat(image.transpose(2, 1, 0)[None, None], 9, axis=0).astype(np.int32))
    out = tmp_path / "run.npz"
    r = subprocess.run([sys.executable, "-m", "spikedeploy", "simulate", d / "network.net", "--input", x, "-o", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with np.load(out) as run:
        np.testing.assert_array_equal(run["out/output"].ravel(), np.load(d / "output.npy")[0])


def test_q_equals_what_lava_netx_builds_for_sdnn(lava, pilot):
    """lava-dl's netx.hdf5.Network on the same file (built, not run): neuron classes, scaled thresholds and
    biases, synapse weights, exponents and message bits equal what read_netx put in q."""
    import warnings

    from raw_counts import netx_counts

    from spikedeploy.targets.lava.compat import netx as lava_netx

    d, qg, _ = pilot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lava_netx().hdf5.Network(net_config=str(d / "network.net"))
    n = sdnn_nodes(qg)
    assert len(n) == len(net.layers)
    kinds = {"delta": "Delta", "sigma_delta": "SigmaDelta", "sigma": "Sigma"}
    for blk, k in zip(net.layers, n, strict=True):
        q = qg.q[k]
        assert type(blk.neuron).__name__ == kinds[q.mode], k
        if q.mode != "sigma":
            assert int(np.asarray(blk.neuron.vth.init).ravel()[0]) == q.vth << 12, k
        if q.mode == "sigma_delta":
            b = q.bias.transpose(2, 1, 0) if q.bias.ndim == 3 else q.bias
            np.testing.assert_array_equal(np.asarray(blk.neuron.bias.init), b << 12, err_msg=k)
    syn = [s for s in qg.graph.order()[0] if qg.graph.nodes[s].op in ("Linear", "Conv2d")]
    lava_syn = [blk.synapse for blk in net.layers if hasattr(blk, "synapse")]
    for s, name in zip(lava_syn, syn, strict=True):
        assert int(s.proc_params["num_message_bits"]) == 16, name  # every SDNN layer sends 16-bit messages
        if qg.graph.nodes[name].op == "Linear":
            np.testing.assert_array_equal(np.asarray(s.weights.init), qg.q[name].weight)
            assert s.proc_params["weight_exp"] == qg.q[name].weight_exp
    st, raw = qg.graph.stats(), netx_counts(d / "network.net", None)
    assert st["total"]["neurons"] == raw["neurons"]
    assert sum(r["synapses"] for r in st["nodes"].values() if r["op"] in ("Linear", "Conv2d")) == raw["synapses"]


def test_graded_input_out_of_range_is_refused_in_one_line(lava, pilot, tmp_path):
    """2**19 << 12 overflows the Delta layer's int32 state (Lava would wrap it silently): refused, naming the
    input, the node and the range, before anything is written."""
    import subprocess
    import sys

    d, qg, image = pilot
    x = np.repeat(image.transpose(2, 1, 0)[None, None], 2, axis=0).astype(np.int64)
    x[1, 0, 0, 0, 0] = 2**19
    from spikedeploy.errors import InputError

    with pytest.raises(InputError, match=r"input \['input'\] of node '0.neuron' .* up to 524288.*\[-524287, 524287\]"):
        simulate_emulator(qg, {"input": x})
    with pytest.raises(InputError, match=r"of node '0.neuron' .*\[-524287, 524287\]"):
        lava(qg, {"input": x})
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run.npz"
    r = subprocess.run([sys.executable, "-m", "spikedeploy", "simulate", d / "network.net", "--input",
                        tmp_path / "x.npy", "-o", out], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "524287" in r.stderr
    assert not out.exists()


def test_sdnn_qgraph_file_round_trip(pilot, tmp_path):
    from spikedeploy.io.qgraph_file import load_qgraph, save_qgraph

    d, qg, image = pilot
    save_qgraph(qg, tmp_path / "p.sdq")
    out = run_constant(load_qgraph(tmp_path / "p.sdq"), image, 9).outputs["output"][:, 0, 0]
    np.testing.assert_array_equal(out, np.load(d / "output.npy")[0])
