"""Activity-driven energy and latency of a placed network on a target (see DESIGN.md "Reports").

Per time step and sample:
    synaptic ops      = sum over projections of spikes(source) x synapses / source neurons
                        (each spike drives its fan-out synapses; rate uniform within a node)
    neuron updates    = all chip neurons every step; spiking ones at the "active" energy
    spikes routed     = messages inside cores, between cores (same chip), between chips; Input spikes and
                        host values enter, and outputs leave, over the chip link (traffic.py)
    host              = MACs of host-side nodes x E_mac
    E_step = synops*E_synop + (N - S)*E_update + S*E_update_active + msgs*E_level + host MACs*E_mac
    t_step = max over cores (synops_c*t_synop + neurons_c*t_update + sent_c*t_spike) + barrier
             (+ chip-to-chip link time when any spike crosses chips) + host MACs*t_mac
    static = P_static_chip x chips x (steps x t_step)
Per inference (one sample) = steps x per-step values + static. Also reported: the SNN literature's
45 nm formula (E_MAC=4.6 pJ x first-layer MACs + E_AC=0.9 pJ x synaptic ops) and the same architecture
run once as an ANN (all synapses as MACs x 4.6 pJ).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikedeploy.estimate.traffic import traffic as _traffic
from spikedeploy.graph.ops import DENSE
from spikedeploy.simulate.hybrid import host_boundary
from spikedeploy.targets.spec import Value

E_MAC_45NM = Value(4.6e-12, "J", "Horowitz ISSCC 2014, 45 nm fp32 mult 3.7 + add 0.9 pJ")
E_AC_45NM = Value(0.9e-12, "J", "Horowitz ISSCC 2014, 45 nm fp32 add")
_FALLBACK = {
    "spike_between_chips": Value(100e-12, "J", "estimate: off-chip link (not given by the target)", estimate=True),
    "neuron_spike_update": None,
    "static_power_chip": Value(0.0, "W", "not given by the target", estimate=True),
}
_T_FALLBACK = {
    "spike_between_chips": Value(100e-9, "s", "estimate: chip-to-chip link (not given by the target)", estimate=True),
    "spike_in_core": Value(0.0, "s", "not given by the target", estimate=True),
    "spike_between_cores": Value(0.0, "s", "not given by the target", estimate=True),
    "neuron_update": Value(0.0, "s", "not given by the target", estimate=True),
    "barrier": Value(0.0, "s", "not given by the target", estimate=True),
}


def host_macs(node) -> tuple[int, str]:
    """MACs per time step of a host-side node, and how they were counted.

    A node that runs once per inference on accumulated values (a similarity search over a gallery) sets
    node.meta['macs_per_inference'] instead; see `host_macs_once`."""
    if "macs_per_inference" in node.meta:
        return 0, "once per inference (node.meta['macs_per_inference'])"
    if "macs" in node.meta:
        return int(node.meta["macs"]), "node.meta['macs']"
    n_in = int(np.prod(node.in_shape)) if node.in_shape else 0
    n_out = int(np.prod(node.out_shape)) if node.out_shape else 0
    if node.op in DENSE:
        return int(np.asarray(node.params["weight"]).size), "dense weights"
    if node.op in ("Readout", "CosineSimilarity"):
        return n_in * n_out, "estimate: dense in x out"
    if node.op == "MatMul" and node.out_shape and len(node.out_shape) >= 2:
        return n_out * int(node.out_shape[-1]), "estimate: out elements x last dim"
    return max(n_in, n_out), "estimate: one op per element"


def host_macs_once(node) -> int:
    return int(node.meta.get("macs_per_inference", 0))


def _val(table: dict, key: str, fallback: dict, default: Value | None = None) -> Value:
    if key in table:
        return table[key]
    if key in fallback and fallback[key] is not None:
        return fallback[key]
    return default


def estimate(graph, target, placement, run=None, *, qgraph=None, assumed_rate: float | None = None,
             steps: int | None = None, query_host_macs: int = 0, query_note: str = "",
             traffic: dict | None = None) -> dict[str, Any]:
    """Energy (J) and latency (s) per time step, per inference and per task query, with assumptions.

    `run` gives measured spike counts; without it pass `assumed_rate` (spikes/neuron/step) and `steps`.
    `query_host_macs` (with `query_note` saying what they are) is host work a task's query adds to one
    inference, e.g. a similarity search over a gallery the graph does not contain (report/sections.py).
    """
    if isinstance(target, str):
        from spikedeploy.targets.spec import get_target

        target = get_target(target)
    del qgraph  # weight bits already shaped the placement; energy per op does not depend on them here
    tr = traffic if traffic is not None else _traffic(graph, placement, run, assumed_rate=assumed_rate)
    rates = tr["rates"]
    T = int(run.steps) if run is not None else int(steps or graph.meta.get("steps", 1) or 1)
    E, Tm, H = target.energy, target.timing, target.host
    e_syn, e_upd = E["synop"], E["neuron_update"]
    e_act = _val(E, "neuron_spike_update", {}, e_upd)
    e_in, e_core = E["spike_in_core"], E["spike_between_cores"]
    e_chip = _val(E, "spike_between_chips", _FALLBACK)
    p_static = _val(E, "static_power_chip", _FALLBACK)
    t_syn, t_upd = Tm["synop"], _val(Tm, "neuron_update", _T_FALLBACK)
    t_in, t_core = _val(Tm, "spike_in_core", _T_FALLBACK), _val(Tm, "spike_between_cores", _T_FALLBACK)
    t_chip, t_bar = _val(Tm, "spike_between_chips", _T_FALLBACK), _val(Tm, "barrier", _T_FALLBACK)
    e_mac = H.get("mac", E_MAC_45NM)
    t_mac = H.get("mac_time", Value(1e-10, "s", "estimate: 10 GMAC/s host", estimate=True))
    t_rt = H.get("round_trip", Value(1e-5, "s", "estimate: no published host<->chip round-trip latency for any "
                                      "target; 10 us assumed (set [host] round_trip in a target file)", estimate=True))
    round_trips = host_boundary(graph)["round_trips_per_step"]

    # per-core work
    n_cores = placement.cores_used
    syn_core = np.zeros(n_cores)
    for ci, d in enumerate(placement.core_synapses):
        for src, s in d.items():
            syn_core[ci] += rates.get(src, 0.0) * s
    neurons_core = np.array([c.neurons for c in placement.cores], dtype=float)
    sent = np.array(tr["per_core"]["sent"], dtype=float)
    chip_of = np.array([c.chip for c in placement.cores], dtype=np.int64)
    # a core's sent messages cost the in-core time when local, else the hop time (upper: all hops)
    t_core_work = syn_core * t_syn.value + neurons_core * t_upd.value + sent * max(t_in.value, t_core.value)
    busiest = int(np.argmax(t_core_work)) if n_cores else -1
    lv = tr["per_step"]
    t_step_chip = (float(t_core_work.max()) if n_cores else 0.0) + t_bar.value
    if lv["between_chips"] > 0:
        t_step_chip += t_chip.value

    # host part
    host_rows = {}
    macs_step = 0
    macs_once = 0
    for name in placement.host_nodes:
        m, how = host_macs(graph.nodes[name])
        once = host_macs_once(graph.nodes[name])
        host_rows[name] = {"macs_per_step": m, "macs_per_inference": once or m * T, "counted_as": how}
        macs_step += m
        macs_once += once
    # a host op between chip layers: every step waits for chip -> host -> chip
    t_step = t_step_chip + macs_step * t_mac.value + round_trips * t_rt.value

    synops = float(syn_core.sum())
    n_chip = float(neurons_core.sum())
    spikes = float(lv["spikes"])
    offchip_msgs = lv["between_chips"] + lv["host_to_chip"] + lv["chip_to_host"]
    step_j = {
        "synops": synops * e_syn.value,
        "neuron_updates": max(n_chip - spikes, 0.0) * e_upd.value + min(spikes, n_chip) * e_act.value,
        "spikes_in_core": lv["intra_core"] * e_in.value,
        "spikes_between_cores": lv["between_cores"] * e_core.value,
        "spikes_between_chips": offchip_msgs * e_chip.value,
        "host": macs_step * e_mac.value,
    }
    run_time = T * t_step + macs_once * t_mac.value
    breakdown = {k: v * T for k, v in step_j.items()}
    breakdown["host"] += macs_once * e_mac.value
    breakdown["static"] = p_static.value * max(placement.chips, 1 if n_cores else 0) * run_time
    e_inf = float(sum(breakdown.values()))

    # literature formula and ANN equivalent
    first_layer = 0
    syn_total = 0
    for p in placement.model.projections:
        syn_total += p.total_synapses
        if p.src in placement.sources and graph.nodes[p.src].op == "Input":
            first_layer += p.total_synapses
    input_names = {p.src for p in placement.model.projections
                   if p.src in placement.sources and graph.nodes[p.src].op == "Input"}
    sops_rest = float(sum(rates.get(src, 0.0) * s for d in placement.core_synapses for src, s in d.items()
                          if src not in input_names)) * T
    lit = E_MAC_45NM.value * first_layer * T + E_AC_45NM.value * sops_rest
    ann_macs = syn_total + macs_step + macs_once
    per_inf = {
        "energy_j": e_inf,
        "latency_s": run_time,
        "synops": synops * T,
        "spikes": spikes * T,
        "neuron_updates": n_chip * T,
        "host_macs": macs_step * T + macs_once,
        "messages": {k: v * T for k, v in lv.items() if k != "spikes"},
    }
    per_query = None
    if query_host_macs:
        per_query = {
            "energy_j": e_inf + query_host_macs * e_mac.value,
            "latency_s": run_time + query_host_macs * t_mac.value,
            "host_macs": int(query_host_macs),
            "note": f"one inference + {query_note or 'host work per query'}",
        }
    consts = {
        "E_synop": e_syn, "E_neuron_update": e_upd, "E_neuron_update_active": e_act, "E_spike_in_core": e_in,
        "E_spike_between_cores": e_core, "E_spike_between_chips": e_chip, "P_static_per_chip": p_static,
        "t_synop": t_syn, "t_neuron_update": t_upd, "t_spike_in_core": t_in, "t_spike_between_cores": t_core,
        "t_spike_between_chips": t_chip, "t_barrier": t_bar, "E_host_mac": e_mac, "t_host_mac": t_mac,
        "t_host_round_trip": t_rt,
        "E_MAC_45nm": E_MAC_45NM, "E_AC_45nm": E_AC_45NM,
    }
    assumptions = [
        {"name": k, "value": v.value, "unit": v.unit, "source": v.source, "estimate": bool(v.estimate)}
        for k, v in consts.items()
    ]
    notes = [
        f"{T} time steps per inference" + ("" if run is not None else " (no Run: assumed)"),
        "synaptic ops = spikes x fan-out synapses, rate uniform within a node",
        "every chip neuron updated every step; spiking neurons at the active-update energy",
        "Input spikes, host values and outputs cross the chip link at the chip-to-chip energy",
        "latency per step = busiest core's work + barrier (+ chip link when used) + host MACs in series "
        "+ one host round trip per host op inside the time loop",
        "static energy = static power per chip x chips used x run time",
        "literature formula: first layer fed by Input counted as dense MACs every step",
        "ANN equivalent: every synapse and host MAC once per inference at 4.6 pJ",
        *tr["assumptions"],
    ]
    return {
        "target": target.name,
        "steps": T,
        "per_step": {"energy_j": float(sum(step_j.values())), "latency_s": t_step, "synops": synops,
                     "spikes": spikes, "neuron_updates": n_chip, "host_macs": macs_step},
        "per_inference": per_inf,
        "per_query": per_query,
        "breakdown_j": breakdown,
        "time_per_step_s": t_step,
        "busiest_core": {"core": busiest, "chip": int(chip_of[busiest]) if busiest >= 0 else None,
                         "work_s": float(t_core_work[busiest]) if busiest >= 0 else 0.0},
        "core_work_s": t_core_work.tolist(),
        "host": host_rows,
        "literature_45nm": {"energy_j": lit, "first_layer_macs": first_layer * T, "synops": sops_rest,
                            "formula": "E = 4.6 pJ x first-layer MACs + 0.9 pJ x synaptic ops"},
        "ann_equivalent": {"energy_j": ann_macs * E_MAC_45NM.value, "macs": ann_macs,
                           "formula": "E = 4.6 pJ x (all synapses + host MACs), one pass"},
        "constants": assumptions,
        "assumptions": notes,
    }
