"""Traffic, energy and latency against values computed by hand for small graphs."""

from __future__ import annotations

import numpy as np
import pytest

from spikedeploy.errors import SpikeDeployError
from spikedeploy.estimate.energy import estimate
from spikedeploy.estimate.traffic import traffic
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.partition.placer import partition
from spikedeploy.simulate.result import Run
from spikedeploy.targets.spec import get_target

PJ = 1e-12


def _lif(name, n):
    one = np.ones(n)
    return Node(name, "LIF", {"tau": one * 2, "r": one, "v_leak": one * 0, "v_threshold": one})


def _graph(edges, nodes):
    g = Graph(dt=1e-3)
    for n in nodes:
        g.add(n)
    for a, b in edges:
        g.connect(a, b)
    return g.infer_shapes()


def test_single_core_by_hand():
    # Input(4) -> Linear 3x4 (all ones) -> LIF(3) -> Output; 2 input spikes and 1 LIF spike per step, T=2
    g = _graph([("input", "fc"), ("fc", "lif"), ("lif", "output")],
               [Node("input", "Input", {"shape": np.array([4])}), Node("fc", "Linear", {"weight": np.ones((3, 4))}),
                _lif("lif", 3), Node("output", "Output")])
    run = Run("test", 2, 1, counts={"input": np.array([[2], [2]]), "lif": np.array([[1], [1]])})
    p = partition(g, "loihi1", run=run)
    tr = traffic(g, p, run)
    assert tr["per_step"]["host_to_chip"] == pytest.approx(2.0)  # 2 input spikes, one core
    assert tr["per_step"]["chip_to_host"] == pytest.approx(1.0)
    e = estimate(g, "loihi1", p, run)
    synops = 2 * 3  # each input spike reaches 3 synapses
    e_step = synops * 23.6 * PJ + (2 * 52 + 1 * 81) * PJ + (2 + 1) * 100 * PJ
    t_step = synops * 3.5e-9 + 3 * 5e-9 + 465e-9
    static = 0.104 * 1 * (2 * t_step)
    assert e["per_step"]["synops"] == pytest.approx(synops)
    assert e["per_step"]["latency_s"] == pytest.approx(t_step)
    assert e["per_inference"]["latency_s"] == pytest.approx(2 * t_step)
    assert e["per_inference"]["energy_j"] == pytest.approx(2 * e_step + static)
    assert e["breakdown_j"]["static"] == pytest.approx(static)
    assert e["literature_45nm"]["energy_j"] == pytest.approx(4.6 * PJ * 12 * 2)  # first layer: 12 MACs x 2 steps
    assert e["ann_equivalent"]["energy_j"] == pytest.approx(4.6 * PJ * 12)
    assert {c["name"] for c in e["constants"]} >= {"E_synop", "t_barrier", "P_static_per_chip"}
    assert all(c["source"] for c in e["constants"])


def test_multi_core_multi_chip_traffic_by_hand(tmp_path):
    f = tmp_path / "chip.toml"
    f.write_text("cores_per_chip = 2\n[core]\nneurons = 2\n")
    t = get_target(f"fixedpoint:{f}")
    # Input(2) -> Linear 4x2 -> LIF(4) -> Linear 2x4 -> LIF(2) -> Output; every neuron spikes once per step
    g = _graph([("input", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"), ("l2", "output")],
               [Node("input", "Input", {"shape": np.array([2])}), Node("fc1", "Linear", {"weight": np.ones((4, 2))}),
                _lif("l1", 4), Node("fc2", "Linear", {"weight": np.ones((2, 4))}), _lif("l2", 2), Node("output", "Output")])
    run = Run("test", 1, 1, counts={"input": np.array([[2]]), "l1": np.array([[4]]), "l2": np.array([[2]])})
    p = partition(g, t, run=run)
    assert p.cores_used == 3 and p.chips == 2
    chip = {c.core: c.core // 2 for c in p.cores}
    (l2core, _, _), = p.groups["l2"]
    # each l1 neuron sends one message to the l2 core; count by where its group lives
    exp = {"intra_core": 0, "between_cores": 0, "between_chips": 0}
    for core, a, b in p.groups["l1"]:
        key = "intra_core" if core == l2core else ("between_cores" if chip[core] == chip[l2core] else "between_chips")
        exp[key] += b - a
    tr = traffic(g, p, run)
    for k, v in exp.items():
        assert tr["per_step"][k] == pytest.approx(v), k
    assert tr["per_step"]["host_to_chip"] == pytest.approx(2 * 2)  # 2 input spikes to each of 2 l1 cores
    e = estimate(g, t, p, run)
    assert e["per_step"]["synops"] == pytest.approx(2 * 4 + 4 * 2)
    E = t.energy
    msgs_chip = exp["between_chips"] + 4 + 2  # + input in + output out over the chip link
    e_step = (16 * E["synop"].value + 6 * E["neuron_spike_update"].value + exp["between_cores"] * E["spike_between_cores"].value
              + exp["intra_core"] * E["spike_in_core"].value + msgs_chip * E["spike_between_chips"].value)
    assert e["per_step"]["energy_j"] == pytest.approx(e_step)
    # busiest core: an l1 core (2 neurons, 2 spikes x 2 synapses in, 2 messages out) or the l2 core
    Tm = t.timing
    t_hop = max(Tm["spike_in_core"].value, Tm["spike_between_cores"].value)
    w_l1 = 4 * Tm["synop"].value + 2 * Tm["neuron_update"].value + 2 * t_hop
    w_l2 = 8 * Tm["synop"].value + 2 * Tm["neuron_update"].value
    t_step = max(w_l1, w_l2) + Tm["barrier"].value + (Tm["spike_between_chips"].value if exp["between_chips"] else 0)
    assert e["time_per_step_s"] == pytest.approx(t_step)
    assert e["breakdown_j"]["static"] == pytest.approx(E["static_power_chip"].value * 2 * t_step)


def test_host_node_counted_with_host_constants():
    g = _graph([("input", "fc"), ("fc", "lif"), ("lif", "ro"), ("ro", "output")],
               [Node("input", "Input", {"shape": np.array([4])}), Node("fc", "Linear", {"weight": np.ones((3, 4))}),
                _lif("lif", 3), Node("ro", "Readout", {"out_shape": np.array([2])}, meta={"macs": 100}),
                Node("output", "Output")])
    run = Run("test", 5, 1, counts={"input": np.zeros((5, 1)), "lif": np.zeros((5, 1))})
    p = partition(g, "loihi2", run=run)
    assert p.host_nodes == ["ro"]
    e = estimate(g, "loihi2", p, run)
    assert e["breakdown_j"]["host"] == pytest.approx(100 * 4.6 * PJ * 5)
    assert e["per_inference"]["host_macs"] == 500
    assert e["ann_equivalent"]["macs"] == 12 + 100


def test_task_query_cost_and_missing_run():
    g = _graph([("input", "fc"), ("fc", "lif"), ("lif", "output")],
               [Node("input", "Input", {"shape": np.array([4])}), Node("fc", "Linear", {"weight": np.ones((3, 4))}),
                _lif("lif", 3), Node("output", "Output")])
    p = partition(g, "loihi1")
    with pytest.raises(SpikeDeployError, match="run="):
        traffic(g, p)
    e = estimate(g, "loihi1", p, assumed_rate=0.5, steps=10, query_host_macs=3000, query_note="a search over 1000 x 3")
    assert e["per_step"]["synops"] == pytest.approx(0.5 * 4 * 3)
    assert e["per_query"]["energy_j"] == pytest.approx(e["per_inference"]["energy_j"] + 3000 * 4.6 * PJ)


def test_host_search_once_per_inference_is_not_multiplied_by_steps():
    """A similarity search over a gallery runs once per query: 1000 MACs at 4.6 pJ, not 1000 x T."""
    g = Graph(dt=1e-3)
    one = np.ones(3)
    for n in (Node("input", "Input", {"shape": np.array([4])}), Node("fc", "Linear", {"weight": np.ones((3, 4))}),
              Node("lif", "LIF", {"tau": one * 2, "r": one, "v_leak": one * 0, "v_threshold": one}),
              Node("search", "CosineSimilarity", {"out_shape": np.array([5])}, meta={"macs_per_inference": 1000}),
              Node("output", "Output")):
        g.add(n)
    for a, b in (("input", "fc"), ("fc", "lif"), ("lif", "search"), ("search", "output")):
        g.connect(a, b)
    g.infer_shapes()
    t = get_target("loihi2")
    pl = partition(g, t)
    en = estimate(g, t, pl, None, assumed_rate=0.0, steps=7)
    assert en["breakdown_j"]["host"] == pytest.approx(1000 * 4.6e-12)
    assert en["per_inference"]["host_macs"] == 1000
    assert en["per_step"]["host_macs"] == 0
