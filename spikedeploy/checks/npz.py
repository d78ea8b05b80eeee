"""Checks on an .npz archive's members before any is read: their declared size must be sane."""

from __future__ import annotations

import numpy as np

from spikedeploy.checks.limits import check_stored_array


def check_npz_members(z: np.lib.npyio.NpzFile, path) -> None:
    """Refuse an archive whose members (compressed or not) would unpack to more than the array limit."""
    for info in z.zip.infolist():
        check_stored_array(path, info.filename, (info.file_size,), 1)
