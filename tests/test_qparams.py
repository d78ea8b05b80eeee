"""Typed quantized-layer parameters (spikedeploy/graph/qparams.py) and their place in the quantized graph file:
misspelt fields fail where they are written, every kind survives the file exactly, version-1 files (dicts
without a kind) load to the same objects, and a bad entry is refused in one line naming file, node and field."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from qgraph_header import read_header, write_with_header

from spikedeploy.errors import FileFormatError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import (
    KINDS,
    CubaParams,
    FoldedParams,
    RFParams,
    SigmaDeltaParams,
    SynapseParams,
    fields_of,
)
from spikedeploy.io.qgraph_file import load_qgraph, qgraph_to_arrays, save_qgraph


def every_kind() -> QGraph:
    """in -> d (Delay, folded into fc) -> fc -> lif (CubaLIF, every optional field set) -> fc2 -> sd (SigmaDelta)
    and lif -> fr -> rf (RF): one node of each kind."""
    g = Graph(dt=1e-3)
    ones3, ones2 = np.ones(3), np.ones(2)
    g.add(Node("in", "Input", {"shape": np.array([4])}))
    g.add(Node("d", "Delay", {"delay": np.array([0.0, 1e-3, 2e-3, 0.0])}))
    g.add(Node("fc", "Linear", {"weight": np.ones((3, 4))}))
    g.add(Node("lif", "CubaLIF", {"tau_syn": 5 * ones3, "tau_mem": 10 * ones3, "r": ones3, "v_leak": 0 * ones3,
                                  "v_threshold": ones3}))
    g.add(Node("fc2", "Linear", {"weight": np.ones((3, 3))}))
    g.add(Node("sd", "SigmaDelta", {"v_threshold": 0 * ones3, "relu": np.asarray(1), "delta": np.asarray(1)}))
    g.add(Node("fr", "Linear", {"weight": np.ones((2, 3))}))
    g.add(Node("rf", "RF", {"period": 7 * ones2, "alpha": np.asarray(0.05), "v_threshold": np.asarray(1.1)}))
    g.add(Node("out", "Output"))
    g.add(Node("out2", "Output"))
    for a, b in (("in", "d"), ("d", "fc"), ("fc", "lif"), ("lif", "fc2"), ("fc2", "sd"), ("sd", "out"),
                 ("lif", "fr"), ("fr", "rf"), ("rf", "out2")):
        g.connect(a, b)
    g.validate()
    q = {
        "d": FoldedParams(folded_into="fc"),
        "fc": SynapseParams(weight=np.arange(-6, 6, dtype=np.int16).reshape(3, 4), weight_exp=-2, num_weight_bits=7,
                            sign_mode="mixed", delay=np.tile(np.array([0, 1, 2, 0], np.int64), (3, 1)), sparse=True),
        "lif": CubaParams(du=np.array([100, 200, 300]), dv=4096, vth=np.int64(90),
                          bias_mant=np.array([1, -2, 3], np.int16), bias_exp=6, reset="subtract", reset_delay=True, fire_at_equal=False, pending_reset=False,
                          u_bias=np.array([64, 0, -64]), v_init=np.array([-640, 0, 0]), v_init_step=1, bias_onset=2,
                          reset_interval=17, reset_offset=3, input_mode="bias", input_weight=36, input_bias=-4),
        "fc2": SynapseParams(weight=np.eye(3, dtype=np.int64)),
        "sd": SigmaDeltaParams(mode="sigma_delta", vth=13, bias=np.array([0, 5, -5]), spike_exp=6, state_exp=6),
        "fr": SynapseParams(weight=np.ones((2, 3), np.int64), num_weight_bits=8),
        "rf": RFParams(mode="izhikevich", period=7.0, alpha=0.05, vth=1.1, state_exp=6, decay_bits=12,
                       real_inputs=["fr"], imag_inputs=["fr"]),
    }
    return QGraph(graph=g, target="loihi2", q=q, scale={"lif": 1.0, "sd": 1.0, "rf": 1.0})


@pytest.mark.parametrize("cls", list(KINDS.values()), ids=list(KINDS))
def test_a_misspelt_field_raises_where_it_is_written(cls):
    p = every_kind().q[{"synapse": "fc", "folded": "d", "cuba": "lif", "sigma_delta": "sd", "rf": "rf"}[cls.kind]]
    with pytest.raises(TypeError, match="wieght"):
        cls(**fields_of(p), wieght=1)
    with pytest.raises(AttributeError, match="wieght"):
        p.wieght = 1
    with pytest.raises(TypeError):  # string keys are gone, not silently missing
        p["weight"]


def test_programmable_means_a_rule_field_is_set():
    assert not CubaParams(du=0, dv=0, vth=1).programmable
    assert CubaParams(du=0, dv=0, vth=1, reset="zero").programmable
    assert CubaParams(du=0, dv=0, vth=1, u_bias=np.zeros(2)).programmable


def test_every_kind_round_trips_through_the_file_exactly(tmp_path):
    qg = every_kind()
    save_qgraph(qg, tmp_path / "k.q.npz")
    header, _ = read_header(tmp_path / "k.q.npz")
    assert {n: e["kind"] for n, e in header["q"].items()} == {n: p.kind for n, p in qg.q.items()}
    back = load_qgraph(tmp_path / "k.q.npz")
    assert set(back.q) == set(qg.q)
    for name, p in qg.q.items():
        b = back.q[name]
        assert type(b) is type(p) and b == p, name
        for k, v in fields_of(p).items():
            w = getattr(b, k)
            assert type(w) is type(v), (name, k)
            if isinstance(v, np.ndarray):
                assert w.dtype == v.dtype and w.shape == v.shape, (name, k)
    # equality is value by value: one changed element makes two objects differ
    other = dataclasses.replace(back.q["fc"], weight=back.q["fc"].weight.copy())
    other.weight[0, 0] += 2
    assert other != qg.q["fc"]


def _version1(tmp_path, qg) -> object:
    """`qg` written as version-1 files were: q entries without a kind, the sigma-delta and RF modes under 'sdnn'
    and 'rf', the netx input transform as a dict, optional fields left out when unset."""
    arrays = qgraph_to_arrays(qg)
    header = json.loads(bytes(arrays.pop("__header__")).decode())
    header["version"] = 1
    for e in header["q"].values():
        kind = e.pop("kind")
        for k in [k for k, v in e.items() if v is None]:
            del e[k]
        if kind == "sigma_delta":
            e["sdnn"] = e.pop("mode")
        if kind == "rf":
            e["rf"] = e.pop("mode")
        if kind == "cuba":
            e["input_transform"] = {"weight": e.pop("input_weight"), "bias": e.pop("input_bias")}
    return write_with_header(arrays, header, tmp_path / "v1.q.npz")


def test_a_version_1_file_loads_to_the_same_objects(tmp_path):
    qg = every_kind()
    back = load_qgraph(_version1(tmp_path, qg))
    assert set(back.q) == set(qg.q)
    for name, p in qg.q.items():
        assert type(back.q[name]) is type(p) and back.q[name] == p, name
    header, arrays = read_header(tmp_path / "v1.q.npz")
    header["q"]["fc2"] = {"bias_exp": 3}  # no key tells a kind
    with pytest.raises(FileFormatError, match=r"v1\.q\.npz: node 'fc2': the kind of quantized parameters"):
        load_qgraph(write_with_header(arrays, header, tmp_path / "v1.q.npz"))


def test_a_file_the_previous_version_wrote_loads_as_the_quantizer_makes_it_now(fixtures_dir):
    """tests/data/two_lif_v1.q.npz: `spikedeploy quantize two_lif_neurons.nir --dt 1e-3` as of commit fd9be19
    (version 1: dicts without a kind)."""
    from pathlib import Path

    from spikedeploy.io.graph_files import load_any
    from spikedeploy.quantize.quantizer import quantize

    path = Path(__file__).parent / "data" / "two_lif_v1.q.npz"
    assert read_header(path)[0]["version"] == 1 and "kind" not in read_header(path)[0]["q"]["lif1"]
    old = load_qgraph(path)
    now = quantize(load_any(fixtures_dir / "nir-paper" / "two_lif_neurons.nir"), "loihi2", dt=1e-3)
    assert set(old.q) == set(now.q) == {"linear1", "lif1", "linear2", "lif2"}
    for name, p in now.q.items():
        assert type(old.q[name]) is type(p) and old.q[name] == p, name
    assert old.q["lif1"].bias_onset == 1  # a field the old file held, read back under its name


def _refused(tmp_path, edit, *needles):
    save_qgraph(every_kind(), tmp_path / "ok.q.npz")
    header, arrays = read_header(tmp_path / "ok.q.npz")
    edit(header["q"])
    with pytest.raises(FileFormatError) as e:
        load_qgraph(write_with_header(arrays, header, tmp_path / "bad.q.npz"))
    msg = str(e.value)
    assert "\n" not in msg and "bad.q.npz" in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_a_field_the_kind_does_not_have_is_refused(tmp_path):
    _refused(tmp_path, lambda q: q["lif"].update(wieght=3), "node 'lif'", "'wieght'", "'cuba'")
    _refused(tmp_path, lambda q: q["fc"].update(vth=3), "node 'fc'", "'vth'", "'synapse'")


def test_a_missing_required_field_is_refused(tmp_path):
    _refused(tmp_path, lambda q: q["lif"].pop("vth"), "node 'lif'", "'vth'", "missing")
    _refused(tmp_path, lambda q: q["rf"].pop("period"), "node 'rf'", "'period'", "missing")


def test_an_unknown_or_missing_kind_is_refused(tmp_path):
    _refused(tmp_path, lambda q: q["fc"].update(kind="synapes"), "node 'fc'", "'synapes'", "unknown")
    _refused(tmp_path, lambda q: q["sd"].pop("kind"), "node 'sd'", "'kind'")
    _refused(tmp_path, lambda q: q.update(fc=[1, 2]), "node 'fc'", "not an object")


@pytest.mark.parametrize("node, field, value, needle", [
    ("fc", "sign_mode", "both", "'mixed' | 'exc' | 'inh'"), ("fc", "sign_mode", 3, "'sign_mode'"),
    ("lif", "reset_delay", "yes", "true or false"), ("lif", "du", "fast", "number or array"),
    ("lif", "bias_exp", [1, 2], "number or array"), ("lif", "vth", None, "null"), ("sd", "mode", "sigma2", "'sigma'"),
    ("rf", "real_inputs", [1], "node names"), ("d", "folded_into", 7, "'folded_into'"),
    ("fc", "weight_exp", 99, "exceeds 64"), ("lif", "reset_interval", [17, 17], "number or array"), ("d", "folded_into", "lif", "no synapse parameters"),
])
def test_field_types_are_checked(tmp_path, node, field, value, needle):
    _refused(tmp_path, lambda q: q[node].update({field: value}), f"node '{node}'", f"'{field}'", needle)


def test_a_backend_refuses_parameters_of_the_wrong_kind():
    from spikedeploy.errors import BackendError
    from spikedeploy.targets.emulator import compile_emulator

    qg = every_kind()
    compile_emulator(qg)  # every kind where it belongs: compiles
    qg.q["lif"] = SynapseParams(weight=np.ones(3, np.int64))
    with pytest.raises(BackendError, match=r"node 'lif' \(CubaLIF\) has synapse parameters.*needs cuba parameters"):
        compile_emulator(qg)
    del qg.q["fc2"]
    qg.q["lif"] = every_kind().q["lif"]
    with pytest.raises(BackendError, match=r"node 'fc2' \(Linear\) has no parameters"):
        compile_emulator(qg)


def test_a_step_count_is_one_number(tmp_path):
    """bias_onset, v_init_step, reset_interval and reset_offset are steps of the whole layer: an array (here the
    layer's per-neuron du) is refused, as a list is."""
    _refused(tmp_path, lambda q: q["lif"].update(bias_onset=q["lif"]["du"]), "node 'lif'", "'bias_onset'",
             "one step number")
