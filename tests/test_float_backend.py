"""Float backend against snnTorch (spike for spike) and against values computed by hand."""

import numpy as np
import pytest
import snntorch as snn
import torch

from spikedeploy.errors import ParameterError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.simulate.float_ref import simulate_float

DT = 1e-4


def _lif(name, beta, thr, n, **kw):
    beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), n)
    return Node(name, "LIF", {"tau": DT / (1 - beta), "r": 1 / (1 - beta), "v_leak": np.zeros(n),
                              "v_threshold": np.full(n, float(thr))}, **kw)


def _snn_run(layers, x):
    """Run a list of (module | Leaky) in snnTorch, returning spikes of each Leaky per step.

    Also asserts that no membrane stays above threshold after a reset: there snnTorch's subtractive
    reset (reset_delay=False) tests the next spike on beta*v + x - thr, a quirk NIR's graph does not
    model, so the comparison is only meaningful when that never happens.
    """
    mems = [lay.init_leaky() if isinstance(lay, snn.Leaky) else None for lay in layers]
    out = {i: [] for i, lay in enumerate(layers) if isinstance(lay, snn.Leaky)}
    with torch.no_grad():
        for t in range(x.shape[0]):
            h = x[t]
            for i, lay in enumerate(layers):
                if isinstance(lay, snn.Leaky):
                    h, mems[i] = lay(h, mems[i])
                    h = h.to(x.dtype)  # snnTorch's Heaviside returns float32 spikes
                    assert not (mems[i] > lay.threshold).any()
                    out[i].append(h.clone())
                else:
                    h = lay(h)
    return {i: torch.stack(v).numpy() for i, v in out.items()}


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("seed", [0, 1])
def test_dense_matches_snntorch(reset, seed):
    torch.manual_seed(seed)
    T, B, n_in, n_h, n_out = 30, 8, 20, 16, 5
    fc1, fc2 = torch.nn.Linear(n_in, n_h).double(), torch.nn.Linear(n_h, n_out).double()
    with torch.no_grad():
        # one step's input stays below v_th, so v never passes 2*v_th (see _snn_run), and the bias
        # keeps neurons firing often
        for fc, thr in ((fc1, 1.0), (fc2, 0.5)):
            fc.weight.uniform_(-0.3, 1.0)
            fc.bias.fill_(0.05 * thr)
            fc.weight.mul_(0.9 * thr / fc.weight.clamp(min=0).sum(1, keepdim=True))
    beta1, beta2 = 0.9, 0.8
    lif1 = snn.Leaky(beta=beta1, threshold=1.0, reset_mechanism=reset, reset_delay=False)
    lif2 = snn.Leaky(beta=beta2, threshold=0.5, reset_mechanism=reset, reset_delay=False)
    x = (torch.rand(T, B, n_in, dtype=torch.float64) < 0.4).double()
    ref = _snn_run([fc1, lif1.double(), fc2, lif2.double()], x)

    g = Graph.chain(
        Node("in", "Input", {"shape": [n_in]}),
        Node("fc1", "Affine", {"weight": fc1.weight.detach().numpy(), "bias": fc1.bias.detach().numpy()}),
        _lif("lif1", beta1, 1.0, n_h),
        Node("fc2", "Affine", {"weight": fc2.weight.detach().numpy(), "bias": fc2.bias.detach().numpy()}),
        _lif("lif2", beta2, 0.5, n_out),
        Node("out", "Output"),
        dt=DT, reset=reset,
    ).validate()
    run = simulate_float(g, {"in": x.numpy()}, probes=["lif1"])
    assert ref[1].sum() > 50 and ref[3].sum() > 10  # the comparison exercises spikes and resets
    np.testing.assert_array_equal(run.traces["lif1"]["s"], ref[1])
    np.testing.assert_array_equal(run.outputs["out"], ref[3])
    np.testing.assert_array_equal(run.counts["lif2"], ref[3].sum(-1))


def test_float32_snntorch_model_spikes_identical():
    """The usual case: an snnTorch model in float32, our reference in float64."""
    torch.manual_seed(3)
    T, B = 25, 16
    fc1, fc2 = torch.nn.Linear(30, 20), torch.nn.Linear(20, 4, bias=False)
    with torch.no_grad():
        fc1.weight.mul_(2.5)
        fc2.weight.mul_(2.5)
    lif1 = snn.Leaky(beta=0.95, reset_mechanism="zero", reset_delay=False)
    lif2 = snn.Leaky(beta=0.7, reset_mechanism="zero", reset_delay=False)
    x = (torch.rand(T, B, 30) < 0.3).float()
    ref = _snn_run([fc1, lif1, fc2, lif2], x)
    g = Graph.chain(
        Node("in", "Input", {"shape": [30]}),
        Node("fc1", "Affine", {"weight": fc1.weight.detach().numpy(), "bias": fc1.bias.detach().numpy()}),
        _lif("lif1", np.float32(0.95), 1.0, 20),
        Node("fc2", "Linear", {"weight": fc2.weight.detach().numpy()}),
        _lif("lif2", np.float32(0.7), 1.0, 4),
        Node("out", "Output"),
        dt=DT,
    ).validate()
    run = simulate_float(g, {"in": x.numpy()}, probes="*")
    assert ref[1].sum() > 50
    np.testing.assert_array_equal(run.traces["lif1"]["s"], ref[1])
    np.testing.assert_array_equal(run.outputs["out"], ref[3])


def test_conv_matches_snntorch():
    torch.manual_seed(2)
    T, B = 20, 4
    conv = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1).double()
    with torch.no_grad():
        conv.weight.mul_(2)
    pool = torch.nn.AvgPool2d(2)
    fc = torch.nn.Linear(4 * 2 * 2, 6).double()
    with torch.no_grad():
        fc.weight.mul_(3)
    lif1 = snn.Leaky(beta=0.9, reset_mechanism="zero", reset_delay=False).double()
    lif2 = snn.Leaky(beta=0.85, reset_mechanism="zero", reset_delay=False).double()
    x = (torch.rand(T, B, 2, 8, 8, dtype=torch.float64) < 0.5).double()
    ref = _snn_run([conv, lif1, pool, torch.nn.Flatten(), fc, lif2], x)
    g = Graph.chain(
        Node("in", "Input", {"shape": [2, 8, 8]}),
        Node("conv", "Conv2d", {"weight": conv.weight.detach().numpy(), "bias": conv.bias.detach().numpy(),
                                "stride": 2, "padding": 1}),
        _lif("lif1", 0.9, 1.0, (4, 4, 4)),
        Node("pool", "AvgPool2d", {"kernel_size": 2, "stride": 2}),
        Node("flat", "Flatten"),
        Node("fc", "Affine", {"weight": fc.weight.detach().numpy(), "bias": fc.bias.detach().numpy()}),
        _lif("lif2", 0.85, 1.0, 6),
        Node("out", "Output"),
        dt=DT,
    ).validate()
    run = simulate_float(g, {"in": x.numpy()}, probes=["lif1"])
    assert ref[1].sum() > 50 and ref[5].sum() > 10
    np.testing.assert_array_equal(run.traces["lif1"]["s"], ref[1])
    np.testing.assert_array_equal(run.outputs["out"], ref[5])


def _one(op, params, dt=1.0, **kw):
    return Graph.chain(Node("in", "Input", {"shape": [1]}), Node("n", op, params), Node("out", "Output"),
                       dt=dt, **kw).validate()


def test_cubalif_by_hand():
    # dt/tau_syn = 0.5, dt/tau_mem = 0.25, w_in = 2, r = 1, v_th = 1, v_leak = 0
    g = _one("CubaLIF", {"tau_syn": [2.0], "tau_mem": [4.0], "r": [1.0], "v_leak": [0.0],
                         "v_threshold": [1.0], "w_in": [2.0]})
    run = simulate_float(g, {"in": np.ones((4, 1, 1))}, probes=["n"])
    # u: 0.5*(2) = 1, then 1 + 0.5*(-1 + 2) = 1.5, 1.75, 1.875
    np.testing.assert_allclose(run.traces["n"]["u"][:, 0, 0], [1.0, 1.5, 1.75, 1.875])
    # v: 0.25, 0.25+0.25*(1.5-0.25)=0.5625, 0.5625+0.25*(1.75-0.5625)=0.859375,
    #    0.859375+0.25*(1.875-0.859375)=1.11328125 > 1 -> spike, reset to 0
    np.testing.assert_allclose(run.traces["n"]["v"][:, 0, 0], [0.25, 0.5625, 0.859375, 0.0])
    np.testing.assert_array_equal(run.outputs["out"][:, 0, 0], [0, 0, 0, 1])


def test_if_by_hand_and_strict_threshold():
    # dt*r = 0.5 per step: v = 0.5, 1.0 (== v_th: no spike, strict >), 1.5 -> spike -> reset to v_reset=0.2
    g = _one("IF", {"r": [1.0], "v_threshold": [1.0], "v_reset": [0.2]}, dt=0.5)
    run = simulate_float(g, {"in": np.ones((5, 1, 1))}, probes=["n"])
    np.testing.assert_array_equal(run.outputs["out"][:, 0, 0], [0, 0, 1, 0, 1])
    np.testing.assert_allclose(run.traces["n"]["v"][:, 0, 0], [0.5, 1.0, 0.2, 0.7, 0.2])
    gs = _one("IF", {"r": [1.0], "v_threshold": [1.0]}, dt=0.5, reset="subtract")
    rs = simulate_float(gs, {"in": np.ones((5, 1, 1))}, probes=["n"])
    np.testing.assert_allclose(rs.traces["n"]["v"][:, 0, 0], [0.5, 1.0, 0.5, 1.0, 0.5])


def test_delay_in_time_units():
    g = Graph.chain(Node("in", "Input", {"shape": [2]}), Node("d", "Delay", {"delay": [0.002, 0.006]}),
                    Node("out", "Output"), dt=0.002).validate()
    x = np.arange(1, 6, dtype=float)[:, None, None] * np.ones((1, 1, 2))
    y = simulate_float(g, {"in": x}).outputs["out"][:, 0]
    np.testing.assert_array_equal(y[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(y[:, 1], [0, 0, 0, 1, 2])
    g.nodes["d"].params["delay"] = np.array([0.003, 0.002])
    with pytest.raises(ParameterError, match="'d'.*multiples of dt"):
        simulate_float(g, {"in": x})


def test_self_loop_by_hand():
    """One LIF neuron with a recurrent weight of -0.5 on itself (back edge: previous step's spike)."""
    g = Graph(dt=1.0)
    for n in (Node("in", "Input", {"shape": [1]}), Node("w", "Linear", {"weight": [[1.0]]}),
              Node("lif", "LIF", {"tau": [2.0], "r": [1.0], "v_leak": [0.0], "v_threshold": [0.5]}),
              Node("rec", "Linear", {"weight": [[-0.5]]}), Node("out", "Output")):
        g.add(n)
    for a, b in (("in", "w"), ("w", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")):
        g.connect(a, b)
    g.validate()
    run = simulate_float(g, {"in": np.full((6, 1, 1), 1.2)}, probes=["lif"])
    # v += 0.5*(-v + x), x = 1.2 - 0.5*s[t-1]
    # t0: v=0.6>0.5 spike->0; t1: x=0.7, v=0.35; t2: x=1.2, v=0.775 spike->0; t3: x=0.7 v=0.35; ...
    np.testing.assert_array_equal(run.outputs["out"][:, 0, 0], [1, 0, 1, 0, 1, 0])
    np.testing.assert_allclose(run.traces["lif"]["v"][:, 0, 0], [0, 0.35, 0, 0.35, 0, 0.35])


def test_synapse_delay_mode():
    """Each synapse chain adds one step; a recurrent loop through a synapse keeps exactly one step."""
    g = Graph.chain(Node("in", "Input", {"shape": [1]}), Node("w", "Linear", {"weight": [[1.0]]}),
                    Node("f", "Flatten"), Node("th", "Threshold", {"threshold": [0.5]}),
                    Node("w2", "Scale", {"scale": [1.0]}), Node("th2", "Threshold", {"threshold": [0.5]}),
                    Node("out", "Output"), dt=1.0).validate()
    x = np.zeros((6, 1, 1))
    x[1] = 1
    y0 = simulate_float(g, {"in": x}).outputs["out"][:, 0, 0]
    y1 = simulate_float(g, {"in": x}, synapse_delay=True).outputs["out"][:, 0, 0]
    np.testing.assert_array_equal(y0, [0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(y1, [0, 0, 0, 1, 0, 0])

    loop = Graph(dt=1.0)
    # an LIF with dt/tau = 1 and r = 1 is a stateless threshold on x (v = x), but counts as stateful
    th = Node("th", "LIF", {"tau": [1.0], "r": [1.0], "v_leak": [0.0], "v_threshold": [0.5]})
    for n in (Node("in", "Input", {"shape": [1]}), th,
              Node("rec", "Linear", {"weight": [[1.0]]}), Node("out", "Output")):
        loop.add(n)
    for a, b in (("in", "th"), ("th", "rec"), ("rec", "th"), ("th", "out")):
        loop.connect(a, b)
    loop.validate()
    x = np.zeros((5, 1, 1))
    x[1] = 1
    for mode in (False, True):  # a spike at step 1 re-enters every step in both modes
        y = simulate_float(loop, {"in": x}, synapse_delay=mode).outputs["out"][:, 0, 0]
        np.testing.assert_array_equal(y, [0, 1, 1, 1, 1])


def test_two_inputs_summed_and_pooling():
    g = Graph(dt=1.0)
    for n in (Node("a", "Input", {"shape": [1, 4, 4]}), Node("b", "Input", {"shape": [16]}),
              Node("pa", "SumPool2d", {"kernel_size": 2}), Node("fa", "Flatten"),
              Node("lb", "Linear", {"weight": np.ones((4, 16))}),
              Node("i", "I", {"r": [1.0]}), Node("out", "Output")):
        g.add(n)
    for a, b in (("a", "pa"), ("pa", "fa"), ("fa", "i"), ("b", "lb"), ("lb", "i"), ("i", "out")):
        g.connect(a, b)
    g.validate()
    xa = np.arange(16, dtype=float).reshape(1, 1, 1, 4, 4).repeat(2, axis=0)
    xb = np.ones((2, 1, 16))
    y = simulate_float(g, {"a": xa, "b": xb}).outputs["out"][:, 0]
    pooled = np.array([0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15], dtype=float)
    np.testing.assert_allclose(y, [pooled + 16, 2 * (pooled + 16)])


def test_missing_dt_names_node():
    g = _one("LIF", {"tau": [2.0], "r": [1.0], "v_leak": [0.0], "v_threshold": [1.0]}, dt=1.0)
    g.dt = None
    with pytest.raises(ParameterError, match="node 'n' \\(LIF\\).*dt"):
        simulate_float(g, {"in": np.ones((2, 1, 1))})
