"""Checks on the files a command reads and writes, made before any work is done.

Inputs must be regular files: opening a FIFO blocks until a writer appears, and a device can yield bytes
forever. Outputs must not be one of the command's inputs (the atomic rename would replace the input
before anything reads it again), nor a directory or a special file (the rename would swap a device node
for a regular file), and their directory must exist and be writable, so a long run does not end in a
failed write.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from spikedeploy.errors import FileFormatError, OutputPathError


def check_input_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """`path` as a Path when it is an existing, readable regular file (symlinks followed)."""
    p = Path(path)
    if str(path) == "":
        raise FileFormatError(f"empty path given for the {what}; give a file name")
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FileFormatError(f"{p}: no such file; check the path") from None
    except OSError as e:
        raise FileFormatError(f"{p}: cannot read the {what} ({e.strerror or e}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileFormatError(f"{p}: is a directory, not a file; give the {what} itself")
    if not stat.S_ISREG(st.st_mode):
        raise FileFormatError(f"{p}: is a {_kind(st.st_mode)}, not a regular file; reading it could block or never "
                              "end, so save it as a regular file first")
    if not os.access(p, os.R_OK):
        raise FileFormatError(f"{p}: permission denied; make the {what} readable")
    return p


def check_output_path(path: str | os.PathLike, *, option: str, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """`path` as a Path when a command may write it: not empty, not one of `inputs` (also through a hard or
    symbolic link), not a directory or special file, in an existing writable directory."""
    if str(path).strip() == "":
        raise OutputPathError(f"{option}: empty output path; give a file name")
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputPathError(f"{option} {p}: cannot use this path ({e.strerror or e}); choose another") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{option} {p}: is a directory; give a file name inside it")
        if not stat.S_ISREG(st.st_mode):
            raise OutputPathError(f"{option} {p}: is a {_kind(st.st_mode)}, not a regular file; spikedeploy replaces "
                                  "its output by renaming a new file over it, so write to a regular file instead")
        for src in inputs:
            if src is None or str(src) == "":
                continue
            try:
                if os.path.samefile(src, p):
                    raise OutputPathError(f"{option} {p}: is the input file {src} (same file); writing it would destroy "
                                          "the input, so choose another output path")
            except OSError:
                continue
    elif p.is_symlink():  # a dangling link: the rename would replace the link, not write where it points
        raise OutputPathError(f"{option} {p}: is a symbolic link to a missing file; give a plain path")
    d = p.parent if str(p.parent) else Path(".")
    if not d.is_dir():
        raise OutputPathError(f"{option} {p}: directory {d} does not exist; create it first")
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {p}: directory {d} is not writable; choose another directory")
    return p


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def spec_path(spec: str) -> str:
    """The file of a `[NAME=]X.npy` command-line spec."""
    return spec.split("=", 1)[1] if "=" in spec else spec


def check_command_paths(*, outputs: dict[str, str | None], inputs: Iterable[str | None] = (),
                        input_specs: Iterable[str] = ()) -> None:
    """Before a command does any work: every input given is a readable regular file, and every output may be
    written (see check_output_path) and differs from the command's other outputs."""
    files = [p for p in inputs if p is not None] + [spec_path(s) for s in input_specs]
    for p in files:
        check_input_file(p)
    seen: dict[str, str] = {}
    for option, out in outputs.items():
        if out is None:
            continue
        check_output_path(out, option=option, inputs=files)
        key = os.path.realpath(out)
        if key in seen:
            raise OutputPathError(f"{option} {out}: is also the path given to {seen[key]}; give each output its own file")
        seen[key] = option
