"""Graphs with host nodes run end to end in every backend (spikedeploy/simulate/hybrid.py).

References: the torch model's own spikes (float backend), Lava's simulation (emulator = Lava bit for bit
on every chip node, across the host stages), and hand-computed payload encodings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import snntorch as snn
import torch
from click.testing import CliRunner
from torch import nn

from spikedeploy.cli.main import cli
from spikedeploy.errors import UnsupportedError
from spikedeploy.export import export_model
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.float_ref import simulate_float
from spikedeploy.simulate.hybrid import encode_payload, payload_encoding

N, D = 4, 8


def lif(**kw):
    return snn.Leaky(beta=0.5, reset_mechanism="zero", reset_delay=False, **kw)


class TokenAttention(nn.Module):
    """Spikformer-style attention on N tokens of D features: q, k, v spikes, (q @ k^T) @ v * 0.25 on the host
    (a product of two dynamic spike matrices), then a spiking layer and a readout on chip."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(16, N * D)
        self.lif0 = lif()
        self.q, self.k, self.v = (nn.Linear(N * D, N * D) for _ in range(3))
        self.lq, self.lk, self.lv = lif(), lif(), lif()
        self.la = lif(threshold=0.5)
        self.out = nn.Linear(N * D, 10)
        self.lo = lif()

    def forward(self, x):
        s0, _ = self.lif0(self.inp(x))
        q = self.lq(self.q(s0))[0].reshape(-1, N, D)
        k = self.lk(self.k(s0))[0].reshape(-1, N, D)
        v = self.lv(self.v(s0))[0].reshape(-1, N, D)
        a = (q @ k.transpose(-2, -1)) @ v * 0.25
        sa, _ = self.la(a.reshape(-1, N * D))
        return self.lo(self.out(sa))[0]


def build_attention():
    torch.manual_seed(0)
    m = TokenAttention()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.mul_(3.0)
    m.input_shapes = {"x": (16,)}
    return m.eval()


class HybridFrontEnd(nn.Module):
    """ASH-style hybrid: an ANN conv front end with ReLU and max pooling on the host, a spiking back end."""

    def __init__(self):
        super().__init__()
        self.frontend = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * 4 * 4, 12)
        self.lif1 = lif()
        self.fc2 = nn.Linear(12, 5)
        self.lif2 = lif()

    def forward(self, img):
        f = self.frontend(img).flatten(1)
        s1, _ = self.lif1(self.fc(f))
        return self.lif2(self.fc2(s1))[0]


def build_hybrid():
    torch.manual_seed(1)
    m = HybridFrontEnd()
    with torch.no_grad():
        m.fc.weight.mul_(4.0)
        m.fc2.weight.mul_(4.0)
    m.input_shapes = {"img": (1, 8, 8)}
    return m.eval()


def torch_spikes(model, x: torch.Tensor, module: str) -> np.ndarray:
    """The model's own spikes of one neuron module, step by step from rest."""
    seen = []
    h = dict(model.named_modules())[module].register_forward_hook(lambda m, a, out: seen.append(out[0]))
    for m in model.modules():
        if isinstance(m, snn.Leaky):
            m.reset_mem()
    with torch.no_grad():
        for t in range(x.shape[0]):
            model(x[t])
    h.remove()
    return torch.stack(seen).double().numpy()


@pytest.fixture(scope="module")
def attention():
    m = build_attention()
    r = export_model(m, steps=12, batch=3)
    return m, r


def spike_inputs(T, B, shape, seed):
    return (np.random.default_rng(seed).random((T, B, *shape)) < 0.5).astype(np.float64)


def test_attention_float_run_equals_torch(attention):
    m, r = attention
    g = r.graph
    assert {n for n, v in g.nodes.items() if v.placement == "host" and v.op != "Output"} == {"matmul", "matmul_1"}
    assert r.check["hybrid"]["identical"] and r.check["hybrid"]["spikes"] > 0
    x = spike_inputs(10, 5, (16,), seed=3)  # fresh inputs, another batch size than the export check
    run = simulate_float(g, {"x": x}, probes=["la", "lo"])
    for node in ("la", "lo"):
        ref = torch_spikes(m, torch.as_tensor(x, dtype=torch.float32), node)
        np.testing.assert_array_equal(run.traces[node]["s"].reshape(ref.shape), ref)
    assert run.counts["la"].sum() > 0 and run.meta["chip_stages"] == 2


def test_attention_payload_is_exact(attention):
    _, r = attention
    pay = r.graph.nodes["matmul_1"].meta["payload"]
    # counts of coincident spikes times 0.25: integer multiples of 2**-2, exactly
    assert pay["exact"] and pay["scale"] == 0.25
    assert "matmul_1->la" in r.graph.nodes and r.graph.nodes["matmul_1->la"].op == "Scale"


def test_attention_emulator_equals_lava(attention):
    _, r = attention
    qg = quantize(r.graph, "loihi2")
    x = {"x": spike_inputs(12, 2, (16,), seed=5)}
    probes = ["lif0", "lq", "lk", "lv", "la", "lo"]
    emu = simulate(qg, x, backend="emulator", probes=probes)
    lava = simulate(qg, x, backend="lava", probes=probes)
    assert emu.counts["la"].sum() > 0
    for n in probes:
        for var in ("u", "v", "s"):
            np.testing.assert_array_equal(emu.traces[n][var], lava.traces[n][var], err_msg=f"{n}.{var}")
    np.testing.assert_array_equal(emu.outputs["output"], lava.outputs["output"])


def test_attention_fixed_point_tracks_delayed_float(attention):
    _, r = attention
    qg = quantize(r.graph, "loihi2")
    x = {"x": spike_inputs(12, 6, (16,), seed=7)}
    ref = simulate_float(r.graph, x, synapse_delay=True, probes=["la"])
    emu = simulate(qg, x, backend="emulator", probes=["la"])
    a, b = ref.traces["la"]["s"] != 0, emu.traces["la"]["s"].reshape(ref.traces["la"]["s"].shape) != 0
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert a.sum() > 0 and dice > 0.9


def test_hybrid_front_end_on_host():
    m = build_hybrid()
    r = export_model(m, steps=8, batch=2)
    g = r.graph
    host = {n: v.op for n, v in g.nodes.items() if v.placement == "host" and v.op != "Output"}
    # conv (read only by host ops) moves to the host; ReLU and MaxPool are host ops
    assert g.nodes["frontend.0"].placement == "host" and "frontend.1" in host and "frontend.2" in host
    assert r.check["hybrid"]["identical"]
    pay = g.nodes["frontend.2"].meta["payload"]
    assert not pay["exact"] and pay["bits"] == 8 and pay["scale"] == pytest.approx(pay["max_abs"] / 127)
    x = np.random.default_rng(2).random((8, 3, 1, 8, 8))
    run = simulate_float(g, {"img": x}, probes=["lif2"])
    ref = torch_spikes(m, torch.as_tensor(x, dtype=torch.float32), "lif2")
    np.testing.assert_array_equal(run.traces["lif2"]["s"].reshape(ref.shape), ref)
    qg = quantize(g, "loihi2")
    emu = simulate(qg, {"img": x[:, :2]}, backend="emulator", probes=["lif1", "lif2"])
    lava = simulate(qg, {"img": x[:, :2]}, backend="lava", probes=["lif1", "lif2"])
    for n in ("lif1", "lif2"):
        np.testing.assert_array_equal(emu.traces[n]["v"], lava.traces[n]["v"])
        np.testing.assert_array_equal(emu.traces[n]["s"], lava.traces[n]["s"])


def test_host_modules_marked_explicitly():
    m = build_attention()
    r = export_model(m, steps=6, batch=2, host_modules=["out"])
    assert r.graph.nodes["out"].placement == "host" and r.graph.nodes["out"].meta["host_reason"].startswith("marked")
    assert r.check["hybrid"]["identical"]
    with pytest.raises(UnsupportedError, match=r"host_modules \['nope'\] name no module"):
        export_model(m, steps=6, batch=2, host_modules=["nope"])


def test_payload_encoding_by_hand():
    e = payload_encoding(np.array([0.0, 0.375, -1.25, 2.0]))  # multiples of 2**-3
    assert e["exact"] and e["scale"] == 0.125
    e = payload_encoding(np.array([0.1, -0.3, 1.27]))
    assert not e["exact"] and e["scale"] == pytest.approx(1.27 / 127)
    node = Node("h", "MatMul", {"out_shape": np.array([3])}, meta={"payload": e})
    np.testing.assert_array_equal(encode_payload(node, np.array([0.1, -0.3, 1.27, 5.0, -5.0])),
                                  [10, -30, 127, 127, -128])  # rounded, then saturated at 8 bits


def test_host_node_without_program_refused_in_one_line():
    g = Graph(dt=1e-3)
    g.add(Node("x", "Input", {"shape": np.array([4])}))
    g.add(Node("soft", "Softmax", {"out_shape": np.array([4])}))
    g.add(Node("syn", "Scale", {"scale": np.asarray(1.0)}))
    g.add(Node("lif", "LIF", {"tau": np.full(4, 2e-3), "r": np.ones(4), "v_leak": np.zeros(4),
                              "v_threshold": np.ones(4)}))
    g.add(Node("out", "Output"))
    for a, b in (("x", "soft"), ("soft", "syn"), ("syn", "lif"), ("lif", "out")):
        g.connect(a, b)
    with pytest.raises(UnsupportedError, match=r"node 'soft' \(Softmax\) runs on the host but carries no program"):
        simulate_float(g, {"x": np.ones((3, 1, 4))})


def test_cli_pipeline_with_host_nodes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "attn_model.py").write_text("from test_hybrid import build_attention as build_model\n")
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    run = CliRunner().invoke
    d = str(tmp_path)

    def ok(args):
        res = run(cli, args)
        assert res.exit_code == 0, res.output
        return res.output

    ok(["export", "attn_model:build_model", "-o", f"{d}/m.nir", "--steps", "10"])
    ok(["quantize", f"{d}/m.nir", "--target", "loihi2", "-o", f"{d}/m.q.npz"])
    np.save(f"{d}/x.npy", spike_inputs(10, 2, (16,), seed=11))
    for backend in ("float", "emulator", "lava"):
        src = "m.nir" if backend == "float" else "m.q.npz"
        ok(["simulate", f"{d}/{src}", "--backend", backend, "--input", f"{d}/x.npy", "-o", f"{d}/{backend}.npz"])
    from spikedeploy.simulate.result import load_run

    e, lava = load_run(f"{d}/emulator.npz"), load_run(f"{d}/lava.npz")
    np.testing.assert_array_equal(e.outputs["output"], lava.outputs["output"])
    assert all(np.array_equal(e.counts[k], lava.counts[k]) for k in e.counts)
    ok(["partition", f"{d}/m.q.npz", "--target", "loihi2", "--run", f"{d}/emulator.npz", "-o", f"{d}/p.json"])
    out = ok(["report", f"{d}/m.q.npz", "--target", "loihi2", "--run", f"{d}/emulator.npz", "--placement",
              f"{d}/p.json", "--json"])
    rep = json.loads(out)
    split = rep["chip_host_split"]
    assert set(split["host_nodes"]) >= {"matmul", "matmul_1"} and split["host_macs_per_step"] > 0
    # per step: the q, k, v spikes go to the host (3 x 32 bits), 32 payloads of 16 bits come back, once a step
    assert split["chip_to_host_bits_per_step"] == 3 * N * D
    assert split["host_to_chip_bits_per_step"] == N * D * 16 and split["round_trips_per_step"] == 1
    assert {o["node"]: o["op"] for o in split["operations"]} == {"matmul": "MatMul", "matmul_1": "MatMul"}


def test_op_with_no_chip_or_host_path_refused_in_one_line():
    class Bessel(nn.Module):  # torch.special.bessel_j0 has no ONNX export
        def forward(self, x):
            return torch.special.bessel_j0(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.odd, self.fc, self.lif = Bessel(), nn.Linear(4, 4), lif()

        def forward(self, x):
            return self.lif(self.fc(self.odd(x)))[0]

    with pytest.raises(UnsupportedError) as e:
        export_model(Net(), example_inputs={"x": torch.rand(3, 2, 4)})
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg and "special_bessel_j0" in msg
    assert "neither the chip nor the host can run it" in msg and "on chip: Linear" in msg and "Fix:" in msg


def test_payload_scale_from_calibration_data():
    m = build_hybrid()
    r = export_model(m, steps=4, batch=2)
    before = r.graph.nodes["frontend.2"].meta["payload"]
    big = {"img": 3.0 * np.random.default_rng(4).random((6, 5, 1, 8, 8))}  # brighter images than at export
    qg = quantize(r.graph, "loihi2", calibration=big)
    after = qg.graph.nodes["frontend.2"].meta["payload"]
    ref = simulate_float(r.graph, big, probes=["frontend.2"]).traces["frontend.2"]["out"]
    want = max(float(np.abs(ref).max()), before["max_abs"])
    assert after["max_abs"] == pytest.approx(want) and after["scale"] == pytest.approx(want / 127)
    assert after["scale"] > before["scale"] and "calibration" in after["source"]
    assert any("payload scale" in w for w in qg.meta["rewrites"])
    assert r.graph.nodes["frontend.2"].meta["payload"] == before  # the input graph is not modified


def test_round_trip_inside_the_time_loop_adds_to_every_step(attention, monkeypatch):
    from spikedeploy.estimate import energy
    from spikedeploy.partition.placer import partition
    from spikedeploy.targets.spec import get_target

    _, r = attention
    qg = quantize(r.graph, "loihi2")
    target = get_target("loihi2")
    place = partition(qg.graph, target, qgraph=qg)
    with_rt = energy.estimate(qg.graph, target, place, qgraph=qg, steps=10, assumed_rate=0.1)
    t_rt = next(a for a in with_rt["constants"] if a["name"] == "t_host_round_trip")
    assert t_rt["estimate"] and t_rt["value"] > 0
    monkeypatch.setattr(energy, "host_boundary", lambda g: {"round_trips_per_step": 0})
    without = energy.estimate(qg.graph, target, place, qgraph=qg, steps=10, assumed_rate=0.1)
    # one host op (the attention products) sits between chip layers: one round trip a step
    assert with_rt["per_step"]["latency_s"] - without["per_step"]["latency_s"] == pytest.approx(t_rt["value"])
    assert with_rt["per_inference"]["latency_s"] - without["per_inference"]["latency_s"] == pytest.approx(10 * t_rt["value"])
