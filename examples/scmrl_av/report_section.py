"""The audio-visual classification section of a deployment report, plugged into spikedeploy's report.

Importing this module registers `classification`: accuracy per input mode (fused, audio only, visual only)
for the float SNN, the emulator and the trained ANN twin, the drop in points, and Lava's parity.
"""

from __future__ import annotations

import html

from spikedeploy.report.sections import TaskSection, register_section


def _rows(c: dict) -> list[tuple[str, float, float, float, float]]:
    a = c["accuracy"]
    return [(m, a["float"][m], a["emulator"][m], a["drop_points"][m], c["ann_twin"]["accuracy"][m]) for m in a["float"]]


def render_terminal(report: dict, console) -> None:
    from rich.table import Table

    c = report["classification"]
    t = Table(title=f"accuracy on {c['n']} unseen-speaker pairs (chance {c['chance']:.0%})")
    for col in ("mode", "float SNN", "emulator", "drop (points)", "ANN twin"):
        t.add_column(col)
    for m, f, e, d, ann in _rows(c):
        t.add_row(m, f"{f:.3f}", f"{e:.3f}", f"{d:+.2f}", f"{ann:.3f}")
    console.print(t)


def render_html(report: dict) -> tuple[str, list]:
    c = report["classification"]
    body = "".join(f"<tr><td>{html.escape(m)}</td><td>{f:.3f}</td><td>{e:.3f}</td><td>{d:+.2f}</td><td>{ann:.3f}</td></tr>"
                   for m, f, e, d, ann in _rows(c))
    par = c["lava_parity"]
    return (f"<p>{html.escape(c['task'])}: {c['n']} pairs, chance {c['chance']:.0%}</p><table><tr><th>mode</th>"
            f"<th>float SNN</th><th>emulator</th><th>drop (points)</th><th>ANN twin</th></tr>{body}</table>"
            f"<p>Lava equals the emulator bit for bit on every node ({par['samples']} pairs): "
            f"<b>{'yes' if par['all_equal'] else 'NO'}</b></p>"), []


SECTION = register_section(TaskSection("classification", "Audio-visual classification", terminal=render_terminal,
                                       html=render_html))
