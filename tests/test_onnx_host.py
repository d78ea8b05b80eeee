"""The host-side part of an export: host nodes in the Graph, ONNX file checked with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from spikedeploy.export import export_model

Z = {"reset_mechanism": "zero", "reset_delay": False}


class HybridNet(nn.Module):
    """Spiking encoder, host LayerNorm back into chip layers, a spike x spike product and a cosine head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(6, 12)
        self.lif_enc = snn.Leaky(beta=0.9, threshold=0.5, **Z)
        self.norm = nn.LayerNorm(12)
        self.q = nn.Linear(12, 8)
        self.k = nn.Linear(12, 8)
        self.lif_q = snn.Leaky(beta=0.7, threshold=0.3, **Z)
        self.lif_k = snn.Leaky(beta=0.7, threshold=0.3, **Z)
        self.register_buffer("prototypes", torch.randn(5, 8))

    def forward(self, x):
        s, _ = self.lif_enc(self.enc(x))
        h = self.norm(s)
        q, _ = self.lif_q(self.q(h))
        k, _ = self.lif_k(self.k(h))
        gated = q * k  # spike x spike: host Mul
        return F.normalize(gated + 0.5 * q, dim=-1) @ F.normalize(self.prototypes, dim=-1).T


def test_host_part_to_onnx_matches_torch(tmp_path):
    torch.manual_seed(0)
    m = HybridNet().eval()
    x = torch.rand(12, 3, 6) * 2
    r = export_model(m, example_inputs={"x": x}, out_path=tmp_path / "hybrid.nir", onnx_path=tmp_path / "host.onnx")
    g = r.graph
    host = {n: v.op for n, v in g.nodes.items() if v.placement == "host" and v.op != "Output"}
    assert host["norm"] == "LayerNorm" and "Mul" in host.values() and "CosineSimilarity" in host.values()
    assert all(g.nodes[n].placement == "chip" for n in ("enc", "lif_enc", "q", "lif_q", "k", "lif_k"))
    assert ("lif_enc", "norm") in g.edges and ("norm", "q") in g.edges  # chip -> host -> chip
    assert r.check["identical"] and r.check["spikes"] > 0  # chip spikes checked with host values fed from torch
    oc = r.onnx_check
    assert oc["max_abs_diff"] <= 1e-5 and oc["batch_checked"] == [3, 6]
    # 0.5 * q is a Scale node ("mul_1") whose output only the host reads: it moves to the host (a chip
    # synapse must end in neurons), and the host program of the head re-computes it from lif_q's spikes
    assert set(oc["inputs"]) == {"lif_enc", "lif_q", "lif_k", "mul_1"} and set(oc["outputs"]) == {"norm", "output"}
    assert g.nodes["mul_1"].op == "Scale" and g.nodes["mul_1"].placement == "host"
    head = next(n for n in g.nodes.values() if n.op == "CosineSimilarity")
    assert set(head.meta["program"]["inputs"]) == {"lif_q", "lif_k"}
    assert (tmp_path / "host.onnx").exists() and (tmp_path / "hybrid.nir").exists()

    # independent check: the ONNX file on fresh spikes of another batch size against the torch expressions
    sess = ort.InferenceSession(str(tmp_path / "host.onnx"), providers=["CPUExecutionProvider"])
    assert {i.name for i in sess.get_inputs()} == {"lif_enc", "lif_q", "lif_k", "mul_1"}
    gen = torch.Generator().manual_seed(1)
    s = (torch.rand(7, 12, generator=gen) > 0.5).float()
    q = (torch.rand(7, 8, generator=gen) > 0.5).float()
    k = (torch.rand(7, 8, generator=gen) > 0.5).float()
    outs = dict(zip([o.name for o in sess.get_outputs()],
                    sess.run(None, {"lif_enc": s.numpy(), "lif_q": q.numpy(), "lif_k": k.numpy(),
                                              "mul_1": (0.5 * q).numpy()}), strict=True))
    with torch.no_grad():
        ref_norm = m.norm(s)
        ref_out = F.normalize(q * k + 0.5 * q, dim=-1) @ F.normalize(m.prototypes, dim=-1).T
    np.testing.assert_allclose(outs["norm"], ref_norm.numpy(), atol=1e-5)
    np.testing.assert_allclose(outs["output"], ref_out.numpy(), atol=1e-5)


def test_host_nodes_survive_nir_round_trip(tmp_path):
    from spikedeploy.converters.nir import read_nir

    torch.manual_seed(2)
    r = export_model(HybridNet().eval(), example_inputs={"x": torch.rand(10, 2, 6) * 2},
                     out_path=tmp_path / "h.nir")
    assert (tmp_path / "h.host.onnx").exists()  # default ONNX path next to the NIR file
    back = read_nir(tmp_path / "h.nir")
    assert {n: v.placement for n, v in back.nodes.items()} == {n: v.placement for n, v in r.graph.nodes.items()}
    assert back.meta["host_onnx"] == "h.host.onnx"
