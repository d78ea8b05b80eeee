"""Atomic file writes: readers never see a half-written file, and a failed write leaves no litter.

The data goes to a temporary file in the destination's directory (same file system, so the final
`os.replace` is atomic), is flushed and fsynced, then renamed over the destination.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask_mode() -> int:
    # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kw: Any) -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces `path`, on error it is removed.

    `mode` must be a write mode ("wb", "w"); text mode takes `encoding` etc. through `open_kw`.
    """
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_write needs a plain write mode ('w' or 'wb'), got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **open_kw) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` for libraries that insist on opening the file themselves
    (h5py, nir.write); it replaces `path` when the block ends without error, and is removed otherwise."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
