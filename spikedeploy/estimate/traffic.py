"""Spike traffic of a placed network: messages inside cores, between cores, between chips, to/from host.

A spike from a source neuron is sent once to each distinct destination core holding any of its targets
(per projection), as on Loihi's axon routing. A Run gives spikes per node per step; within one node the
rate is taken as uniform over neurons (the Run holds per-node counts), so the messages on a link are
rate x (number of source neurons on that link). Off-chip sources (Input and host nodes) send their
spikes/values over the chip's input links; values from host nodes are counted as one message per source
neuron per step (graded, assumed dense).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikedeploy.errors import SpikeDeployError


def population_rates(graph, placement, run=None, *, assumed_rate: float | None = None) -> tuple[dict[str, float], list[str]]:
    """Spikes per neuron per step (mean over time steps and samples) for every source population."""
    model = placement.model
    sizes = {**placement.sources, **{k: v["neurons"] for k, v in placement.layers.items()}}
    notes: list[str] = []
    rates: dict[str, float] = {}
    if run is None and assumed_rate is None:
        raise SpikeDeployError(
            "traffic/energy need spike counts: pass run= (a Run from `spikedeploy simulate`) "
            "or assumed_rate= (spikes per neuron per step) for a rate-based estimate"
        )
    for name, n in sizes.items():
        node = graph.nodes.get(name)
        is_host = node is not None and node.placement == "host"
        if run is not None and name in run.counts and n:
            rates[name] = float(np.mean(run.counts[name])) / n
        elif is_host:
            rates[name] = 1.0
        elif name in placement.layers and not placement.layers[name]["spiking"]:
            rates[name] = 0.0
        elif assumed_rate is not None:
            rates[name] = float(assumed_rate)
        else:
            rates[name] = 0.0
            notes.append(f"no spike counts for '{name}' in the Run: taken as silent")
    if run is None:
        notes.append(f"no Run: every spiking population assumed to fire {assumed_rate} spikes/neuron/step")
    if any(graph.nodes[h].placement == "host" for h in placement.sources if h in graph.nodes):
        notes.append("host-side sources send one graded message per neuron per step")
    del model
    return rates, notes


def traffic(graph, placement, run=None, *, assumed_rate: float | None = None, top: int = 10) -> dict[str, Any]:
    """Messages per step per sample at each level, per core and per chip, and the busiest links."""
    rates, notes = population_rates(graph, placement, run, assumed_rate=assumed_rate)
    n_cores = placement.cores_used
    chip_of = np.array([c.chip for c in placement.cores], dtype=np.int64)
    n_chips = max(placement.chips, 1)
    sent = np.zeros(n_cores)
    received = np.zeros(n_cores)
    chip_m = np.zeros((n_chips, n_chips))
    core_m = np.zeros((n_cores, n_cores)) if n_cores <= 256 else None
    levels = {"intra_core": 0.0, "between_cores": 0.0, "between_chips": 0.0, "host_to_chip": 0.0}
    link_rows = []
    for src, sc, dc, n in placement.links:
        m = rates.get(src, 0.0) * n
        if m == 0:
            continue
        received[dc] += m
        if sc < 0:
            levels["host_to_chip"] += m
        else:
            sent[sc] += m
            if sc == dc:
                levels["intra_core"] += m
            elif chip_of[sc] == chip_of[dc]:
                levels["between_cores"] += m
            else:
                levels["between_chips"] += m
            chip_m[chip_of[sc], chip_of[dc]] += m
            if core_m is not None:
                core_m[sc, dc] += m
        link_rows.append((m, src, sc, dc, n))
    to_host = 0.0
    for lname in placement.model.to_host:
        to_host += rates.get(lname, 0.0) * placement.layers[lname]["neurons"]
    levels["chip_to_host"] = to_host
    link_rows.sort(key=lambda r: (-r[0], r[2], r[3]))
    busiest = [
        {"source": s, "src_core": sc, "dst_core": dc,
         "src_chip": None if sc < 0 else int(chip_of[sc]), "dst_chip": int(chip_of[dc]),
         "axons": int(n), "messages_per_step": float(m)}
        for m, s, sc, dc, n in link_rows[:top]
    ]
    spikes = {}
    sizes = {**placement.sources, **{k: v["neurons"] for k, v in placement.layers.items()}}
    for name, r in rates.items():
        spikes[name] = r * sizes[name]
    steps = int(run.steps) if run is not None else None
    chip_spikes = sum(v for k, v in spikes.items() if k in placement.layers)
    per_step = {"spikes": chip_spikes, **levels}
    return {
        "per_step": per_step,
        "per_inference": {k: v * steps for k, v in per_step.items()} if steps else None,
        "steps": steps,
        "spikes_per_node": spikes,
        "rates": rates,
        "per_core": {"sent": sent.tolist(), "received": received.tolist()},
        "chip_matrix": chip_m.tolist(),
        "core_matrix": core_m.tolist() if core_m is not None else None,
        "busiest_links": busiest,
        "assumptions": [
            "a spike is sent once to each destination core holding targets of the neuron (per projection)",
            "spike rate uniform over the neurons of one node (Run counts are per node)",
            *notes,
        ],
    }
