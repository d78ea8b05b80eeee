"""A page as the real browser draws it: headless Chromium's screenshot, read back as an RGB array."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def screenshot(page: Path, tmp_path: Path, size: str = "1200,2000"):
    """Chromium's rendering of `page` ([H, W, 3] floats in 0..1); skips without Chromium, fails in CI."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (the Makefile installs it)")
        pytest.skip("chromium not installed (apt-get install chromium; `make test` installs it)")
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           f"--screenshot={shot}", f"--window-size={size}", Path(page).resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    import matplotlib.image as mpimg

    return mpimg.imread(shot)[..., :3]
