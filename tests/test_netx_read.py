"""lava-dl netx .net files: load (or a clear refusal), counts equal raw HDF5 counts, q equals what netx builds."""

import warnings

import numpy as np
import pytest
from raw_counts import netx_counts

from spikedeploy.converters.netx import optimize_weight_bits, read_netx
from spikedeploy.errors import FileFormatError, RepairWarning, UnsupportedError
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, FoldedParams
from spikedeploy.io.graph_files import load_any, load_graph

LOADABLE = [  # (path relative to the lava-dl netx test dir, or absolute fixture; num_layers)
    ("FIXTURE", None),
    ("tiny.net", None),
    ("mnist.net", None),
    ("gts/ntidigits/ntidigits.net", 5),  # lava-dl's own test reads the first 5 (the 6th is 'average')
    ("gts/pilotnet_lif/network.net", None),
]


def _path(rel, fixtures_dir, lavadl_netx_dir):
    return fixtures_dir / "netx" / "nir_docs_network.net" if rel == "FIXTURE" else lavadl_netx_dir / rel


@pytest.mark.parametrize("rel,num_layers", LOADABLE, ids=[r for r, _ in LOADABLE])
def test_counts_match_raw_hdf5(rel, num_layers, fixtures_dir, lavadl_netx_dir):
    p = _path(rel, fixtures_dir, lavadl_netx_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepairWarning)
        qg = read_netx(p, num_layers=num_layers)
    assert isinstance(qg, QGraph) and qg.target == "loihi2"
    st = qg.graph.stats()
    raw = netx_counts(p, num_layers)
    assert st["total"]["neurons"] == raw["neurons"]
    # Delay nodes in the float view carry the DelayDense delays (folded into the synapse on chip)
    syn = sum(r["synapses"] for n, r in st["nodes"].items() if r["op"] in ("Linear", "Conv2d"))
    assert syn == raw["synapses"]
    # every neuron node has the integer parameters Lava's LIF gets; every synapse its mantissas
    for n, node in qg.graph.nodes.items():
        if node.op == "CubaLIF":
            q = qg.q[n]
            assert isinstance(q, CubaParams)
            assert q.bias_mant.shape == tuple(node.out_shape) and q.bias_exp == 6
        if node.op in ("Linear", "Conv2d"):
            q = qg.q[n]
            assert q.weight.shape == node.params["weight"].shape
            # the float view's weight is exactly mantissa * 2**weight_exp
            np.testing.assert_array_equal(q.weight * 2.0 ** q.weight_exp, node.params["weight"])


def test_tiny_net_values_from_file(lavadl_netx_dir):
    """Hand-read tiny.net: iDecay 4096 -> du 4095, vDecay 1024, vThMant 25, conv bias per channel."""
    import h5py

    p = lavadl_netx_dir / "tiny.net"
    qg = load_graph(p)
    with h5py.File(p) as f:
        b1 = f["layer/1/bias"][()]
        w1 = f["layer/1/weight"][()]
    q = qg.q["1.neuron"]
    assert (q.du, q.dv, q.vth) == (4095, 1024, 25)
    assert q.bias_mant.shape == (24, 6, 6)
    np.testing.assert_array_equal(q.bias_mant[:, 3, 2], b1.astype(int))
    np.testing.assert_array_equal(qg.q["1.conv"].weight, w1[..., 0].astype(int))
    assert qg.q["0.neuron"].input_mode == "bias"
    assert (qg.q["0.neuron"].input_weight, qg.q["0.neuron"].input_bias) == (36, 34)
    assert load_any(p).nodes.keys() == qg.graph.nodes.keys()


def test_ntidigits_delays(lavadl_netx_dir):
    import h5py

    p = lavadl_netx_dir / "gts/ntidigits/ntidigits.net"
    qg = read_netx(p, num_layers=5)
    with h5py.File(p) as f:
        d = f["layer/2/delay"][()]
    want = np.repeat(np.clip(d, 0, 62).astype(int).reshape(-1, 1), 64, axis=1)  # axonal: one per output row
    np.testing.assert_array_equal(qg.q["2.dense"].delay, want)
    assert qg.q["2.delay"] == FoldedParams("2.dense")
    assert qg.graph.predecessors("2.neuron") == ["2.delay"]
    # the partitioner stores a 6-bit delay field with every synapse of the delayed layers (2 and 3) only
    from spikedeploy.partition.resources import build_model
    from spikedeploy.targets.spec import get_target

    bits = {p.dst: (p.kind, p.weight_bits) for p in build_model(qg.graph, get_target("loihi2"), qg).projections}
    assert {"3.delay", "2.delay"} <= set(qg.graph.nodes) and "4.delay" not in qg.graph.nodes
    assert bits == {"2.neuron": ("dense", 8 + 6), "3.neuron": ("dense", 8 + 6), "4.neuron": ("dense", 8)}


def test_refusals_name_the_layer(lavadl_netx_dir):
    with pytest.raises(UnsupportedError, match=r"ntidigits\.net: layer 5 \(average\).*num_layers=5"):
        read_netx(lavadl_netx_dir / "gts/ntidigits/ntidigits.net")


def test_optimize_weight_bits_matches_netx():
    """Our copy of netx's optimize_weight_bits against lava-dl's own, on random integer matrices."""
    from spikedeploy.targets.lava.compat import lava_ready

    lava_ready()
    from lava.lib.dl.netx.utils import optimize_weight_bits as lava_opt

    rng = np.random.default_rng(0)
    cases = [rng.integers(-128, 128, (7, 5)) * 2, rng.integers(0, 256, (4, 9)), -rng.integers(1, 200, (3, 3)),
             rng.integers(-3, 4, (6, 6)), rng.integers(-256, 255, (5, 5)), np.array([[4, -8], [12, 0]])]
    for w in cases:
        ours = optimize_weight_bits(w)
        theirs = lava_opt(w.copy())
        np.testing.assert_array_equal(ours[0], theirs[0])
        assert ours[1:3] == theirs[1:3]
        assert ours[3] == {1: "mixed", 2: "exc", 3: "inh"}[int(theirs[3])]


def test_truncated_netx(tmp_path, lavadl_netx_dir):
    src = (lavadl_netx_dir / "mnist.net").read_bytes()
    p = tmp_path / "cut.net"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(FileFormatError, match="cut.net"):
        load_graph(p)


@pytest.mark.parametrize("rel,num_layers", LOADABLE, ids=[r for r, _ in LOADABLE])
def test_q_equals_what_lava_netx_builds(rel, num_layers, fixtures_dir, lavadl_netx_dir):
    """Build the same file with lava-dl's netx.hdf5.Network (no run) and compare every integer parameter."""
    from spikedeploy.targets.lava.compat import netx as lava_netx

    netx = lava_netx()  # includes the numpy-2 fix for netx's input-layer int(array)
    p = _path(rel, fixtures_dir, lavadl_netx_dir)
    kw = {} if num_layers is None else {"num_layers": num_layers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = netx.hdf5.Network(net_config=str(p), **kw)
        qg = read_netx(p, **kw)
    neurons = [n for n, v in qg.graph.nodes.items() if v.op == "CubaLIF"]
    assert len(neurons) == len(net.layers)
    synapses = [n for n, v in qg.graph.nodes.items() if v.op in ("Linear", "Conv2d")]
    lava_syn = [blk.synapse for blk in net.layers if hasattr(blk, "synapse")]
    assert len(synapses) == len(lava_syn)
    for blk, n in zip(net.layers, neurons, strict=True):
        q = qg.q[n]
        for k in ("du", "dv", "vth", "bias_exp"):
            assert np.all(np.asarray(getattr(blk.neuron, k).init) == getattr(q, k)), (n, k)
        bm = q.bias_mant
        bm_whc = bm.transpose(2, 1, 0) if bm.ndim == 3 else bm  # Lava neurons are WHC
        assert np.array_equal(np.broadcast_to(np.asarray(blk.neuron.bias_mant.init), bm_whc.shape), bm_whc), n
    for s, n in zip(lava_syn, synapses, strict=True):
        q = qg.q[n]
        if qg.graph.nodes[n].op == "Linear":
            np.testing.assert_array_equal(np.asarray(s.weights.init), q.weight)
            assert (s.proc_params["weight_exp"], s.proc_params["num_weight_bits"]) == (q.weight_exp,
                                                                                        q.num_weight_bits)
            if q.delay is not None:
                np.testing.assert_array_equal(np.asarray(s.delays.init), q.delay)
        else:  # Lava's Conv holds (out, kW, kH, in) flipped kernels
            np.testing.assert_array_equal(np.asarray(s.weight.init), q.weight[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))
