"""How much a quantized graph loses: float (with the chip's synapse delay) against fixed point, per layer.

Spikes are compared in the same time bin: the float reference runs with `synapse_delay=True`, so its
layer l fires at the steps the chip's layer l fires at, and any difference is quantization.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .graph import Graph
from .qgraph import QGraph
from .run import Run
from .simulate_float import simulate_float


def _neuron_layers(qg: QGraph) -> list[str]:
    return [n for n in qg.q if qg.graph.nodes[n].spec.family == "neuron"]


def _emulate(qg: QGraph, inputs, steps, probes) -> Run:
    from .simulate import simulate

    return simulate(qg, inputs, backend="emulator", steps=steps, probes=probes)


def spike_disagreement(graph: Graph, qg: QGraph, inputs, *, ref: Run | None = None) -> tuple[int, Run]:
    """Number of (step, sample, neuron) bins where float and fixed point disagree, over all spiking layers."""
    layers = [n for n in _neuron_layers(qg) if qg.graph.nodes[n].spec.spiking]
    if ref is None:
        ref = simulate_float(graph, inputs, probes=layers, synapse_delay=True)
    run = _emulate(qg, inputs, ref.steps, layers)
    d = 0
    for n in layers:
        d += int((_spikes(ref, n) != _spikes(run, n)).sum())
    return d, ref


def _spikes(run: Run, n: str) -> np.ndarray:
    s = np.asarray(run.traces[n]["s"])
    return s.reshape(s.shape[0], s.shape[1], -1) != 0


def fidelity(
    graph: Graph,
    qg: QGraph,
    inputs: Mapping[str, np.ndarray],
    run_q: Run | None = None,
    *,
    labels: np.ndarray | None = None,
    metric: Callable[[dict[str, np.ndarray]], float] | None = None,
    steps: int | None = None,
) -> dict:
    """Per-layer spike agreement, firing-rate change and readout error; task accuracy if labels are given.

    run_q: a fixed-point Run of `qg` on `inputs` with every neuron layer probed (default: the emulator).
    labels: [B] class indices; the prediction is the argmax over the first Output's values summed over time
        (spike counts, or the readout potential, whose positive scale λ does not move the argmax).
    metric: optional callable on a Run's outputs giving a task score; reported for both runs.
    Returns {"fidelity": {"layers": {...}, "spike_agreement": x, "outputs": {...}, "task": {...}}}.
    """
    layers = _neuron_layers(qg)
    ref = simulate_float(graph, inputs, steps=steps, probes=layers, synapse_delay=True)
    if run_q is None:
        run_q = _emulate(qg, inputs, ref.steps, layers)
    T = min(ref.steps, run_q.steps)
    out_layers = {}
    agree_bins = total_bins = 0
    for n in layers:
        node = qg.graph.nodes[n]
        row: dict = {"op": node.op}
        if node.spec.spiking:
            sf, sq = _spikes(ref, n)[:T], _spikes(run_q, n)[:T]
            same = int((sf == sq).sum())
            both = int((sf & sq).sum())
            nf, nq = int(sf.sum()), int(sq.sum())
            rf, rq = nf / sf.size, nq / sq.size
            row.update({
                "spike_agreement": same / sf.size,
                "spike_match": 2 * both / (nf + nq) if nf + nq else 1.0,
                "spikes_float": nf, "spikes_quant": nq,
                "rate_float": rf, "rate_quant": rq,
                "rate_change": (rq - rf) / rf if rf else (0.0 if rq == 0 else float("inf")),
            })
            agree_bins += same
            total_bins += sf.size
        else:
            vf = np.asarray(ref.traces[n]["v"])[:T].reshape(T, ref.batch, -1)
            vq = np.asarray(run_q.traces[n]["v"])[:T].reshape(T, run_q.batch, -1) / (64.0 * qg.scale[n])
            rms = float(np.sqrt((vf**2).mean())) or 1.0
            row.update({"v_rms_error": float(np.sqrt(((vq - vf) ** 2).mean())), "v_rel_rms_error":
                        float(np.sqrt(((vq - vf) ** 2).mean())) / rms})
        out_layers[n] = row
    outputs = {}
    for o in qg.graph.outputs:
        if o in ref.outputs and o in run_q.outputs:
            a, b = np.asarray(ref.outputs[o])[:T], np.asarray(run_q.outputs[o])[:T]
            src = [p for p in qg.graph.predecessors(o)]
            if src and src[0] in qg.scale and not qg.graph.nodes[src[0]].spec.spiking:
                b = b / (64.0 * qg.scale[src[0]])
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
        task["metric_quant"] = float(metric(run_q.outputs))
    return {"fidelity": {
        "layers": out_layers,
        "spike_agreement": agree_bins / total_bins if total_bins else 1.0,
        "outputs": outputs,
        "task": task,
        "steps": T,
        "backend": run_q.backend,
    }}
