"""How much a quantized graph loses: float (with the chip's synapse delay) against fixed point, per layer.

Both sides run T + depth steps (T: the inputs' length, zero input after it; depth: the most synapse hops
from an Input to a compared node, `synapse_depth`), so every layer's whole response to the T input steps
is compared, also in layers deeper than T synapses. The float reference runs with `synapse_delay=True`
(and `bias_onset=True` when the QGraph holds each bias until its layer's first input, meta["bias_onset"]):
its layer l fires at the steps the chip's layer l fires at, so spikes are compared bin for bin and any
difference is quantization. The fixed-point side runs in the arithmetic of the QGraph's own target.

Spiking layers are scored by the overlap of their spike sets, Dice = 2|A∩B| / (|A| + |B|) over the
(step, sample, neuron) bins that hold a spike, with precision |A∩B|/|B| and recall |A∩B|/|A| (A: float,
B: fixed point). Empty bins do not count: a layer that barely fires cannot look faithful by staying
silent. A layer silent on both sides has Dice 1.0 by definition, is flagged `silent` and is left out of
the headline (`dice_min`, `dice_mean`), which is over the layers that spike on at least one side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from spikedeploy.errors import BackendError
from spikedeploy.graph.ir import Graph
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.simulate.float_ref import simulate_float, synapse_depth
from spikedeploy.simulate.inputs import time_major_inputs
from spikedeploy.simulate.result import Run

# the keys of every per-layer row, in this order; those that do not apply to a layer are None
LAYER_KEYS = ("op", "spiking", "silent", "dice", "precision", "recall", "count_ratio", "spikes_float",
              "spikes_quant", "spikes_both", "rate_float", "rate_quant", "rate_change", "v_rms_error",
              "v_rel_rms_error")


def _neuron_layers(qg: QGraph) -> list[str]:
    return [n for n in qg.q if qg.graph.nodes[n].spec.family == "neuron"]


def _emulate(qg: QGraph, inputs, steps, probes) -> Run:
    from spikedeploy.simulate.dispatch import simulate

    # simulate() runs host nodes too, and the QGraph's own target decides the arithmetic
    return simulate(qg, inputs, backend="emulator", steps=steps, probes=probes)


def compared_steps(graph: Graph, qg: QGraph, inputs) -> tuple[int, int, int]:
    """(T, depth, T + depth): the inputs' length, the most synapse hops from an Input to a neuron layer
    or Output of either graph, and the steps both sides run so that every layer's response is whole."""
    _, t_in, _ = time_major_inputs(graph, inputs)
    nodes = set(_neuron_layers(qg)) | set(qg.graph.outputs)
    depth = 0
    for g in (graph, qg.graph):
        d = synapse_depth(g)
        depth = max(depth, max((d[n] for n in nodes if n in d), default=0))
    return int(t_in), depth, int(t_in) + depth


def spike_disagreement(graph: Graph, qg: QGraph, inputs, *, ref: Run | None = None) -> tuple[int, Run]:
    """Number of (step, sample, neuron) bins where float and fixed point disagree, over all spiking layers
    and T + depth steps (see the module doc). Pass the returned reference back as `ref` to reuse it."""
    layers = [n for n in _neuron_layers(qg) if qg.graph.nodes[n].spec.spiking]
    if ref is None:
        ref = simulate_float(graph, inputs, steps=compared_steps(graph, qg, inputs)[2], probes=layers,
                             synapse_delay=True, bias_onset=qg.meta.get("bias_onset") == "depth")
    run = _emulate(qg, inputs, ref.steps, layers)
    d = 0
    for n in layers:
        d += int((_spikes(ref, n) != _spikes(run, n)).sum())
    return d, ref


def _spikes(run: Run, n: str) -> np.ndarray:
    s = np.asarray(run.traces[n]["s"])
    return s.reshape(s.shape[0], s.shape[1], -1) != 0


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def spike_overlap(sf: np.ndarray, sq: np.ndarray) -> dict:
    """Dice, precision, recall and counts of two boolean spike arrays of one layer (float, fixed point)."""
    nf, nq, both = int(sf.sum()), int(sq.sum()), int((sf & sq).sum())
    rf, rq = nf / max(sf.size, 1), nq / max(sq.size, 1)
    return {
        "silent": nf + nq == 0,
        "dice": 2 * both / (nf + nq) if nf + nq else 1.0,
        "precision": _ratio(both, nq), "recall": _ratio(both, nf), "count_ratio": _ratio(nq, nf),
        "spikes_float": nf, "spikes_quant": nq, "spikes_both": both,
        "rate_float": rf, "rate_quant": rq,
        # None when float is silent: a change from zero has no finite size (and JSON has no inf)
        "rate_change": (rq - rf) / rf if rf else (0.0 if rq == 0 else None),
    }


def headline(layers: Mapping[str, dict]) -> dict:
    """min and mean Dice over the spiking layers that spike on at least one side, and the silent ones."""
    spiking = {n: r for n, r in layers.items() if r["spiking"]}
    scored = [r["dice"] for r in spiking.values() if not r["silent"]]
    return {"dice_min": min(scored) if scored else None,
            "dice_mean": float(np.mean(scored)) if scored else None,
            "layers_scored": len(scored),
            "silent_layers": [n for n, r in spiking.items() if r["silent"]]}


def fidelity(
    graph: Graph,
    qg: QGraph,
    inputs: Mapping[str, np.ndarray],
    run_q: Run | None = None,
    *,
    labels: np.ndarray | None = None,
    metric: Callable[[dict[str, np.ndarray]], float] | None = None,
) -> dict:
    """Per-layer spike overlap (Dice, precision, recall, counts) and readout error over T + depth steps;
    task accuracy if labels are given.

    run_q: a fixed-point Run of `qg` on `inputs` with every neuron layer probed and at least T + depth steps
        (default: the emulator, in the arithmetic of qg's target).
    labels: [B] class indices; the prediction is the argmax over the first Output's values summed over the
        T + depth steps (spike counts, or the readout potential, whose positive scale λ does not move it).
    metric: optional callable on a Run's outputs giving a task score; reported for both runs.
    Returns {"fidelity": {"dice_min", "dice_mean", "layers_scored", "silent_layers", "layers": {name: row},
    "outputs", "task", "steps", "input_steps", "depth", "backend", "arith"}}; every row has the keys LAYER_KEYS.
    """
    layers = _neuron_layers(qg)
    t_in, depth, T = compared_steps(graph, qg, inputs)
    ref = simulate_float(graph, inputs, steps=T, probes=layers, synapse_delay=True,
                         bias_onset=qg.meta.get("bias_onset") == "depth")
    if run_q is None:
        run_q = _emulate(qg, inputs, T, layers)
    elif run_q.steps < T:
        raise BackendError(f"run_q has {run_q.steps} steps, but fidelity compares T + depth = {t_in} + {depth} = {T} "
                           f"steps (the deepest layer answers {depth} steps late); simulate with steps={T}")
    out_layers = {}
    for n in layers:
        node = qg.graph.nodes[n]
        row = dict.fromkeys(LAYER_KEYS)
        row.update({"op": node.op, "spiking": bool(node.spec.spiking)})
        if node.spec.spiking:
            row.update(spike_overlap(_spikes(ref, n)[:T], _spikes(run_q, n)[:T]))
        else:
            vf = np.asarray(ref.traces[n]["v"])[:T].reshape(T, ref.batch, -1)
            vq = np.asarray(run_q.traces[n]["v"])[:T].reshape(T, run_q.batch, -1) / qg.state_scale(n)
            err = float(np.sqrt(((vq - vf) ** 2).mean()))
            row.update({"silent": False, "v_rms_error": err,
                        "v_rel_rms_error": err / (float(np.sqrt((vf**2).mean())) or 1.0)})
        out_layers[n] = row
    outputs = {}
    for o in qg.graph.outputs:
        if o in ref.outputs and o in run_q.outputs:
            a, b = np.asarray(ref.outputs[o])[:T], np.asarray(run_q.outputs[o])[:T]
            src = [p for p in qg.graph.predecessors(o)]
            if src and src[0] in qg.scale and not qg.graph.nodes[src[0]].spec.spiking:
                b = b / qg.state_scale(src[0])
            outputs[o] = {"mean_abs_error": float(np.abs(a - b).mean()),
                          "count_error_per_sample": float(np.abs(a.sum(0) - b.sum(0)).sum() / max(a.shape[1], 1))}
    task: dict = {}
    if labels is not None and qg.graph.outputs:
        o = qg.graph.outputs[0]
        y = np.asarray(labels).reshape(-1)
        pf = np.asarray(ref.outputs[o])[:T].sum(0).reshape(ref.batch, -1).argmax(-1)
        pq = np.asarray(run_q.outputs[o])[:T].sum(0).reshape(run_q.batch, -1).argmax(-1)
        task = {"accuracy_float": float((pf == y).mean()), "accuracy_quant": float((pq == y).mean()),
                "prediction_agreement": float((pf == pq).mean())}
    if metric is not None:
        task["metric_float"] = float(metric(ref.outputs))
        task["metric_quant"] = float(metric({k: np.asarray(v)[:T] for k, v in run_q.outputs.items()}))
    return {"fidelity": {
        **headline(out_layers),
        "layers": out_layers,
        "outputs": outputs,
        "task": task,
        "steps": T,
        "input_steps": t_in,
        "depth": depth,
        "backend": run_q.backend,
        "arith": run_q.meta.get("arith"),
    }}
