"""The sweep's page: the Pareto front of energy per inference against the task metric (and cores), and every
point with links to the quantized graph and the run it was computed from. One self-contained file: plots are
matplotlib PNGs inlined as base64 (as report_html does); the links are relative, to files under the sweep's
output directory.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from spikedeploy.io.atomic import atomic_write
from spikedeploy.report.html import png

COLORS = ("#3b75af", "#e1812c", "#3a923a", "#c03d3e", "#9372b2", "#845b53", "#d684bd", "#7f7f7f")
MARKERS = ("o", "s", "^", "D", "v", "P")


def _style(points: list[dict]) -> tuple[dict, dict]:
    targets = list(dict.fromkeys(p["target"] for p in points))
    methods = list(dict.fromkeys(p["method"] for p in points))
    return ({t: COLORS[i % len(COLORS)] for i, t in enumerate(targets)},
            {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)})


def _figures(res: dict) -> list[tuple[str, str]]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    pts = [p for p in res["points"] if p["fits"] and p["score"] is not None and p["energy_j"] is not None]
    color, marker = _style(res["points"])
    label = res["metric"]["label"]
    figs = []
    for what, x_of, front_key, xlabel, logx in (
            ("energy", lambda p: p["energy_j"], "front", "energy per inference (J)", True),
            ("cores", lambda p: p["cores"], "front_cores", "cores", False)):
        fig, ax = plt.subplots(figsize=(8, 4.6))
        seen = set()
        for p in pts:
            tag = (p["target"], p["method"])
            ax.scatter(x_of(p), p["score"], s=40 + 16 * p["weight_bits"], c=color[p["target"]],
                       marker=marker[p["method"]], alpha=0.85, edgecolors="k" if p[front_key] else "none",
                       linewidths=1.4, label=None if tag in seen else f"{p['target']} / {p['method']}")
            seen.add(tag)
        front = sorted((p for p in pts if p[front_key]), key=lambda p: (x_of(p), -p["score"]))
        if what == "energy" and front:
            # the front as a staircase: the best score reachable for at most that energy
            xs, ys = [], []
            for p in front:
                if ys:
                    xs.append(x_of(p))
                    ys.append(ys[-1])
                xs.append(x_of(p))
                ys.append(p["score"])
            ax.plot(xs, ys, color="k", lw=1.2, ls="--", label="Pareto front")
        for p in front:
            ax.annotate(f"w{p['weight_bits']} t{p['steps']}", (x_of(p), p["score"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        if logx and pts and min(x_of(p) for p in pts) > 0:
            ax.set_xscale("log")
        if not logx:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        title = (f"{label} vs energy per inference: front (outlined) of {sum(p['front'] for p in pts)} points"
                 if what == "energy" else
                 f"{label} vs cores: outlined, the front of energy, metric and cores "
                 f"({sum(p['front_cores'] for p in pts)} points)")
        ax.set_title(title + "; marker size: weight bits; labels: w<bits> t<steps>", fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        figs.append((f"{label} vs {what}", png(fig)))
    return figs


def write_html(res: dict, path: str | Path) -> Path:
    """Write the page to `path` (atomically) and return it."""
    from spikedeploy.report.sweep import table_rows

    path = Path(path)
    e = html.escape
    root = Path(res["out"])

    def link(rel: str | None, text: str) -> str:
        if not rel:
            return "-"
        href = Path(os.path.relpath(root.resolve() / rel, path.resolve().parent))
        return f"<a href='{e(href.as_posix())}'>{e(text)}</a>"

    cols, rows = table_rows(res)
    ds = res["dataset"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>spikedeploy sweep</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}tr.front{background:#eef6ea;font-weight:bold}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Design-space sweep: {len(res['points'])} points</h1>",
        f"<p>model {e(res['model'])} (sha256 {e(res['model_sha256'][:16])}…); inputs "
        f"{e(', '.join(f'{k}={v}' for k, v in ds['inputs'].items()))}; {ds['samples']} samples; labels "
        f"{e(str(ds['labels']))}; calibration {e(str(ds['calibration']))}; metric: {e(res['metric']['label'])}; "
        f"{res['computed']} computed, {res['cached']} cached.</p>",
        "<p>grid: " + "; ".join(f"{e(k)} {e(', '.join('each target own' if x is None else str(x) for x in v))}"
                                for k, v in res["grid"].items()) + "</p>",
    ]
    for title, b64 in _figures(res):
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,{b64}'>")
    parts.append("<h2>Points</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in cols)
                 + "<th>why not</th><th>quantized graph</th><th>run</th><th>row</th></tr>")
    for p, row in zip(res["points"], rows, strict=True):
        files = p.get("files") or {}
        row_file = f"points/{p['key']}/point.json"
        parts.append(f"<tr{' class=front' if p['front'] else ''} id='{e(p['key'])}'>"
                     + "".join(f"<td>{e(c)}</td>" for c in row) + f"<td>{e('; '.join(p['why_not']))}</td>"
                     + f"<td>{link(files.get('qgraph'), 'g.q.npz')}</td><td>{link(files.get('run'), 'run.npz')}</td>"
                     + f"<td>{link(row_file, 'point.json')}</td></tr>")
    parts.append("</table><ul>" + "".join(f"<li>{e(n)}</li>" for n in res["notes"]) + "</ul></body></html>")
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path
