"""Atomic file writes: readers never see a half-written file, and a failed write leaves no litter.

The data goes to a temporary file in the destination's directory (same file system, so the final
`os.replace` is atomic), is flushed and fsynced, then renamed over the destination.

The temporary file is `.NAME.pid<PID>.<random>.tmp`. It is removed when the write fails or is interrupted
(Ctrl-C; SIGTERM too under the CLI, which turns it into an exception). A `kill -9` cannot be caught, so each
write first sweeps the stale temporary files of the same target: those older than this process whose
writer process no longer exists (or whose name carries no process id).
A destination that exists but is not a regular file (a directory, /dev/null, a FIFO) is refused, since
the rename would replace the device node or pipe with a regular file; a full disk or another write error
becomes an OutputPathError with one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from spikedeploy.errors import OutputPathError


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, rounded down to the kernel's clock tick), or None
    where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.time() - (time.monotonic() - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


# when this process started: temporary files older than this cannot be ours
_STARTED = min(time.time(), _process_start(os.getpid()) or time.time())
_TICK = 0.02  # two clock ticks (10 ms each): the rounding of a process's start time


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
    if str(path).strip() == "":
        raise OutputPathError("empty output path; give a file name")
    directory = path.parent if str(path.parent) else Path(".")
    _check_destination(path)
    sweep_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        _check_destination(path)  # it may have become a special file while we wrote
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            raise _write_error(path, e) from None
        raise


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM,
                 errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def _write_error(path: Path, e: OSError) -> OutputPathError:
    why = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system"}.get(e.errno, e.strerror or str(e))
    return OutputPathError(f"{path}: cannot write the output ({why}); nothing was written there, free space or "
                           "choose another path")


def _check_destination(path: Path) -> None:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise _write_error(path, e) from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{path}: is a directory; give a file name inside it")
    if not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{path}: is not a regular file (a device, pipe or socket); the output replaces its "
                              "target by a rename, so write to a regular file instead")


_TMP_PID = re.compile(r"\.pid(\d+)\.[^.]+\.tmp$")


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of `path` left by writers that were killed (kill -9): those named
    `.NAME.*.tmp` whose writer process is gone, or, where the name gives no writer, last modified before
    this process started.
    Returns what was removed."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    removed = []
    try:
        candidates = list(directory.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        try:
            st = tmp.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        m = _TMP_PID.search(tmp.name)
        # a named writer is judged by its process alone; an unnamed temporary only when it is older than us
        # (our start time is rounded down to a clock tick, so a writer killed just before we started would
        # otherwise look newer)
        if (_alive(int(m.group(1)), st.st_mtime) if m else st.st_mtime >= _STARTED):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _alive(pid: int, written: float) -> bool:
    """Whether the process that last wrote a temporary at time `written` may still be running: process `pid`
    exists and started before that write (a busy machine reuses the PID of a killed writer within minutes)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    started = _process_start(pid)
    return started is None or started <= written + _TICK
