"""Resonate-and-fire neurons against lava-dl 0.6.0's recorded complex_dense ground truths and Lava.

lava-dl's test_blocks.py TestRFBlocks (gts/complex_dense, (N, T) arrays, 2000 steps, sink column t = step t):
    test_input   ComplexInput block: RF_IZ (vth 1.1, period 7, alpha 0.05, state_exp 6, decay_bits 12), the
                 binary input in.npy fed to both its ports -> current.npy
    test_dense   ComplexDense block: weight_r / weight_img through two Dense synapses (8 bits, exponent 0,
                 sign mode from the weights) into RF (vth 25, period 11) -> out.npy
netx itself cannot build a `dense_comp` layer from a file (lava-dl 0.6.0's Network calls a
create_complex_dense that it does not define), so these are the blocks as the test builds them.
"""

from __future__ import annotations

import numpy as np
import pytest

from spikedeploy.errors import ParameterError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import RFParams, SynapseParams
from spikedeploy.targets.emulator import simulate_emulator

RF_IZ_INPUT = {"mode": "izhikevich", "period": 7, "alpha": 0.05, "vth": 1.1, "state_exp": 6, "decay_bits": 12}
RF_DENSE = {"mode": "phase", "period": 11, "alpha": 0.05, "vth": 25, "state_exp": 6, "decay_bits": 12}


def _rf_node(n: int, q: dict) -> Node:
    return Node("rf", "RF", params={"period": np.full(n, float(q["period"])), "alpha": np.asarray(q["alpha"]),
                                    "v_threshold": np.asarray(float(q["vth"])),
                                    "izhikevich": np.asarray(int(q["mode"] == "izhikevich"))})


def complex_input(n: int) -> QGraph:
    g = Graph(dt=1.0)
    g.add(Node("input", "Input", params={"shape": np.array([n])}))
    g.add(_rf_node(n, RF_IZ_INPUT))
    g.add(Node("output", "Output"))
    g.connect("input", "rf")
    g.connect("rf", "output")
    q = {"rf": RFParams(**RF_IZ_INPUT, real_inputs=["input"], imag_inputs=["input"])}
    return QGraph(graph=g, target="loihi2", q=q, scale={"rf": 1.0})


def complex_dense(wr: np.ndarray, wi: np.ndarray) -> QGraph:
    g = Graph(dt=1.0)
    g.add(Node("input", "Input", params={"shape": np.array([wr.shape[1]])}))
    g.add(Node("real", "Linear", params={"weight": wr.astype(np.float32)}))
    g.add(Node("imag", "Linear", params={"weight": wi.astype(np.float32)}))
    g.add(_rf_node(wr.shape[0], RF_DENSE))
    g.add(Node("output", "Output"))
    for a, b in (("input", "real"), ("input", "imag"), ("real", "rf"), ("imag", "rf"), ("rf", "output")):
        g.connect(a, b)
    q = {"real": SynapseParams(weight=wr.astype(np.int64), num_weight_bits=8),
         "imag": SynapseParams(weight=wi.astype(np.int64), num_weight_bits=8),
         "rf": RFParams(**RF_DENSE, real_inputs=["real"], imag_inputs=["imag"])}
    return QGraph(graph=g, target="loihi2", q=q, scale={"rf": 1.0})


@pytest.fixture(scope="module")
def cd(lavadl_netx_dir):
    d = lavadl_netx_dir / "gts" / "complex_dense"
    x = np.load(d / "in.npy")  # (200, 2000) binary
    return d, x.T[:, None].astype(np.int8)


def test_complex_input_block_matches_lavadl(cd):
    d, x = cd
    run = simulate_emulator(complex_input(x.shape[2]), {"input": x})
    gt = np.load(d / "current.npy").T
    assert gt.sum() > 10000
    np.testing.assert_array_equal(run.outputs["output"][:, 0], gt)


def test_complex_dense_block_matches_lavadl(cd):
    d, x = cd
    qg = complex_dense(np.load(d / "weight_r.npy"), np.load(d / "weight_img.npy"))
    run = simulate_emulator(qg, {"input": x})
    gt = np.load(d / "out.npy").T
    assert gt.sum() > 40000
    np.testing.assert_array_equal(run.outputs["output"][:, 0], gt)


def test_swapped_ports_change_the_result(cd):
    """The real and imaginary inputs are not interchangeable: swapping them breaks the match."""
    d, x = cd
    qg = complex_dense(np.load(d / "weight_r.npy"), np.load(d / "weight_img.npy"))
    qg.q["rf"].real_inputs, qg.q["rf"].imag_inputs = ["imag"], ["real"]
    run = simulate_emulator(qg, {"input": x[:300]})
    assert not np.array_equal(run.outputs["output"][:, 0], np.load(d / "out.npy").T[:300])


def test_ports_must_name_the_inputs(cd):
    d, x = cd
    qg = complex_dense(np.load(d / "weight_r.npy"), np.load(d / "weight_img.npy"))
    qg.q["rf"].imag_inputs = []
    with pytest.raises(ParameterError, match=r"node 'rf' \(RF\): real_inputs \['real'\] and imag_inputs \[\]"):
        simulate_emulator(qg, {"input": x[:5]})


def test_lava_equals_emulator_on_rf(lava, cd):
    """Lava's RF and RF_IZ processes on the same QGraphs, 2 samples of 300 steps: spikes, real and imag."""
    d, x = cd
    xs = np.concatenate([x[:300], x[300:600]], axis=1)
    for qg in (complex_input(x.shape[2]), complex_dense(np.load(d / "weight_r.npy"), np.load(d / "weight_img.npy"))):
        emu = simulate_emulator(qg, {"input": xs}, probes=["rf"])
        ref = lava(qg, {"input": xs}, probes=["rf"])
        assert emu.counts["rf"].sum() > 1000
        np.testing.assert_array_equal(emu.outputs["output"], ref.outputs["output"])
        for what in ("u", "v", "s"):
            np.testing.assert_array_equal(emu.traces["rf"][what], ref.traces["rf"][what], err_msg=what)


def test_float_backend_refuses_rf_in_one_line():
    from spikedeploy.errors import UnsupportedError
    from spikedeploy.simulate.float_ref import simulate_float

    with pytest.raises(UnsupportedError, match=r"node 'rf' \(RF\): the float backend has no resonate-and-fire"):
        simulate_float(complex_input(4).graph, {"input": np.zeros((3, 1, 4))})


def test_netx_dense_comp_is_refused_with_the_reason(tmp_path):
    import h5py

    from spikedeploy.converters.netx import read_netx
    from spikedeploy.errors import UnsupportedError

    p = tmp_path / "rf.net"
    with h5py.File(p, "w") as f:
        f.create_dataset("layer/0/type", data=np.array([b"input"], "S10"))
        f.create_dataset("layer/0/shape", data=np.array([4]))
        f.create_dataset("layer/1/type", data=np.array([b"dense_comp"], "S10"))
        f.create_dataset("layer/1/weight/real", data=np.ones((2, 4)))
        f.create_dataset("layer/1/weight/imag", data=np.ones((2, 4)))
    with pytest.raises(UnsupportedError, match=r"rf\.net: layer 1 \(dense_comp\).*create_complex_dense"):
        read_netx(p)


def test_rf_qgraph_file_round_trip(cd, tmp_path):
    from spikedeploy.io.qgraph_file import load_qgraph, save_qgraph

    d, x = cd
    save_qgraph(complex_dense(np.load(d / "weight_r.npy"), np.load(d / "weight_img.npy")), tmp_path / "rf.sdq")
    run = simulate_emulator(load_qgraph(tmp_path / "rf.sdq"), {"input": x})
    np.testing.assert_array_equal(run.outputs["output"][:, 0], np.load(d / "out.npy").T)
