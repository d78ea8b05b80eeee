"""Run: what a simulation backend produced.

Arrays are time-major. `outputs[name]` is `[T, B, ...]` for each Output node; `counts[node]` is the
number of spikes per time step per sample, `[T, B]`, for every spiking node (and Input nodes);
`traces[node]` optionally holds full state (`v`, `u`, `s`) as `[T, B, ...]`.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Run:
    backend: str
    steps: int
    batch: int
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    # totals counted while the run was written to a file (RunWriter.mapped), so that a summary of a run
    # larger than memory does not read its counts back
    spike_totals: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def spikes_per_node(self) -> dict[str, int]:
        if self.spike_totals is not None:
            return dict(self.spike_totals)
        return {k: int(v.sum()) for k, v in self.counts.items()}


RUN_FORMAT = "spikedeploy-run"
RUN_VERSION = 1


def run_arrays(run: Run) -> dict[str, np.ndarray]:
    """A run's arrays under their member names in RUN.npz (without ".npy"), in the file's order."""
    arrays = {f"out/{k}": v for k, v in run.outputs.items()}
    arrays.update({f"counts/{k}": v for k, v in run.counts.items()})
    for node, tr in run.traces.items():
        arrays.update({f"trace/{node}/{var}": v for var, v in tr.items()})
    return arrays


def place_array(run: Run, key: str, a) -> None:
    """Put member `key` (run_arrays' names) into `run`; other members (the header) are left out."""
    kind, _, name = key.partition("/")
    if kind == "out":
        run.outputs[name] = a
    elif kind == "counts":
        run.counts[name] = a
    elif kind == "trace":
        node, _, var = name.rpartition("/")
        run.traces.setdefault(node, {})[var] = a


def save_run(run: Run, path) -> None:
    """RUN.npz: `out/<output>` [T,B,...], `counts/<node>` [T,B], `trace/<node>/<var>`, and a JSON header."""
    with writing_run(path, run.batch) as w:
        for key, a in run_arrays(run).items():
            w.array(key, a)
        w.finish(run)


@contextlib.contextmanager
def writing_run(path, batch: int) -> Iterator[RunWriter]:
    """A RunWriter on a temporary file beside `path` that replaces `path` when the block ends after
    finish(), and is removed otherwise (io.atomic): a run killed while it writes leaves no file there."""
    from spikedeploy.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_RDWR)
        try:
            w = RunWriter(fd, batch)
            yield w
            if not w.finished:
                raise RuntimeError("writing_run: the block ended without finish(run)")
            os.fsync(fd)
        finally:
            os.close(fd)
    w.path = path


class RunWriter:
    """RUN.npz written a range of samples at a time, so that a run larger than memory can be written.

    The archive's members are stored, not deflated: each is a .npy array [T, B, ...] at a fixed place in
    the file, and the samples [at, at + n) of a part land with one pwrite per time step (a range of samples
    is not contiguous in a time-major array). Deflate cost 0.31 s for the 41 MB of bench_cli_simulate's (b)
    (zlib level 1 runs at 130 MB/s here, Huffman-only at 165 MB/s), half the whole command's budget,
    and a deflated member cannot be filled out of order; the price is a larger file (44 MB instead of
    8 MB there). finish() writes the header member, each member's CRC-32 (read back from the page cache)
    and the zip directory (zip64 records, for members of 4 GiB and more). numpy.load reads the result;
    load_run reads these files and the deflated ones written before."""

    def __init__(self, fd: int, batch: int):
        self.fd, self.batch = fd, batch
        self.members: dict[str, _Member] = {}
        self.end = 0  # where the next member's local header goes
        self.spikes: dict[str, int] = {}  # counts/<node> totals, so that the summary need not read the file
        self.finished = False
        self.path = None  # set once the file is in place

    def put(self, key: str, at: int, a) -> None:
        """Samples [at, at + n) of member `key` (run_arrays' names), `a` [T, n, ...]; the member takes the
        dtype and shape of its first part, with this writer's batch."""
        a = np.asarray(a)
        m = self.members.get(key)
        if m is None:
            m = self.members[key] = self._allocate(key, (a.shape[0], self.batch, *a.shape[2:]), a.dtype)
        if a.shape[:1] + a.shape[2:] != m.shape[:1] + m.shape[2:] or at < 0 or at + a.shape[1] > self.batch:
            raise ValueError(f"{key}: part {list(a.shape)} at sample {at} does not fit {list(m.shape)}")
        a = self._count(key, np.ascontiguousarray(a, m.dtype))
        if a.shape[1] == self.batch:  # the whole member: one write
            self._write(a, m.data_at)
            return
        row = a[0, :1].nbytes  # bytes of one sample at one step
        for t in range(a.shape[0]):
            self._write(a[t], m.data_at + (t * self.batch + at) * row)

    def array(self, key: str, a) -> None:
        """Member `key` whole, whatever its shape."""
        if key in self.members:
            raise ValueError(f"{key}: already written")
        a = np.asarray(a)
        m = self.members[key] = self._allocate(key, a.shape, a.dtype)
        self._write(self._count(key, np.ascontiguousarray(a)), m.data_at)

    def _count(self, key: str, a: np.ndarray) -> np.ndarray:
        if key.startswith("counts/"):
            node = key[len("counts/"):]
            self.spikes[node] = self.spikes.get(node, 0) + int(a.sum())
        return a

    def finish(self, run: Run) -> None:
        """The header (backend, steps, batch and meta of `run`; its arrays are not read), the members' CRCs
        and the zip directory."""
        import json
        import time

        from spikedeploy.cli.jsonout import jsonable

        header = {"format": RUN_FORMAT, "version": RUN_VERSION, "backend": run.backend, "steps": run.steps,
                  "batch": run.batch, "meta": jsonable(run.meta)}
        self.array("header", np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
        y, mo, d, h, mi, s = time.localtime()[:6]
        stamp = (h << 11) | (mi << 5) | (s // 2), ((max(y, 1980) - 1980) << 9) | (mo << 5) | d  # DOS time, date
        directory = b""
        for m in self.members.values():
            crc = self._crc(m.at + m.head, m.size)
            self._write(np.frombuffer(_zip_header(_LOCAL, m.zname, crc, m.size, stamp), np.uint8), m.at)
            directory += _zip_header(_CENTRAL, m.zname, crc, m.size, stamp, m.at)
        at = self.end
        n = len(self.members)
        tail = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(directory), at)
        tail += struct.pack("<IIQI", 0x07064B50, 0, at + len(directory), 1)
        tail += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                            min(len(directory), 0xFFFFFFFF), 0xFFFFFFFF, 0)
        self._write(np.frombuffer(directory + tail, np.uint8), at)
        self.finished = True
        self.run = Run(run.backend, run.steps, run.batch, meta=run.meta)

    def mapped(self) -> Run:
        """The run just written, its arrays read-only maps of the file (nothing is read until used), and
        spikes_per_node() from the totals counted while it was written."""
        if self.path is None:
            raise RuntimeError("RunWriter.mapped: the run file is not written yet")
        run = Run(self.run.backend, self.run.steps, self.run.batch, meta=self.run.meta,
                  spike_totals=dict(self.spikes))
        for key, m in self.members.items():
            if key == "header":
                continue
            a = np.memmap(self.path, m.dtype, "r", m.data_at, m.shape) if m.nbytes else np.zeros(m.shape, m.dtype)
            place_array(run, key, a)
        return run

    def _allocate(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> _Member:
        import io

        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise ValueError(f"{key}: object arrays cannot be stored in a run file")
        npy = io.BytesIO()  # the .npy header numpy.save writes for a C-ordered array of this shape
        np.lib.format.write_array_header_1_0(npy, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                   "fortran_order": False, "shape": shape})
        zname = f"{key}.npy"
        m = _Member(zname, self.end, _LOCAL_SIZE + len(zname.encode()), shape, dtype, len(npy.getvalue()))
        self._write(np.frombuffer(npy.getvalue(), np.uint8), m.at + m.head)
        self.end = m.data_at + m.nbytes
        return m

    def _write(self, a: np.ndarray, at: int) -> None:
        view = memoryview(a).cast("B")
        while view:
            n = os.pwrite(self.fd, view, at)
            view, at = view[n:], at + n

    def _crc(self, at: int, size: int) -> int:
        import zlib

        buf = bytearray(min(size, 16 << 20))
        crc = 0
        while size:
            n = os.preadv(self.fd, [memoryview(buf)[:min(size, len(buf))]], at)
            if n <= 0:
                raise OSError(f"run file shorter than its members (at byte {at})")
            crc = zlib.crc32(memoryview(buf)[:n], crc)
            at, size = at + n, size - n
        return crc


@dataclass
class _Member:
    zname: str  # name in the archive
    at: int  # its local header's offset
    head: int  # the local header's size
    shape: tuple[int, ...]
    dtype: np.dtype
    npy_head: int  # the .npy header's size

    @property
    def data_at(self) -> int:
        return self.at + self.head + self.npy_head

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def size(self) -> int:  # the member's bytes: .npy header and data
        return self.npy_head + self.nbytes


_LOCAL, _CENTRAL = 0x04034B50, 0x02014B50
_LOCAL_SIZE = 30 + 20  # fixed part and zip64 extra field (sizes)


def _zip_header(sig: int, zname: str, crc: int, size: int, stamp: tuple[int, int], offset: int | None = None
                ) -> bytes:
    """A stored member's local header (offset None) or central directory entry, with its sizes (and its
    offset) in a zip64 extra field, so that a local header's size does not depend on the member's."""
    name = zname.encode()
    flags = 0 if zname.isascii() else 0x800  # UTF-8 name
    dos_time, dos_date = stamp
    if offset is None:
        extra = struct.pack("<HHQQ", 1, 16, size, size)
        return struct.pack("<IHHHHHIIIHH", sig, 45, flags, 0, dos_time, dos_date, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(name), len(extra)) + name + extra
    extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
    return struct.pack("<IHHHHHHIIIHHHHHII", sig, (3 << 8) | 45, 45, flags, 0, dos_time, dos_date, crc,
                       0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0o100644 << 16,
                       0xFFFFFFFF) + name + extra


def load_run(path) -> Run:
    import json
    import zipfile

    from spikedeploy.checks.companion import validate_run
    from spikedeploy.checks.npz import check_npz_members
    from spikedeploy.errors import FileFormatError
    from spikedeploy.io.paths import check_input_file

    if not os.path.exists(path):
        raise FileFormatError(f"{path}: run file not found; create one with `spikedeploy simulate ... -o RUN.npz`")
    check_input_file(path, "run file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        check_npz_members(z, path)
        header = json.loads(bytes(z["header"]).decode())
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        if header.get("format") != RUN_FORMAT:
            raise FileFormatError(f"{path}: not a spikedeploy run file (format {header.get('format')!r})")
        run = Run(header["backend"], _int(header["steps"]), _int(header["batch"]), meta=header.get("meta", {}))
        for key in z.files:
            place_array(run, key, z[key])
    except FileFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path}: not a spikedeploy run file ({type(e).__name__}: {str(e)[:200]}); "
                              "create one with `spikedeploy simulate`") from e
    validate_run(run, path)
    return run


def _int(v) -> int:
    """An integer header field (JSON gives int, or float for a hand-edited file)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")) \
            or int(v) != v:
        raise ValueError(f"header value {v!r} is not an integer")
    return int(v)


def model_layout(graph, run: Run) -> Run:
    """Outputs the chip holds in a permuted token layout, put back in the model's order (an Output node's
    meta["model_index"][i] is the chip position of the model's element i), so every backend returns what
    the model returns."""
    for name in list(run.outputs):
        node = graph.nodes.get(name)
        idx = None if node is None else node.meta.get("model_index")
        if idx is None:
            continue
        idx = np.asarray(idx)
        y = np.asarray(run.outputs[name])
        run.outputs[name] = y.reshape(*y.shape[:2], -1)[..., idx.ravel()].reshape(*y.shape[:2], *idx.shape)
    return run

