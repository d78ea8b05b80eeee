"""Where the lava-dl 0.6.0 wheel put its netx test networks and recorded outputs."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from spikedeploy.errors import BackendError


def netx_test_dir() -> Path:
    """`tests/lava/lib/dl/netx/` inside the installed lava-dl distribution."""
    try:
        dist = metadata.distribution("lava-dl")
    except metadata.PackageNotFoundError as e:
        raise BackendError("lava-dl is not installed; run `make venv` (see README: Adding Lava)") from e
    p = Path(dist.locate_file("tests/lava/lib/dl/netx"))
    if not p.is_dir():
        raise BackendError(f"lava-dl is installed but its netx test files are missing at {p}")
    return p
