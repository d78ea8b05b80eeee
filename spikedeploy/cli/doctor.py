"""Environment check: versions, and each simulation backend's own checks (Lava runs a network, netx imports,
the emulator's kernels are built)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

PACKAGES = ("spikedeploy", "torch", "numpy", "nir", "nirtorch", "snntorch", "lava-nc", "lava-dl", "h5py", "onnxruntime")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def doctor() -> dict[str, Any]:
    """Versions, and each simulation backend's own checks (targets/backends.py: Backend.checks), by name."""
    from spikedeploy.targets.backends import backend_checks

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in PACKAGES},
        **backend_checks(),
    }
