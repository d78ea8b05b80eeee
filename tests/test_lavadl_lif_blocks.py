"""lava-dl 0.6.0's remaining LIF ground truths: the dense and tinynet blocks, and tiny.net.

From lava-dl's tests (`tests/lava/lib/dl/netx/`), arrays in their own layouts as noted:
    test_blocks.py TestLIFBlocks.test_dense   Dense block (weights as given: 8 bits, exponent 0, sign mode from
                                              the weights) -> LIF du 4095, dv 415, vth 6; 2000 steps
    test_blocks.py TestLIFBlocks.test_input   Input block driven only by its bias (input_bias, WHC), LIF du 4095,
                                              dv 1024, vth 25; compared with input.npy shifted by one step
    test_blocks.py TestLIFBlocks.test_conv    Conv block, stride 2, per-channel bias; run one step at a time,
                                              u and v zeroed after the first step, the first step's spikes
                                              blanked; input.npy[..., 1:] replayed by a looping RingBuffer
    test_hdf5.py test_tinynet                 tiny.net, bias-driven input layer, io.reset.Reset of u and v with
                                              interval 17 and offset i - 1 for layer i; output[2:17] compared
Lava's io.reset.Reset writes after step t when (t - 1) % interval == offset (run_post_mgmt), i.e. before
the dynamics of step t + 1: LIFReset's rule with reset_offset = offset + 2. Layer 0's offset -1 never
matches (the modulo is never negative), so the input layer is never reset.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikedeploy.converters.netx import read_netx
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, SynapseParams
from spikedeploy.targets.emulator import simulate_emulator


def _t_first(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.asarray(a), -1, 0)


def lif_chain(shape_in, syn: Node | None, shape_out, nq: CubaParams, syn_q: SynapseParams | None = None) -> QGraph:
    ones = np.ones(shape_out)
    g = Graph(dt=1.0)
    g.add(Node("input", "Input", params={"shape": np.array(shape_in)}))
    prev = "input"
    if syn is not None:
        g.add(syn)
        g.connect("input", syn.name)
        prev = syn.name
    g.add(Node("lif", "CubaLIF", params={"tau_syn": ones, "tau_mem": ones, "r": ones, "v_leak": 0 * ones,
                                         "v_threshold": ones * nq.vth, "w_in": ones}))
    g.add(Node("output", "Output"))
    g.connect(prev, "lif")
    g.connect("lif", "output")
    q = {"lif": nq} if syn is None else {"lif": nq, syn.name: syn_q}
    return QGraph(graph=g, target="loihi2", q=q, scale={"lif": 1.0})


def _raw(w) -> SynapseParams:
    """A block's synapse: its integer weights with Lava's defaults."""
    return SynapseParams(weight=w.astype(np.int64), weight_exp=0, num_weight_bits=8, sign_mode=None)


@pytest.fixture(scope="module")
def gts(lavadl_netx_dir):
    return lavadl_netx_dir / "gts"


def test_dense_lif_block(gts):
    w = np.load(gts / "dense" / "weight.npy")
    nq = CubaParams(du=4095, dv=415, vth=6, bias_mant=0, bias_exp=6)
    qg = lif_chain([w.shape[1]], Node("dense", "Linear", params={"weight": w.astype(np.float32)}), (w.shape[0],),
                   nq, _raw(w))
    x = np.load(gts / "dense" / "in.npy").T[:, None].astype(np.int8)
    gt = np.load(gts / "dense" / "out.npy").T
    assert gt.sum() > 1000
    np.testing.assert_array_equal(simulate_emulator(qg, {"input": x}).outputs["output"][:, 0], gt)


def test_tinynet_input_block(gts):
    bias = np.load(gts / "tinynet" / "input_bias.npy").transpose(2, 1, 0)  # WHC -> CHW
    nq = CubaParams(du=4095, dv=1024, vth=25, bias_mant=bias.astype(np.int32).astype(np.int64), bias_exp=6)
    qg = lif_chain([3, 16, 16], None, (3, 16, 16), nq)
    run = simulate_emulator(qg, {"input": np.zeros((15, 1, 3, 16, 16), np.int8)})
    gt = _t_first(np.load(gts / "tinynet" / "input.npy")[0])[1:]  # (C, H, W, T) -> T-first, one step offset
    assert gt.sum() > 5000
    np.testing.assert_array_equal(run.outputs["output"][:, 0], gt)


def test_tinynet_conv_block(gts):
    d = gts / "tinynet"
    w_lava = np.load(d / "layer1_kernel.npy")  # (out, x, y, in)
    w = np.ascontiguousarray(w_lava.transpose(0, 3, 2, 1)[:, :, ::-1, ::-1])
    bias = np.load(d / "layer1_bias.npy")
    # zeroed after step 1 = reset before the dynamics of step 2 (1-based), never again within the run
    nq = CubaParams(du=4095, dv=1024, vth=25, bias_mant=np.broadcast_to(bias.reshape(-1, 1, 1), (24, 6, 6)).astype(np.int64),
                    bias_exp=6, reset_interval=10**6, reset_offset=2)
    conv = Node("conv", "Conv2d", params={"weight": w.astype(np.float32), "stride": np.array([2, 2]),
                                          "padding": np.array([0, 0]), "dilation": np.array([1, 1]),
                                          "groups": np.asarray(1)})
    qg = lif_chain([3, 16, 16], conv, (24, 6, 6), nq, _raw(w))
    cols = _t_first(np.load(d / "input.npy")[0])[1:]  # the 15 columns the RingBuffer loops over
    x = np.stack([cols[t % len(cols)] for t in range(16)])[:, None].astype(np.int8)
    run = simulate_emulator(qg, {"input": x}, probes=["lif"])
    s = run.traces["lif"]["s"][:, 0].copy()
    s[0] = 0  # the test blanks the first step's spikes
    s_gt = _t_first(np.load(d / "layer1.npy")[0])
    u_gt = _t_first(np.load(d / "current.npy")[0]) * 64
    assert s_gt.sum() > 1000
    np.testing.assert_array_equal(s, s_gt)
    np.testing.assert_array_equal(run.traces["lif"]["u"][:, 0], u_gt)


def test_tiny_net_with_resets(gts, lavadl_netx_dir):
    qg = read_netx(lavadl_netx_dir / "tiny.net")
    g = qg.graph
    neurons = [n for n in g.order()[0] if g.nodes[n].spec.family == "neuron"]
    qg.q[neurons[0]].bias_mant = np.load(gts / "tinynet" / "input_bias.npy").transpose(2, 1, 0).astype(np.int64)
    for i, n in enumerate(neurons[1:], start=1):
        qg.q[n].reset_interval, qg.q[n].reset_offset = 17, (i - 1) + 2
    steps = 17 + len(neurons)
    run = simulate_emulator(qg, {"input": np.zeros((steps, 1, *g.nodes["input"].out_shape), np.int8)})
    gt = _t_first(np.load(gts / "tinynet" / "output.npy")[0])[1:]
    assert gt.sum() > 50
    np.testing.assert_array_equal(run.outputs["output"][2:17, 0].reshape(gt.shape), gt)
