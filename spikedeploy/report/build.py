"""The deployment report: does it fit, what does it cost, what does it lose (JSON, terminal, HTML).

`build_report` returns a plain dict that validates against `schema.json` (JSON Schema 2020-12,
`REPORT_SCHEMA`); `render_terminal` prints it with rich; `report_html.write_html` writes one
self-contained HTML file with plots. Every number comes with the assumptions that produced it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from spikedeploy.cli.jsonout import jsonable
from spikedeploy.estimate.energy import estimate
from spikedeploy.estimate.traffic import traffic as _traffic
from spikedeploy.graph.ops import IO
from spikedeploy.partition.placer import RESOURCES, partition
from spikedeploy.report.sections import get_section, present
from spikedeploy.simulate.hybrid import host_boundary

SCHEMA_VERSION = "1.0"
DEFAULT_ASSUMED_RATE = 0.05  # spikes per neuron per step when no Run is given
DEFAULT_STEPS = 100


def report_schema() -> dict:
    """The JSON Schema (draft 2020-12) every report validates against."""
    return json.loads(resources.files("spikedeploy.report").joinpath("schema.json").read_text())


def build_report(graph, target, *, run=None, placement=None, fidelity: dict | None = None, qgraph=None,
                 sections: dict[str, dict] | None = None, assumed_rate: float | None = None, steps: int | None = None,
                 allocator: str = "greedy", chips: int | None = None) -> dict[str, Any]:
    """Partition (unless `placement` is given), count traffic, estimate energy/latency, and collect it all.

    Without a `run`, spiking populations are assumed to fire `assumed_rate` (default 0.05) spikes per
    neuron per step for `steps` (default 100) steps, and the report says so. `fidelity` is carried into its
    section; `sections` ({key: data}) into registered task sections (report/sections.py), the first of which
    that prices a query beyond one inference sets `per_query`.
    """
    if isinstance(target, str):
        from spikedeploy.targets.spec import get_target

        target = get_target(target)
    if placement is None:
        placement = partition(graph, target, run=run, qgraph=qgraph, allocator=allocator, chips=chips, strict=False)
    rate = None
    if run is None:
        rate = DEFAULT_ASSUMED_RATE if assumed_rate is None else float(assumed_rate)
        steps = int(steps or graph.meta.get("steps") or DEFAULT_STEPS)
    tr = _traffic(graph, placement, run, assumed_rate=rate)
    sections = dict(sections or {})
    q_macs, q_note = 0, ""
    for key, data in sections.items():
        sec = get_section(key)
        if sec.query_host_macs is not None and not q_macs:
            q_macs, q_note = sec.query_host_macs(data)
    en = estimate(graph, target, placement, run, qgraph=qgraph, assumed_rate=rate, steps=steps, traffic=tr,
                  query_host_macs=q_macs, query_note=q_note)
    T = en["steps"]
    stats = graph.stats()
    rates = tr["rates"]

    layers = []
    for name in placement.model.order:
        info = placement.layers[name]
        r = rates.get(name)
        layers.append({
            "name": name, "op": info["op"], "neurons": info["neurons"], "spiking": info["spiking"],
            "cores": placement.node_cores(name), "groups": len(placement.groups[name]),
            "synapse_nodes": info["synapse_nodes"],
            "synapses": int(sum(p.total_synapses for p in placement.model.layers[name].incoming)),
            "firing_rate": None if (r is None or not info["spiking"]) else float(r),
            "spikes_per_step": None if (r is None or not info["spiking"]) else float(r * info["neurons"]),
        })
    host_e = en["breakdown_j"]["host"]
    chip_host = {
        "chip_nodes": sorted(n for n, v in graph.nodes.items() if v.placement == "chip" and v.op not in IO),
        "host_nodes": sorted(placement.host_nodes),
        "chip_neurons": int(sum(v["neurons"] for v in placement.layers.values())),
        "host_macs_per_step": int(en["per_step"]["host_macs"]),
        "energy_chip_j": float(en["per_inference"]["energy_j"] - host_e),
        "energy_host_j": float(host_e),
        "host_detail": en["host"],
        **host_boundary(graph),
    }
    tr_out = {
        "per_step": tr["per_step"],
        "per_inference": {k: v * T for k, v in tr["per_step"].items()},
        "chip_matrix": tr["chip_matrix"],
        "core_matrix": tr["core_matrix"],
        "busiest_links": tr["busiest_links"],
        "per_core_sent": tr["per_core"]["sent"],
        "per_core_received": tr["per_core"]["received"],
    }
    rep = {
        "schema_version": SCHEMA_VERSION,
        "target": {
            "name": target.name, "description": target.description, "cores_per_chip": target.cores_per_chip,
            "max_chips": target.max_chips, "limits": dict(placement.limits),
            "limit_sources": dict(getattr(target.core, "sources", {})),
            "limits_estimated": bool(getattr(target.core, "estimate", False)),
        },
        "graph": {"nodes": stats["total"]["nodes"], "neurons": stats["total"]["neurons"],
                  "synapses": stats["total"]["synapses"], "host_nodes": stats["total"]["host_nodes"]},
        "run": None if run is None else {"backend": run.backend, "steps": int(run.steps), "batch": int(run.batch)},
        "steps": T,
        "fits": not placement.violations,
        "violations": list(placement.violations),
        "cores_used": placement.cores_used,
        "cores_lower_bound": placement.lower_bound,
        "lower_bound_by_resource": dict(placement.lower_bound_by_resource),
        "chips": placement.chips,
        "allocator": placement.allocator,
        "utilisation": placement.utilisation(),
        "cores": [{k: v for k, v in c.as_dict().items() if k != "groups"} for c in placement.cores],
        "layers": layers,
        "chip_host_split": chip_host,
        "energy_per_inference_j": en["per_inference"]["energy_j"],
        "latency_per_inference_s": en["per_inference"]["latency_s"],
        "synops_per_inference": en["per_inference"]["synops"],
        "spikes_per_inference": en["per_inference"]["spikes"],
        "energy": {
            "breakdown_j": en["breakdown_j"],
            "per_step": en["per_step"],
            "time_per_step_s": en["time_per_step_s"],
            "busiest_core": en["busiest_core"],
            "literature_45nm": en["literature_45nm"],
            "ann_equivalent": en["ann_equivalent"],
            "per_query": en["per_query"],
        },
        "traffic": tr_out,
        "assumptions": {"constants": en["constants"], "notes": en["assumptions"]},
        "fidelity": fidelity,
        # approximations the user accepted (--allow-approximate): exporter's and quantizer's, never silent
        "deviations": list(dict.fromkeys([*graph.meta.get("deviations", []),
                                          *(getattr(qgraph, "deviations", None) or [])])),
    }
    for key, data in sections.items():
        rep[key] = {**data, "per_query": en["per_query"]} if get_section(key).query_host_macs else dict(data)
    return jsonable(rep)


def _eng(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if x == 0:
        return f"0 {unit}"
    for f, p in ((1e-15, "f"), (1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1, ""), (1e3, "k"), (1e6, "M")):
        if abs(x) < f * 1000:
            return f"{x / f:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"


def render_terminal(report: dict, console=None) -> None:
    """Print the report as rich tables (summary, layers, utilisation, energy, traffic, assumptions)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = report["target"]
    s = Table(title=f"spikedeploy report — {t['name']}", show_header=False)
    s.add_column("", style="bold")
    s.add_column("")
    fit = "[green]yes[/green]" if report["fits"] else "[red]NO[/red]"
    s.add_row("fits", fit)
    s.add_row("cores used / lower bound", f"{report['cores_used']} / {report['cores_lower_bound']}")
    s.add_row("chips", f"{report['chips']} ({t['cores_per_chip']} cores each)")
    s.add_row("time steps", str(report["steps"]) + ("" if report["run"] else " (assumed, no Run)"))
    s.add_row("energy / inference", _eng(report["energy_per_inference_j"], "J"))
    s.add_row("latency / inference", _eng(report["latency_per_inference_s"], "s"))
    s.add_row("synaptic ops / inference", f"{report['synops_per_inference']:.4g}")
    s.add_row("spikes / inference", f"{report['spikes_per_inference']:.4g}")
    lit = report["energy"]["literature_45nm"]["energy_j"]
    s.add_row("literature 45 nm formula", _eng(lit, "J"))
    s.add_row("same network as ANN (45 nm)", _eng(report["energy"]["ann_equivalent"]["energy_j"], "J"))
    pq = report["energy"].get("per_query")
    if pq:
        s.add_row("energy / task query", _eng(pq["energy_j"], "J"))
    ch = report["chip_host_split"]
    s.add_row("chip / host", f"{len(ch['chip_nodes'])} chip nodes, {len(ch['host_nodes'])} host nodes "
              f"({ch['host_macs_per_step']} host MACs/step)")
    console.print(s)
    for v in report["violations"]:
        console.print(f"[red]violation:[/red] {v}")

    lt = Table(title="layers")
    for c in ("layer", "op", "neurons", "synapses", "cores", "rate (spk/neuron/step)"):
        lt.add_column(c, justify="right" if c not in ("layer", "op") else "left")
    for r in report["layers"]:
        rate = "-" if r["firing_rate"] is None else f"{r['firing_rate']:.4f}"
        lt.add_row(r["name"], r["op"], str(r["neurons"]), str(r["synapses"]), str(len(r["cores"])), rate)
    console.print(lt)

    ut = Table(title="core utilisation (fraction of per-core limit)")
    for c in ("resource", "limit", "mean", "max", "lower bound (cores)"):
        ut.add_column(c)
    for r in RESOURCES:
        u = report["utilisation"][r]
        ut.add_row(r, str(report["target"]["limits"][r]), f"{u['mean']:.2f}", f"{u['max']:.2f}",
                   str(report["lower_bound_by_resource"][r]))
    console.print(ut)

    et = Table(title="energy per inference")
    et.add_column("component")
    et.add_column("energy", justify="right")
    et.add_column("share", justify="right")
    tot = max(report["energy_per_inference_j"], 1e-300)
    for k, v in report["energy"]["breakdown_j"].items():
        et.add_row(k, _eng(v, "J"), f"{100 * v / tot:.1f}%")
    console.print(et)

    tt = Table(title="spike messages per inference")
    tt.add_column("level")
    tt.add_column("messages", justify="right")
    for k, v in report["traffic"]["per_inference"].items():
        tt.add_row(k, f"{v:.4g}")
    console.print(tt)
    if report["traffic"]["busiest_links"]:
        bl = Table(title="busiest links (messages per step)")
        for c in ("source", "core -> core", "chip -> chip", "msgs/step"):
            bl.add_column(c)
        for li in report["traffic"]["busiest_links"][:5]:
            src = "host" if li["src_core"] < 0 else str(li["src_core"])
            sch = "host" if li["src_chip"] is None else str(li["src_chip"])
            bl.add_row(li["source"], f"{src} -> {li['dst_core']}", f"{sch} -> {li['dst_chip']}",
                       f"{li['messages_per_step']:.3g}")
        console.print(bl)

    at = Table(title="assumptions: constants")
    for c in ("constant", "value", "source"):
        at.add_column(c)
    for c in report["assumptions"]["constants"]:
        src = c["source"] + (" [estimate]" if c["estimate"] else "")
        at.add_row(c["name"], f"{c['value']:.3g} {c['unit']}", src)
    console.print(at)
    for n in report["assumptions"]["notes"]:
        console.print(f"  • {n}")
    for d in report.get("deviations") or []:
        console.print(f"[yellow]deviation (approximation accepted with --allow-approximate):[/] {d}")
    if report.get("fidelity"):
        render_fidelity(report["fidelity"], console)
    for sec in present(report):
        if sec.terminal is not None:
            sec.terminal(report, console)


def render_fidelity(fid: dict, console) -> None:
    """Per-layer float vs quantized spikes: spike-set overlap (Dice), precision, recall, counts, rate change;
    the headline is the Dice over the layers that spike, with the silent ones named."""
    from rich.table import Table

    t = Table(title=f"fidelity: float vs quantized, {fid.get('steps', '?')} steps = {fid.get('input_steps', '?')} "
                    f"+ depth {fid.get('depth', '?')} ({fid.get('inputs', 'given inputs')}; {fid.get('arith')} arithmetic)")
    for col in ("layer", "op", "spike overlap (Dice)", "precision", "recall", "spikes float", "spikes quantized",
                "rate change"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for name, r in fid.get("layers", {}).items():
        if r.get("silent") and r.get("spiking"):
            dice = "silent"
        elif r.get("spiking"):
            dice = _fmt(r.get("dice"))
        else:
            dice = f"v rel. RMS error {_fmt(r.get('v_rel_rms_error'))}"
        t.add_row(name, r.get("op", ""), dice, _fmt(r.get("precision")), _fmt(r.get("recall")),
                  _fmt(r.get("spikes_float")), _fmt(r.get("spikes_quant")), _fmt(r.get("rate_change")))
    console.print(t)
    console.print(fidelity_headline(fid))
    for name, o in fid.get("outputs", {}).items():
        console.print(f"output {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in o.items()))
    for k, v in (fid.get("task") or {}).items():
        console.print(f"task {k}: {_fmt(v)}")


def fidelity_headline(fid: dict) -> str:
    """One line: Dice min and mean over the layers that spike, and the layers silent on both sides."""
    silent = fid.get("silent_layers") or []
    tail = f"; silent on both sides (not scored): {', '.join(silent)}" if silent else ""
    if fid.get("dice_min") is None:
        return "spike overlap (Dice): no layer spikes on either side" + tail
    return (f"spike overlap (Dice) over {fid.get('layers_scored')} spiking layer(s): min {_fmt(fid['dice_min'])}, "
            f"mean {_fmt(fid['dice_mean'])}{tail}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return f"{v:,}" if isinstance(v, int) else str(v)
