"""What every example pipeline shares: its command line and how it writes its report.

The command line: `python -m examples.<pkg>.pipeline --out DIR [--limit N]`.

A pipeline that finds Lava and the emulator disagreeing exits non-zero (make zoo and make demo then fail),
naming where in report.json the disagreement is recorded.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from spikedeploy.cli.jsonout import dumps
from spikedeploy.io.atomic import atomic_write
from spikedeploy.report.html import write_html


def pipeline_main(argv, *, doc: str, out: str, run: Callable, parity: Callable[[dict], bool], where: str,
                  limit_help: str, seed: bool = True) -> dict:
    """Parse the shared options, run `run(out, lava_samples=, limit=[, seed=])`, and exit with a message when
    `parity(report)` says Lava and the emulator disagree (`where`: the report.json field to read)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--lava-samples", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help=limit_help)
    if seed:
        ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rep = run(a.out, lava_samples=a.lava_samples, limit=a.limit, **({"seed": a.seed} if seed else {}))
    if a.lava_samples and not parity(rep):
        raise SystemExit(f"Lava and the emulator disagree: see {a.out / 'report.json'} {where}")
    return rep


def train_parser(doc: str, defaults: dict, out: Path, out_help: str) -> argparse.ArgumentParser:
    """A train.py's command line: one --option per hyperparameter in `defaults` (typed by its default), and --out."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in defaults.items():
        p.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    p.add_argument("--out", type=Path, default=out, help=out_help)
    return p


def publish(rep: dict, out_dir: Path, console, summary: Callable[[], None], t_start: float) -> dict:
    """Write report.json and report.html, print the report and the example's own summary, and the time taken."""
    from spikedeploy.report.build import render_terminal

    write_report(rep, out_dir)
    render_terminal(rep, console)
    summary()
    console.print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.html'} in "
                  f"{time.perf_counter() - t_start:.1f} s")
    return rep


def write_report(rep: dict, out_dir: Path) -> None:
    """report.json (stable JSON, atomic) and the self-contained report.html beside it."""
    with atomic_write(out_dir / "report.json", "w") as f:
        f.write(dumps(rep))
    write_html(rep, out_dir / "report.html")
