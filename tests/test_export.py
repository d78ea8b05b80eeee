"""export_model: torch/snnTorch -> Graph, checked against snnTorch's own forward (not the exporter's trace)."""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

from spikedeploy.converters.torch_export import reset_neurons
from spikedeploy.errors import SpikeDeployError, UnsupportedError
from spikedeploy.export import ExportCheckError, export_model
from spikedeploy.simulate.float_ref import simulate_float

Z = {"reset_mechanism": "zero", "reset_delay": False}


def leaky(beta=0.9, threshold=1.0, **kw):
    return snn.Leaky(beta=beta, threshold=threshold, **{**Z, **kw})


def torch_run(model, inputs: dict[str, torch.Tensor], steps: int):
    """The model's own forward stepped `steps` times from rest: [T, B, ...] outputs (first if a tuple)."""
    model.eval()  # BatchNorm with running statistics, as the exporter reads it
    reset_neurons(model)
    outs = []
    with torch.no_grad():
        for t in range(steps):
            y = model(*[x[min(t, x.shape[0] - 1)] for x in inputs.values()])
            outs.append(y[0] if isinstance(y, tuple) else y)
    return torch.stack(outs).numpy()


def graph_run(graph, inputs, steps, output="output"):
    feeds = {k: v.expand(steps, *v.shape[1:]).numpy() if v.shape[0] == 1 else v.numpy() for k, v in inputs.items()}
    return simulate_float(graph, feeds, steps=steps).outputs[output]


def assert_exported_matches(model, inputs, steps=12, output="output", **kw):
    r = export_model(model, example_inputs=inputs, steps=steps, **kw)
    assert r.check["identical"] and r.check["spikes"] > 0
    ref = torch_run(model, inputs, steps)
    got = graph_run(r.graph, inputs, steps, output)
    assert ref.sum() > 0, "test input too weak: the model never spikes"
    np.testing.assert_array_equal(got.reshape(ref.shape), ref)
    return r


class LeakyNet(nn.Module):
    def __init__(self, beta2=None):
        super().__init__()
        self.fc1 = nn.Linear(20, 30)
        self.lif1 = leaky(0.8, threshold=0.7)
        self.fc2 = nn.Linear(30, 10)
        self.lif2 = leaky(torch.rand(10) if beta2 is None else beta2, threshold=torch.rand(10) + 0.5)

    def forward(self, x):
        spk, _ = self.lif1(self.fc1(x))
        return self.lif2(self.fc2(spk))[0]


def test_leaky_linear_matches_snntorch():
    torch.manual_seed(0)
    m = LeakyNet()
    r = assert_exported_matches(m, {"x": torch.rand(12, 4, 20) * 2})
    g = r.graph
    assert [g.nodes[n].op for n in g.nodes] == ["Input", "Affine", "LIF", "Affine", "LIF", "Output"]
    lif = g.nodes["lif2"].params
    beta = m.lif2.beta.numpy()
    np.testing.assert_allclose(lif["tau"], 1e-3 / (1 - beta.astype(np.float64)))
    np.testing.assert_array_equal((1 - 1e-3 / lif["tau"]).astype(np.float32), beta)  # beta -> tau -> beta exact
    assert lif["tau"].shape == (10,) and g.nodes["lif1"].params["v_threshold"].shape == (30,)  # scalars expanded
    assert g.dt == 1e-3 and g.reset == "zero" and g.meta["provenance"]["source"] == "snntorch"
    assert g.meta["placement"]["lif1"] == "chip" and g.nodes["x"].modality == "x"


def test_beta_one_exports_as_if():
    torch.manual_seed(1)
    r = assert_exported_matches(LeakyNet(beta2=1.0), {"x": torch.rand(12, 3, 20) * 2})
    assert r.graph.nodes["lif2"].op == "IF"


def test_synaptic_matches_snntorch():
    torch.manual_seed(2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 16)
            self.syn = snn.Synaptic(alpha=torch.rand(16) * 0.9, beta=0.85, **Z)
            self.fc2 = nn.Linear(16, 4)
            self.out = leaky(0.9)

        def forward(self, x):
            spk, _, _ = self.syn(self.fc(x))
            return self.out(self.fc2(spk))[0]

    r = assert_exported_matches(Net(), {"x": torch.rand(12, 3, 8) * 2})
    assert r.graph.nodes["syn"].op == "CubaLIF"


def test_rleaky_matches_snntorch():
    torch.manual_seed(3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 16)
            self.r1 = snn.RLeaky(beta=0.9, linear_features=16, **Z)  # all-to-all, with a bias
            self.fc2 = nn.Linear(16, 6)
            self.r2 = snn.RLeaky(beta=torch.rand(6), all_to_all=False, V=0.5, threshold=0.2, **Z)  # one-to-one

        def forward(self, x):
            spk, _ = self.r1(self.fc(x))
            return self.r2(self.fc2(spk))[0]

    m = Net()
    with torch.no_grad():
        m.r1.recurrent.bias.uniform_(0.05, 0.3)
    r = assert_exported_matches(m, {"x": torch.rand(15, 3, 8) * 3}, steps=15)
    g = r.graph
    assert ("r1.w_rec", "r1") in g.edges and ("r1", "r1.w_rec") in g.edges
    assert g.nodes["r2.w_rec"].op == "Scale"
    assert np.any(g.nodes["r1"].params["v_leak"] != 0)  # the recurrent bias, present from step 0


class ConvNet(nn.Module):
    def __init__(self, bn=False):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.lif1 = leaky(0.9)
        self.pool = nn.AvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(64, 10)
        self.bn2 = nn.BatchNorm1d(10) if bn else nn.Identity()
        self.lif2 = leaky(0.8)
        for b in (self.bn, self.bn2):
            if isinstance(b, nn.BatchNorm1d | nn.BatchNorm2d):
                b.running_mean.uniform_(-0.5, 0.5)
                b.running_var.uniform_(0.5, 2)
                b.weight.data.uniform_(0.5, 1.5)
                b.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        spk, _ = self.lif1(self.bn(self.conv(x)))
        return self.lif2(self.bn2(self.fc(self.flat(self.pool(spk)))))[0]


def test_conv_avgpool_flatten_matches_snntorch():
    torch.manual_seed(4)
    r = assert_exported_matches(ConvNet(), {"x": torch.rand(1, 2, 1, 8, 8) * 2})  # T=1: direct encoding
    g = r.graph
    assert [g.nodes[n].op for n in g.nodes][:6] == ["Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine"]
    assert g.nodes["flat"].out_shape == (64,)


def test_batchnorm_folded_exactly():
    torch.manual_seed(5)
    m = ConvNet(bn=True)
    r = assert_exported_matches(m, {"x": torch.rand(1, 2, 1, 8, 8) * 2})
    g = r.graph
    assert not any("bn" in n for n in g.nodes)
    assert len(r.rewrites) == 2 and "BatchNorm 'bn' folded into 'conv'" in r.rewrites[0]
    assert g.meta["rewrites"] == r.rewrites and g.nodes["conv"].meta["folded_batchnorm"] == "bn"
    # hand check of one folded weight
    s = m.bn.weight[1].item() / np.sqrt(m.bn.running_var[1].item() + m.bn.eps)
    np.testing.assert_allclose(g.nodes["conv"].params["weight"][1], m.conv.weight[1].detach().numpy() * s, rtol=1e-6)


class TwoModal(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc_a = nn.Linear(5, 12)
        self.lif_a = leaky(0.9)
        self.enc_b = nn.Linear(7, 12)
        self.lif_b = leaky(0.8)
        self.proj_a = nn.Linear(12, 6)
        self.proj_b = nn.Linear(12, 6)
        self.fused = leaky(0.9, threshold=0.5)  # two encoders summed into one LIF
        self.head = nn.Linear(24, 3)
        self.cat_out = leaky(0.9, threshold=0.3)  # concatenated, split into two Linears on chip
        self.head.weight.data.abs_()

    def forward(self, image, text):
        a, _ = self.lif_a(self.enc_a(image))
        b, _ = self.lif_b(self.enc_b(text))
        o, _ = self.fused(self.proj_a(a) + self.proj_b(b))
        c, _ = self.cat_out(self.head(torch.cat([a, b], dim=1)))
        return o, c


def test_two_input_fusion_matches():
    torch.manual_seed(6)
    m = TwoModal()
    inputs = {"image": torch.rand(12, 3, 5) * 2, "text": torch.rand(12, 3, 7) * 2}
    r = export_model(m, example_inputs=inputs)
    g = r.graph
    assert g.inputs == ["image", "text"] and g.nodes["text"].modality == "text"
    assert set(g.predecessors("fused")) == {"proj_a", "proj_b"} and g.nodes["fused"].modality == "fused"
    assert set(g.predecessors("cat_out")) == {"head.part0", "head.part1"}
    assert all(n.placement == "chip" for n in g.nodes.values())
    reset_neurons(m)
    ref_o, ref_c = [], []
    with torch.no_grad():
        for t in range(12):
            o, c = m(inputs["image"][t], inputs["text"][t])
            ref_o.append(o)
            ref_c.append(c)
    run = simulate_float(g, {k: v.numpy() for k, v in inputs.items()})
    assert torch.stack(ref_o).sum() > 0 and torch.stack(ref_c).sum() > 0
    np.testing.assert_array_equal(run.outputs["output_0"], torch.stack(ref_o).numpy())
    np.testing.assert_array_equal(run.outputs["output_1"], torch.stack(ref_c).numpy())
    # user-given names
    r2 = export_model(m, example_inputs={"img": inputs["image"], "txt": inputs["text"]}, input_names=["img", "txt"])
    assert r2.graph.inputs == ["img", "txt"]


# reset by subtraction and reset_delay are exported exactly now (tests/test_neuron_models.py); Synaptic's
# zero reset with reset_delay (membrane zeroed after integrating) is not
@pytest.mark.parametrize("kw, words", [
    ({"reset_mechanism": "none", "reset_delay": False}, "reset_mechanism='none'"),
    ({**Z, "graded_spikes_factor": 2.0}, "graded_spikes_factor"),
    ({"reset_mechanism": "zero", "reset_delay": True, "alpha": 0.8}, "reset_delay=True"),
])
def test_neuron_settings_refused_naming_the_layer(kw, words):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            k = dict(kw)
            self.enc_lif = snn.Synaptic(beta=0.9, **k) if "alpha" in k else snn.Leaky(beta=0.9, **k)

        def forward(self, x):
            return self.enc_lif(self.fc(x))[0]

    with pytest.raises(UnsupportedError) as e:
        export_model(Net(), example_inputs={"x": torch.rand(10, 2, 4)})
    assert "'enc_lif'" in str(e.value) and words in str(e.value) and "allow_approximate" in str(e.value)
    r = export_model(Net(), example_inputs={"x": torch.rand(10, 2, 4) * 3}, allow_approximate=True)
    assert any(words in d for d in r.graph.meta["deviations"])


def test_unsupported_layer_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.rnn = nn.GRU(4, 4)
            self.lif = leaky()

        def forward(self, x):
            return self.lif(self.rnn(self.fc(x))[0])[0]

    with pytest.raises(UnsupportedError, match=r"host node .rnn. \(module .rnn. \(GRU\)\).*other samples"):
        export_model(Net(), example_inputs={"x": torch.rand(10, 2, 4)})


def test_time_loop_inside_forward_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.lif = leaky()

        def forward(self, x):
            return torch.stack([self.lif(self.fc(x[t]))[0] for t in range(3)])

    with pytest.raises(UnsupportedError, match="ONE time step"):
        export_model(Net(), example_inputs={"x": torch.rand(10, 2, 3, 4)})


def test_failed_check_raises_and_writes_nothing(tmp_path, monkeypatch):
    import spikedeploy.converters.torch_export as tx

    real = tx.build_graph

    def broken(*a, **kw):  # an exporter bug: a threshold off by 10%
        g, plan = real(*a, **kw)
        g.nodes["lif2"].params["v_threshold"] = g.nodes["lif2"].params["v_threshold"] * 1.1
        return g, plan

    monkeypatch.setattr(tx, "build_graph", broken)
    torch.manual_seed(0)
    out = tmp_path / "m.nir"
    with pytest.raises(ExportCheckError, match="first mismatch at node 'lif2'"):
        export_model(LeakyNet(), example_inputs={"x": torch.rand(12, 4, 20) * 2}, out_path=out)
    assert list(tmp_path.iterdir()) == []


def test_retrieval_reference_model_exports(tmp_path):
    from spikedeploy.converters.nir import read_nir

    torch.manual_seed(0)
    out = tmp_path / "retrieval.nir"
    r = export_model("examples.retrieval.model:build_model", out_path=out, steps=4)
    g = r.graph
    assert r.check["identical"] and r.check["spiking_nodes"] == 6
    assert g.inputs == ["image", "text"] and g.outputs == ["image_output", "text_output"]
    assert g.meta["provenance"]["entrypoint"] == "examples.retrieval.model:build_model"
    back = read_nir(out)
    assert list(back.nodes) == list(g.nodes) and back.dt == g.dt
    np.testing.assert_array_equal(back.nodes["image.net.0"].params["weight"], g.nodes["image.net.0"].params["weight"])


def test_entrypoint_with_checkpoint(tmp_path):
    from examples.retrieval import model as rm

    torch.manual_seed(1)
    m = rm.build_model()
    with torch.no_grad():
        m.text.net[0].weight.mul_(3)
    ck = tmp_path / "ck.pt"
    rm.save_checkpoint(m, ck)
    r = export_model("examples.retrieval.model:build_model", checkpoint=ck, steps=4)
    np.testing.assert_array_equal(r.graph.nodes["text.net.0"].params["weight"],
                                  m.text.net[0].weight.detach().double().numpy())
    assert r.graph.meta["provenance"]["checkpoint"] == str(ck)
    with pytest.raises(SpikeDeployError, match="no such checkpoint"):
        export_model("examples.retrieval.model:build_model", checkpoint=tmp_path / "missing.pt")
