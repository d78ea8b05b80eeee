"""Loading and saving graphs: the one place that decides what format a file is in.

`load_graph` sniffs the file (never trusting the extension alone) and hands it to the converter that
owns the format; every failure is a FileFormatError (or another SpikeDeployError) whose one-line
message names the file and says what to do. Formats:

    nir      HDF5 with a `node` group (and usually a `version` string)     -> Graph
    netx     HDF5 with a `layer` group (lava-dl `.net`)                     -> QGraph (target loihi2)
    qgraph   zip (.npz) with a `__header__` entry (spikedeploy quantize -o)  -> QGraph

Other modules may add a format with `register_format` (e.g. a quantized-graph file); detection
stays here, in registration order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikedeploy.errors import FileFormatError, SpikeDeployError
from spikedeploy.graph.ir import Graph

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"  # .npz archives: spikedeploy's quantized graph files
# HDF5 allows a user block before the superblock; the signature then sits at 512, 1024, 2048, ...
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class FileFormat:
    name: str
    sniff: Callable[[Any], bool]  # given an open h5py.File, True when the file is in this format
    load: Callable[..., Any]  # load(path); the netx loader also takes num_layers=
    describe: str  # shown in "neither ... nor ..." messages


_FORMATS: list[FileFormat] = []


def register_format(fmt: FileFormat, first: bool = False) -> None:
    """Add an HDF5-based format to `load_graph`'s detection (replacing one of the same name)."""
    _FORMATS[:] = [f for f in _FORMATS if f.name != fmt.name]
    _FORMATS.insert(0 if first else len(_FORMATS), fmt)


def check_readable(path: str | os.PathLike) -> Path:
    """The path as a Path, or a FileFormatError saying why it cannot be read (missing, a directory, a FIFO or
    device, unreadable)."""
    from spikedeploy.io.paths import check_input_file

    return check_input_file(path, "graph file (.nir, .net or .npz)")


def is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        for off in _HDF5_OFFSETS:
            f.seek(off)
            if f.read(8) == HDF5_SIGNATURE:
                return True
    return False


@contextlib.contextmanager
def open_hdf5(path: str | os.PathLike, what: str = "a NIR (.nir), lava-dl netx (.net) or quantized (.npz) file") -> Iterator[Any]:
    """Open an HDF5 file for reading; missing, non-HDF5 and corrupt files become FileFormatError."""
    import h5py

    p = check_readable(path)
    if p.stat().st_size == 0:
        raise FileFormatError(f"{p}: file is empty; expected {what}")
    if not is_hdf5(p):
        raise FileFormatError(f"{p}: not an HDF5 file (no HDF5 signature); expected {what}")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise FileFormatError(
            f"{p}: HDF5 file is truncated or corrupt ({_first_line(e)}); re-export or re-copy it"
        ) from e
    try:
        yield f
    finally:
        with contextlib.suppress(Exception):
            f.close()


# libhdf5 can loop forever on a damaged file (a flipped byte in a global heap, found by the fuzzer), in C,
# where neither SIGALRM nor SIGTERM reaches Python: so a file is read in a forked child with a deadline.
HDF5_READ_SECONDS = 60  # SPIKEDEPLOY_HDF5_SECONDS overrides it (the fuzzer uses 5)


def read_hdf5(path: str | os.PathLike, *, what: str, group: str, hint: str, read: Callable[[Any], Any]) -> Any:
    """`read(f)` on an HDF5 file that must hold `group`; a missing group or damaged data is a FileFormatError,
    and so is a read that does not finish within HDF5_READ_SECONDS."""
    path = Path(path)
    seconds = float(os.environ.get("SPIKEDEPLOY_HDF5_SECONDS") or HDF5_READ_SECONDS)
    return _with_deadline(lambda: _read_hdf5(path, what, group, hint, read), path, seconds)


def _with_deadline(fn: Callable[[], Any], path: Path, seconds: float) -> Any:
    """fn() in a forked child, its result (or exception, and its warnings) sent back through a pipe; a child
    that has not answered after `seconds` is killed and the file refused."""
    if not hasattr(os, "fork"):
        return fn()
    import pickle
    import select
    import signal
    import time
    import warnings

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    out = ("ok", fn())
                except BaseException as e:  # noqa: BLE001 - carried to the parent, which raises it
                    out = ("err", e)
            try:
                data = pickle.dumps((out, [(str(c.message), c.category) for c in caught]))
            except Exception as e:  # noqa: BLE001 - an unpicklable result is the parent's error to report
                data = pickle.dumps((("err", FileFormatError(f"{path}: cannot pass what was read back ({e})")), []))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    chunks: list[bytes] = []
    done = False
    try:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise FileFormatError(f"{path}: reading the HDF5 file did not finish in {seconds:g} s, so its internal "
                                      "structure is damaged (libhdf5 loops on it); re-export or re-copy it")
            b = os.read(r, 1 << 20)
            if not b:
                break
            chunks.append(b)
        done = True
    finally:
        os.close(r)
        if not done:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not chunks:
        raise FileFormatError(f"{path}: reading the HDF5 file ended the reading process; the file is damaged; "
                              "re-export or re-copy it")
    (status, value), caught = pickle.loads(b"".join(chunks))
    for message, category in caught:
        warnings.warn(message, category, stacklevel=4)
    if status == "err":
        raise value
    return value


def _read_hdf5(path: Path, what: str, group: str, hint: str, read: Callable[[Any], Any]) -> Any:
    with open_hdf5(path, what=what) as f:
        try:
            if group not in f:
                raise FileFormatError(f"{path}: HDF5 file has no '{group}' group, so it is not {what}; {hint}")
            return read(f)
        except SpikeDeployError:
            raise
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
            raise corrupt_error(path, e) from e


def corrupt_error(path: Path, e: BaseException) -> FileFormatError:
    """h5py raises OSError/KeyError/RuntimeError from deep inside when a truncated file is read lazily."""
    return FileFormatError(f"{path}: HDF5 file is truncated or corrupt ({_first_line(e)}); re-export or re-copy it")


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]


def sniff(path: str | os.PathLike) -> str:
    """The registered format name of `path`, or a FileFormatError saying what it is not."""
    _register_builtin()
    p = check_readable(path)
    if _is_zip(p):
        return "qgraph"
    with open_hdf5(p) as f:
        try:
            for fmt in _FORMATS:
                if fmt.sniff(f):
                    return fmt.name
            # a damaged name table yields bytes beside str
            keys = sorted(k if isinstance(k, str) else repr(k) for k in f.keys())
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            raise corrupt_error(p, e) from e
    names = " nor ".join(x.describe for x in _FORMATS)
    top = ", ".join(keys[:8]) if keys else "nothing"
    raise FileFormatError(
        f"{p}: HDF5 file is neither {names} (top level holds: {top}); "
        "export the network with nir.write or lava-dl's export_hdf5"
    )


def load_graph(path: str | os.PathLike, *, netx_layers: int | None = None):
    """Read a graph file: NIR -> Graph, netx -> QGraph (target loihi2), or a registered format.

    netx_layers: read only the first layers of a lava-dl netx file, as `netx.hdf5.Network(num_layers=)`
    does (e.g. to leave out a readout layer that netx cannot run)."""
    name = sniff(path)
    p = Path(path)
    if netx_layers is not None and name != "netx":
        raise SpikeDeployError(f"{p}: a number of netx layers ({netx_layers}) was given, but this is not a lava-dl "
                               f"netx file ({name}); leave it out")
    if name == "qgraph":
        from spikedeploy.io.qgraph_file import load_qgraph

        return load_qgraph(p)
    fmt = next(f for f in _FORMATS if f.name == name)
    try:
        return fmt.load(p) if netx_layers is None else fmt.load(p, num_layers=netx_layers)  # netx only
    except SpikeDeployError:
        raise
    except (OSError, KeyError, RuntimeError) as e:  # lazy h5py reads of damaged data
        raise corrupt_error(p, e) from e


def load_any(path: str | os.PathLike, *, netx_layers: int | None = None) -> Graph:
    """The float Graph of any graph file (a QGraph's `.graph`), e.g. for `inspect`."""
    obj = load_graph(path, netx_layers=netx_layers)
    return obj if isinstance(obj, Graph) else obj.graph


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    """Write a Graph atomically; the format follows the extension (.nir)."""
    p = Path(path)
    if p.suffix.lower() != ".nir":
        raise FileFormatError(f"{p}: cannot save a Graph as '{p.suffix or '(no extension)'}'; use a .nir path")
    from spikedeploy.converters.nir import write_nir

    write_nir(graph, p)


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == ZIP_SIGNATURE


def _is_nir(f) -> bool:
    import h5py

    return isinstance(f.get("node"), h5py.Group)


def _is_netx(f) -> bool:
    import h5py

    return isinstance(f.get("layer"), h5py.Group)


def _load_nir(p: Path):
    from spikedeploy.converters.nir import read_nir

    return read_nir(p)


def _load_netx(p: Path, num_layers: int | None = None):
    from spikedeploy.converters.netx import read_netx

    return read_netx(p, num_layers=num_layers)


def _register_builtin() -> None:
    have = {f.name for f in _FORMATS}
    if "nir" not in have:
        register_format(FileFormat("nir", _is_nir, _load_nir, "NIR (no 'node' group)"))
    if "netx" not in have:
        register_format(FileFormat("netx", _is_netx, _load_netx, "lava-dl netx (no 'layer' group)"))
