"""Shared fixtures. Note: lava-dl installs a top-level `tests` package into site-packages; this
directory has no __init__.py and pytest runs with --import-mode=importlib, so it is never shadowed.
Shared test helpers live in tests/helpers/ (on sys.path through pytest's `pythonpath`)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    d = SHARED / "fixtures"
    if not d.exists():
        pytest.skip(f"shared fixtures not found at {d}")
    return d


@pytest.fixture(scope="session")
def lavadl_netx_dir() -> Path:
    from lavadl_assets import netx_test_dir

    return netx_test_dir()


@pytest.fixture(scope="session")
def lava():
    """Lava's simulate function, or a skip naming why Lava cannot run here."""
    from spikedeploy.errors import BackendError

    try:
        from spikedeploy.targets.lava.backend import simulate_lava
        from spikedeploy.targets.lava.compat import lava_ready

        lava_ready()
    except BackendError as e:
        pytest.skip(str(e))
    return simulate_lava
