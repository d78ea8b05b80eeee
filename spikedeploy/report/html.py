"""One self-contained HTML report: summary tables and matplotlib plots inlined as base64 PNGs.

Plots: firing rate per layer, core utilisation per resource, traffic between cores and chips (heatmap)
and per level, energy breakdown, and fidelity (float vs quantized vs hardware) when the report has it.
No external files, scripts or fonts are referenced.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from spikedeploy.io.atomic import atomic_write
from spikedeploy.partition.placer import RESOURCES
from spikedeploy.report.build import _eng
from spikedeploy.report.sections import present


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(report: dict) -> list[tuple[str, str]]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figs: list[tuple[str, str]] = []
    layers = report["layers"]

    # firing rate per layer
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = [r["name"] for r in layers]
    vals = [r["firing_rate"] if r["firing_rate"] is not None else 0.0 for r in layers]
    ax.bar(range(len(names)), vals, color="#3b75af")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("spikes / neuron / step")
    ax.set_title("Firing rate per layer" + ("" if report["run"] else " (assumed: no Run)"))
    figs.append(("Firing rate per layer", png(fig)))

    # core utilisation per resource
    fig, ax = plt.subplots(figsize=(7, 3.2))
    cores = report["cores"]
    lim = report["target"]["limits"]
    x = np.arange(len(cores))
    for r, c in zip(RESOURCES, ("#3b75af", "#e1812c", "#3a923a", "#c03d3e"), strict=True):
        u = np.array([co[r] for co in cores], float) / max(1, lim[r])
        if len(cores) > 40:
            ax.plot(x, u, lw=1, color=c, label=r)
        else:
            w = 0.2
            ax.bar(x + (RESOURCES.index(r) - 1.5) * w, u, width=w, color=c, label=r)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("core")
    ax.set_ylabel("fraction of limit")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.set_title(f"Core utilisation ({report['cores_used']} cores, lower bound {report['cores_lower_bound']})")
    figs.append(("Core utilisation per resource", png(fig)))

    # traffic: heatmap (cores if known, else chips) + levels
    tr = report["traffic"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.1, 1]}, layout="constrained")
    m = tr.get("core_matrix") or tr["chip_matrix"]
    what = "core" if tr.get("core_matrix") else "chip"
    arr = np.asarray(m, float) if m else np.zeros((1, 1))
    im = a1.imshow(np.log10(arr + 1e-3) if arr.size else arr, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=a1, label="log10 msgs/step")
    a1.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    a1.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    a1.set_xlabel(f"destination {what}")
    a1.set_ylabel(f"source {what}")
    a1.set_title(f"Spike messages between {what}s")
    lv = tr["per_inference"]
    keys = [k for k in lv if k != "spikes"]
    a2.barh(keys, [lv[k] for k in keys], color="#3a923a")
    a2.set_xlabel("messages / inference")
    a2.set_title("Messages per level")
    figs.append(("Traffic between cores and chips", png(fig)))

    # energy breakdown
    fig, ax = plt.subplots(figsize=(7, 3.2))
    br = report["energy"]["breakdown_j"]
    ks = list(br)
    ax.barh(ks, [br[k] for k in ks], color="#e1812c")
    lit = report["energy"]["literature_45nm"]["energy_j"]
    ann = report["energy"]["ann_equivalent"]["energy_j"]
    ax.set_xlabel("J per inference")
    ax.set_title(f"Energy: {_eng(report['energy_per_inference_j'], 'J')} (literature 45 nm {_eng(lit, 'J')}, "
                 f"ANN {_eng(ann, 'J')})", fontsize=9)
    if max(br.values(), default=0) > 0:
        ax.set_xscale("symlog", linthresh=max(min(v for v in br.values() if v > 0), 1e-18))
    figs.append(("Energy breakdown", png(fig)))

    fid = report.get("fidelity")
    if fid and fid.get("layers"):
        # per layer: firing rate in float and in fixed point, and the overlap of the two spike sets (Dice);
        # a layer silent on both sides is marked, not drawn as a perfect bar
        names = list(fid["layers"])
        rows = [fid["layers"][n] for n in names]
        fl = [r.get("rate_float") or 0.0 for r in rows]
        qu = [r.get("rate_quant") or 0.0 for r in rows]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
        x = np.arange(len(names))
        a1.bar(x - 0.2, fl, width=0.4, label="float", color="#3b75af")
        a1.bar(x + 0.2, qu, width=0.4, label="fixed point", color="#e1812c")
        a1.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        a1.set_ylabel("spikes / neuron / step")
        a1.set_title("Firing rate: float vs fixed point")
        a1.legend(fontsize=8)
        scored = [bool(r.get("spiking")) and not r.get("silent") for r in rows]
        a2.bar(x, [r["dice"] if ok else 0.0 for r, ok in zip(rows, scored, strict=True)], color="#8e6bbf")
        for i, r in enumerate(rows):
            if not scored[i]:
                a2.text(i, 0.02, "silent" if r.get("spiking") else "analog", ha="center", va="bottom", rotation=90,
                        fontsize=8, color="#555555")
        a2.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        a2.set_ylim(0, 1.05)
        a2.set_ylabel("Dice = 2|A∩B| / (|A| + |B|)")
        head = ("no layer spikes" if fid.get("dice_min") is None
                else f"min {fid['dice_min']:.3f}, mean {fid['dice_mean']:.3f}")
        a2.set_title(f"Spike overlap over {fid.get('steps', '?')} steps ({head})")
        figs.append(("Fidelity per layer: float vs quantized", png(fig)))
    return figs


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td></tr>" for a, b in rows) + "</table>"


def render_html(report: dict) -> str:
    t = report["target"]
    summary = [
        ("target", f"{t['name']} — {t.get('description', '')}"),
        ("fits", "yes" if report["fits"] else "NO"),
        ("cores used / lower bound", f"{report['cores_used']} / {report['cores_lower_bound']}"),
        ("chips", f"{report['chips']} ({t['cores_per_chip']} cores per chip)"),
        ("time steps", f"{report['steps']}" + ("" if report["run"] else " (assumed: no Run)")),
        ("energy / inference", _eng(report["energy_per_inference_j"], "J")),
        ("latency / inference", _eng(report["latency_per_inference_s"], "s")),
        ("synaptic ops / inference", f"{report['synops_per_inference']:.4g}"),
        ("spikes / inference", f"{report['spikes_per_inference']:.4g}"),
        ("host nodes", ", ".join(report["chip_host_split"]["host_nodes"]) or "none"),
    ]
    figs = _figure_tags(_figures(report))
    def _rate(r):
        return "-" if r["firing_rate"] is None else f"{r['firing_rate']:.4f}"

    layer_rows = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['op'])}</td><td>{r['neurons']}</td>"
        f"<td>{r.get('synapses', '')}</td><td>{len(r['cores'])}</td><td>{_rate(r)}</td></tr>"
        for r in report["layers"]
    )
    consts = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td>{c['value']:.3g} {html.escape(c['unit'])}</td>"
        f"<td>{html.escape(c['source'])}{' <b>[estimate]</b>' if c['estimate'] else ''}</td></tr>"
        for c in report["assumptions"]["constants"]
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report["assumptions"]["notes"])
    task_html = ""
    for sec in present(report):
        if sec.html is not None:
            fragment, sec_figs = sec.html(report)
            task_html += f"<h2>{html.escape(sec.title)}</h2>{fragment}" + _figure_tags(sec_figs)
    split = report["chip_host_split"]
    split_html = (f"<p>chip: {len(split['chip_nodes'])} nodes, {split['chip_neurons']:,} neurons, "
                  f"{_eng(split['energy_chip_j'], 'J')} per inference; host: {len(split['host_nodes'])} nodes "
                  f"({html.escape(', '.join(split['host_nodes']) or 'none')}), {split['host_macs_per_step']:,} MACs/step, "
                  f"{_eng(split['energy_host_j'], 'J')} per inference</p>")
    viol = "".join(f"<li>{html.escape(v)}</li>" for v in report["violations"])
    devs = "".join(f"<li>{html.escape(d)}</li>" for d in report.get("deviations") or [])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>spikedeploy report — {html.escape(t['name'])}</title>
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
figure {{ display: inline-block; margin: 6px; vertical-align: top; }}
img {{ max-width: 560px; }}
.bad {{ color: #b00; }}
</style></head><body>
<h1>spikedeploy report</h1>
{_table(summary)}
{f'<h2 class="bad">Violations</h2><ul>{viol}</ul>' if viol else ''}
{f'<h2 class="bad">Approximations (accepted with --allow-approximate)</h2><ul>{devs}</ul>' if devs else ''}
<h2>Chip / host split</h2>
{split_html}
{task_html}
<h2>Plots</h2>
{figs}
<h2>Layers</h2>
<table><tr><th>layer</th><th>op</th><th>neurons</th><th>synapses</th><th>cores</th><th>rate (spk/neuron/step)</th></tr>{layer_rows}</table>
<h2>Assumptions</h2>
<table><tr><th>constant</th><th>value</th><th>source</th></tr>{consts}</table>
<ul>{notes}</ul>
</body></html>
"""


def _figure_tags(figs) -> str:
    return "".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{b64}"><figcaption>{html.escape(title)}'
        "</figcaption></figure>" for title, b64 in figs)


def write_html(report: dict, path: str | Path) -> Path:
    """Write the report as one self-contained HTML file (atomically) and return its path."""
    path = Path(path)
    text = render_html(report)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
