"""Which chip, and at what cost: one graph on several targets, side by side.

Per target: whether the graph fits (capability breaches, quantization refusals, placement violations,
each one line), cores and chips, energy per inference, per-sample latency and pipelined throughput, and,
when inputs are given, the task metric in that chip's own arithmetic (the emulator runs the graph as
quantized for that chip, and its spike counts drive that chip's energy).

Latency and throughput are separate figures. A sample's answer leaves the chip (T + depth) steps after
its first input step (T input steps, depth synapse hops to the deepest output), so
    latency = (T + depth) x time per step (+ host work done once per inference);
while successive samples overlap in the pipeline, one entering every T steps, so
    throughput = 1 / (T x time per step + host work once per inference).
Energy per inference covers the steps of the activity that prices it: T + depth when each chip runs the
inputs (the sample's whole response), else the run's or the assumed steps. Every figure names the
constants it rests on; figures that rest on an estimated constant are marked.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from spikedeploy.errors import SpikeDeployError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.partition.placer import partition
from spikedeploy.report.build import _eng
from spikedeploy.simulate.float_ref import synapse_depth
from spikedeploy.targets.capabilities import capability_breaches

ENERGY_KEYS = ("E_synop", "E_neuron_update", "E_neuron_update_active", "E_spike_in_core", "E_spike_between_cores",
               "E_spike_between_chips", "P_static_per_chip", "E_host_mac")
TIME_KEYS = ("t_synop", "t_neuron_update", "t_spike_in_core", "t_spike_between_cores", "t_spike_between_chips",
             "t_barrier", "t_host_mac", "t_host_round_trip")
SHOWN = 3  # reasons per target printed in the terminal
MAX_REASONS = 50  # reasons per target kept (a chip far too small breaks a limit on every core)
DEFAULT_TARGETS = ("loihi2", "loihi1", "spinnaker2", "truenorth", "xylo", "speck")


def _depth(graph: Graph) -> int:
    d = synapse_depth(graph)
    return max((d.get(o, 0) for o in graph.outputs), default=0)


def feed_inputs_through_synapses(graph: Graph) -> list[str]:
    """Input -> neuron edges (lava-dl netx's input layer takes its input as a_in directly) get a one-to-one
    identity Scale synapse, as every other chip needs a synapse in front of a neuron; the neuron then sees
    its input one step later. Returns what was inserted."""
    done = []
    for a, b in list(graph.edges):
        na, nb = graph.nodes[a], graph.nodes[b]
        if na.op == "Input" and nb.spec.family == "neuron" and nb.placement == "chip":
            name = f"{b}.input_synapse"
            graph.add(Node(name, "Scale", {"scale": np.ones(na.out_shape or nb.out_shape)}, modality=nb.modality))
            graph.edges[graph.edges.index((a, b))] = (a, name)
            graph.connect(name, b)
            done.append(f"'{a}' -> '{b}': identity synapse '{name}' inserted (the neuron sees its input one step later)")
    if done:
        graph.validate()
    return done


def compare_targets(graph: Graph, targets: Sequence = DEFAULT_TARGETS, *, run=None,
                    inputs: Mapping[str, np.ndarray] | None = None, labels: np.ndarray | None = None,
                    steps: int | None = None, assumed_rate: float | None = None, metric=None,
                    quantize_options: Mapping | None = None, keep: dict | None = None) -> dict:
    """One row per target (see the module doc). `run`: a Run whose spike counts price every target (used
    when no `inputs` are given); `inputs` ({name: [T, B, ...]}): each target's own emulated run prices it and
    scores `labels` ([B] class indices; argmax of the first output's counts) in its arithmetic; `metric`, a
    callable on a Run's outputs (e.g. an example's retrieval R@K), is scored for float and for each chip.
    `quantize_options` go to every target's `quantize` (e.g. method="percentile", calibration=...).
    `keep`: a dict that receives {target name: {"qgraph", "run"}} (None where there is none), so that a
    caller (a sweep) can save what each row was computed from."""
    from spikedeploy.estimate.energy import estimate
    from spikedeploy.quantize.fidelity import fidelity
    from spikedeploy.quantize.quantizer import quantize
    from spikedeploy.report.build import DEFAULT_ASSUMED_RATE, DEFAULT_STEPS
    from spikedeploy.simulate.dispatch import simulate
    from spikedeploy.targets.spec import get_target

    own = None
    if isinstance(graph, QGraph):  # e.g. a netx file: its own target runs it as read, others re-quantize
        own, graph = graph, graph.graph
    graph = graph.copy().validate()
    rewrites = feed_inputs_through_synapses(graph) if own is not None else []
    t_in = int(next(iter(inputs.values())).shape[0]) if inputs is not None else None
    rows = []
    for t in targets:
        spec = get_target(t)
        mine = own is not None and own.target == spec.name  # the integers were chosen for this chip
        why = capability_breaches(graph, spec)
        qg = own if mine else None
        g_t = own.graph if mine else graph
        depth = _depth(g_t)
        if not why and qg is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # overflow risks show up in the task metric
                    # a feasibility study goes on past approximations, and lists them (row "approximations")
                    qg = quantize(graph, spec, **{"allow_approximate": True, **(quantize_options or {})})
            except SpikeDeployError as e:
                why.append(str(e))
        chip_run, task = run, None
        if qg is not None and inputs is not None:
            layers = [n for n in qg.q if qg.graph.nodes[n].spec.family == "neuron"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                chip_run = simulate(qg, inputs, backend="emulator", steps=t_in + depth, probes=layers)
                fid = fidelity(g_t, qg, inputs, run_q=chip_run, labels=labels, metric=metric)["fidelity"]
            task = {"dice_min": fid["dice_min"], **fid["task"], "arith": fid["arith"]}
        if keep is not None:
            keep[spec.name] = {"qgraph": qg, "run": chip_run}
        rate = None
        n_steps = steps
        if chip_run is None:
            rate = DEFAULT_ASSUMED_RATE if assumed_rate is None else float(assumed_rate)
            # as long as a chip's own run would be: the inputs' steps and the deepest layer's answer
            n_steps = int(steps or (t_in + depth if t_in else 0) or graph.meta.get("steps") or DEFAULT_STEPS)
        pl = partition(g_t, spec, run=chip_run, qgraph=qg, strict=False)
        why += [v for v in pl.violations if v not in why]
        en = estimate(g_t, spec, pl, chip_run, qgraph=qg, assumed_rate=rate, steps=n_steps)
        t_step = en["time_per_step_s"]
        once = en["per_inference"]["latency_s"] - en["steps"] * t_step  # host work done once per inference
        # a chip's own run lasts T + depth steps (the whole response); T counts the input steps
        T = t_in if t_in is not None else en["steps"]
        consts = {c["name"]: c for c in en["constants"]}
        est = sorted(k for k, c in consts.items() if c["estimate"] and k in ENERGY_KEYS + TIME_KEYS)
        rows.append({
            "target": spec.name,
            "description": spec.description,
            "fits": not why,
            "why_not": why[:MAX_REASONS],
            "why_not_total": len(why),
            "rewrites": [] if mine else rewrites,
            "approximations": [] if qg is None or mine else list(qg.deviations),
            "cores": pl.cores_used,
            "chips": pl.chips,
            "cores_lower_bound": pl.lower_bound,
            "cores_available": spec.cores_per_chip * spec.max_chips,
            "weight_bits": spec.numeric.weight_bits,
            "state_bits": spec.numeric.state_bits,
            "steps": T,
            "depth": depth,
            "energy_steps": en["steps"],
            "energy_j": en["per_inference"]["energy_j"],
            "energy_estimated": any(k in ENERGY_KEYS for k in est),
            "time_per_step_s": t_step,
            "latency_s": (T + depth) * t_step + once,
            "throughput_per_s": 1.0 / (T * t_step + once) if T * t_step + once > 0 else None,
            "timing_estimated": any(k in TIME_KEYS for k in est),
            "limits_estimated": bool(spec.core.estimate),
            "estimated_constants": est,
            "activity": ("this chip's emulated run" if inputs is not None and qg is not None else
                         "the given run" if chip_run is not None else f"assumed rate {rate} for {en['steps']} steps"),
            "task": task,
            "constants": en["constants"],
        })
    return {"graph": {"inputs": graph.inputs, "outputs": graph.outputs},
            "targets": rows,
            "notes": ["latency = (T + depth) x time per step (+ host work once per inference); throughput = "
                      "1 / (T x time per step + host work once): samples overlap in the pipeline",
                      "* marks a figure resting on at least one estimated constant (see each row's "
                      "estimated_constants and constants, with sources)",
                      "fits: no capability breach, quantization refusal or placement violation"]}


def table_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """Column names and one row of strings per target (shared by the terminal table and the HTML page)."""
    has_task = any(r["task"] for r in res["targets"])
    cols = ["target", "fits", "cores", "chips", "energy/inf", "latency", "throughput", "bits w/state"]
    if has_task:
        cols += ["metric (chip)", "dice min"]
    out = []
    for r in res["targets"]:
        star_e = "*" if r["energy_estimated"] else ""
        star_t = "*" if r["timing_estimated"] else ""
        row = [r["target"], "yes" if r["fits"] else "no: " + r["why_not"][0],
               f"{r['cores']}" + ("*" if r["limits_estimated"] else ""), str(r["chips"]),
               _eng(r["energy_j"], "J") + star_e, _eng(r["latency_s"], "s") + star_t,
               (f"{r['throughput_per_s']:.3g}/s" if r["throughput_per_s"] else "-") + star_t,
               f"{r['weight_bits']}/{r['state_bits']}"]
        if has_task:
            t = r["task"] or {}
            key = "accuracy" if t.get("accuracy_quant") is not None else "metric"
            m = t.get(f"{key}_quant")
            row += ["-" if m is None else f"{m:.3f} (float {t[f'{key}_float']:.3f})",
                    "-" if t.get("dice_min") is None else f"{t['dice_min']:.3f}"]
        out.append(row)
    return cols, out


def render_terminal(res: dict, console) -> None:
    from rich.table import Table

    cols, rows = table_rows(res)
    t = Table(title="targets compared")
    for c in cols:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*row)
    console.print(t)
    for r in res["targets"]:
        for w in r["why_not"][1:SHOWN]:
            console.print(f"{r['target']}: also {w}", highlight=False, soft_wrap=True)
        if r["why_not_total"] > SHOWN:
            console.print(f"{r['target']}: and {r['why_not_total'] - SHOWN} more (the first {MAX_REASONS} in --json "
                          "and --html)")
        for w in r["rewrites"]:
            console.print(f"{r['target']}: {w}", highlight=False, soft_wrap=True)
        if r["approximations"]:
            console.print(f"{r['target']}: quantized with {len(r['approximations'])} approximation(s), e.g. "
                          f"{r['approximations'][0]}", highlight=False, soft_wrap=True)
    for n in res["notes"]:
        console.print(n, highlight=False)


def write_html(res: dict, path: str | Path) -> Path:
    """One self-contained page: the table, every reason a target does not fit, every constant with its source."""
    from spikedeploy.io.atomic import atomic_write

    cols, rows = table_rows(res)
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>spikedeploy compare</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.est{color:#a60}</style></head><body>",
             "<h1>Targets compared</h1><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"]
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table><ul>" + "".join(f"<li>{e(n)}</li>" for n in res["notes"]) + "</ul>")
    for r in res["targets"]:
        parts.append(f"<h2>{e(r['target'])}</h2><p>{e(r['description'])}; activity: {e(r['activity'])}</p>")
        if r["why_not"] or r["rewrites"] or r["approximations"]:
            more = r["why_not_total"] - len(r["why_not"])
            parts.append("<ul>" + "".join(f"<li>{e(w)}</li>" for w in r["why_not"] + r["rewrites"] + r["approximations"])
                         + (f"<li>and {more} more</li>" if more else "") + "</ul>")
        parts.append("<table><tr><th>constant</th><th>value</th><th>source</th></tr>")
        for c in r["constants"]:
            cls = " class='est'" if c["estimate"] else ""
            parts.append(f"<tr{cls}><td>{e(c['name'])}</td><td>{c['value']:.4g} {e(c['unit'])}</td>"
                         f"<td>{e(c['source'])}{' (estimate)' if c['estimate'] else ''}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path
