"""The cross-modal retrieval section of a deployment report, plugged into spikedeploy's report.

Importing this module registers the `retrieval` section: `build_report(..., sections={"retrieval": data})`
with data shaped `{backend: {"image_to_text": {"R@k": x}, "text_to_image": {...}, "queries": n}, ...}` and,
optionally, `gallery_size` and `embedding_dim` (a host similarity search per query that the graph does not
contain, priced as gallery x dim MACs). An optional top-level `similarity_head` field of the report (the
host-or-chip head comparison of examples/retrieval) is drawn with it.
"""

from __future__ import annotations

import html

import numpy as np

from spikedeploy.report.build import _eng, _fmt
from spikedeploy.report.sections import TaskSection, register_section

DIRECTIONS = ("image_to_text", "text_to_image")
LABELS = ("image→text", "text→image")


def _rows(ret: dict) -> dict[str, dict]:
    return {b: v for b, v in ret.items() if isinstance(v, dict) and "image_to_text" in v}


def query_host_macs(ret: dict) -> tuple[int, str]:
    gal, dim = int(ret.get("gallery_size") or 0), int(ret.get("embedding_dim") or 0)
    return gal * dim, f"host similarity search over {gal} x {dim}"


def render_terminal(report: dict, console) -> None:
    """Recall@K per backend and direction."""
    from rich.table import Table

    ret = report["retrieval"]
    rows = _rows(ret)
    if not rows:
        return
    ks = sorted({k for v in rows.values() for d in DIRECTIONS for k in v.get(d, {})}, key=lambda k: int(k.split("@")[1]))
    gallery = ret.get("gallery_size") or (ret.get("gallery") or {}).get("items", "?")
    t = Table(title=f"cross-modal retrieval ({ret.get('queries', '?')} queries, gallery {gallery})")
    t.add_column("backend")
    for d in LABELS:
        for k in ks:
            t.add_column(f"{d} {k}", justify="right")
    for b, v in rows.items():
        label = b + (f" ({v['queries']} queries)" if "queries" in v else "")
        t.add_row(label, *(_fmt(v.get(d, {}).get(k)) for d in DIRECTIONS for k in ks))
    console.print(t)


def render_html(report: dict) -> tuple[str, list[tuple[str, str]]]:
    """Recall table, Lava parity, the similarity-head comparison, and a recall plot per direction."""
    ret = report["retrieval"]
    rows = _rows(ret)
    if not rows:
        return "", []
    ks = list(next(iter(rows.values()))["image_to_text"])
    head = "".join(f"<th>{d} {html.escape(k)}</th>" for d in LABELS for k in ks)
    body = "".join(
        f"<tr><td>{html.escape(b)}{(' (' + str(v['queries']) + ' queries)') if 'queries' in v else ''}</td>"
        + "".join(f"<td>{v[d][k]:.3f}</td>" if k in v.get(d, {}) else "<td>-</td>" for d in DIRECTIONS for k in ks)
        + "</tr>" for b, v in rows.items())
    par = (ret.get("lava") or {}).get("parity_with_emulator")
    note = "" if par is None else (f"<p>Lava equals the emulator bit for bit on every node: "
                                   f"<b>{'yes' if par.get('all_equal') else 'NO'}</b></p>")
    heads = report.get("similarity_head") or {}
    head_rows = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{v['cores_used']}</td><td>{_eng(v['energy_per_query_j'], 'J')}</td>"
        f"<td>{_eng(v['latency_per_query_s'], 's')}</td><td>{v.get('image_to_text_R@1', float('nan')):.3f}</td>"
        f"<td>{html.escape(v['where'])}</td></tr>" for m, v in heads.items())
    if head_rows:
        head_rows = ("<h3>Similarity head: host or chip (per query)</h3><table><tr><th>head</th><th>cores</th>"
                     "<th>energy</th><th>latency</th><th>image→text R@1</th><th>where</th></tr>"
                     f"{head_rows}</table>")
    return f"<table><tr><th>backend</th>{head}</tr>{body}</table>{note}{head_rows}", [_plot(rows)]


def _plot(rows: dict) -> tuple[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from spikedeploy.report.html import png

    backends = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained", sharey=True)
    for ax, d, title in zip(axes, DIRECTIONS, LABELS, strict=True):
        ks = list(rows[backends[0]][d])
        x = np.arange(len(ks))
        w = 0.8 / len(backends)
        for i, b in enumerate(backends):
            ax.bar(x + (i - (len(backends) - 1) / 2) * w, [rows[b].get(d, {}).get(k, 0.0) for k in ks], width=w, label=b)
        ax.set_xticks(x, ks)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Retrieval {title}")
    axes[0].set_ylabel("recall")
    axes[1].legend(fontsize=8, loc="lower right")
    return "Cross-modal retrieval: float vs emulator vs Lava", png(fig)


SECTION = register_section(TaskSection("retrieval", "Cross-modal retrieval", query_host_macs=query_host_macs,
                                       terminal=render_terminal, html=render_html))
