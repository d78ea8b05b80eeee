"""What every partitioning benchmark ends with: its results written (atomically) and printed as a markdown table."""

from __future__ import annotations

import json
from pathlib import Path


def publish(out_path: str, out: dict, rows: list[dict], cols: list[str]) -> int:
    """Write `out` as JSON to out_path, print `rows` as a table; exit status 0 when every row passes."""
    from spikedeploy.io.atomic import atomic_write

    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0 if all(r["pass"] for r in rows) else 1
