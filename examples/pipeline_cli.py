"""What every example pipeline shares: its command line and how it writes its report.

The command line: `python -m examples.<pkg>.pipeline --out DIR [--limit N]`.

A pipeline that finds Lava and the emulator disagreeing exits non-zero (make zoo and make demo then fail),
naming where in report.json the disagreement is recorded.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from spikedeploy.atomic import atomic_write
from spikedeploy.jsonout import dumps
from spikedeploy.report_html import write_html


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


def write_report(rep: dict, out_dir: Path) -> None:
    """report.json (stable JSON, atomic) and the self-contained report.html beside it."""
    with atomic_write(out_dir / "report.json", "w") as f:
        f.write(dumps(rep))
    write_html(rep, out_dir / "report.html")
