"""Simulation inputs read a chunk of samples at a time, so that memory is bounded by the chunk, not the dataset.

A source is one input array `[T, B, ...]` that lives on disk: a `.npy` file (memory-mapped), a member of an
`.npz` archive (memory-mapped when stored, unpacked once to a temporary file when compressed), an HDF5
dataset, or a directory of `.npy` shards concatenated along the batch axis (sorted by file name). Each
chunk `[T, b, ...]` is checked as it is read (finite; integers for fixed-point backends) and an error names
the file and the sample. Spikes held as float are handed on as int8 (the same integers, a quarter of the
bytes), so the backends' own checks of the chunk cost little.

    spec                      source
    X.npy                     the array in X.npy
    X.npz  or  X.npz:KEY      the archive's only array, or the member KEY
    X.h5   or  X.h5:/PATH     the file's only dataset, or the dataset at PATH (.h5, .hdf5)
    DIR/                      DIR/*.npy, in name order, concatenated along the batch axis
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spikedeploy.errors import InputError
from spikedeploy.simulate.result import Run, RunWriter, run_arrays

CHUNK_BYTES = 64 << 20  # input bytes per chunk (all inputs together): large batches keep the kernels busy
HDF5_SUFFIXES = (".h5", ".hdf5")


@dataclass
class Source:
    """One input array `[T, B, ...]` read by ranges of samples."""

    label: str  # the file (and member) that errors name
    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[int, int], np.ndarray]  # (b0, b1) -> [T, b1 - b0, ...]
    files: list[Path] = field(default_factory=list)
    keep: list = field(default_factory=list)  # open handles and temporary directories, closed by close()
    # gives back the memory the chunks read so far held (a mapped file's pages); called once each is copied
    release: Callable[[], None] = field(default=lambda: None)
    label_of: Callable[[int], str] | None = None  # the file that holds a sample, where there are several

    @property
    def batch(self) -> int:
        return self.shape[1]

    def fingerprint(self) -> str:
        """What identifies the data: shape, dtype, and the files' sizes and sampled contents (a full hash
        of a dataset larger than memory would cost as much as the run)."""
        import hashlib

        h = hashlib.sha256(f"{self.shape}|{self.dtype.str}".encode())
        for p in self.files:
            h.update(_sampled_digest(p))
        return h.hexdigest()[:32]

    def close(self) -> None:
        for k in self.keep:
            try:
                (k.cleanup if hasattr(k, "cleanup") else k.close)()
            except BufferError:  # a mapping that chunks still view is unmapped when the last one goes
                pass
        self.keep.clear()


def open_source(spec: str) -> Source:
    """The source a command-line spec names (see the module docstring), with its shape and dtype checked."""
    path, key = _split_key(spec)
    p = Path(path)
    if p.is_dir():
        src = _dir_source(p)
    elif not p.exists():
        raise InputError(f"{spec}: no such file or directory; give a .npy, .npz, .h5 file or a directory of .npy shards")
    elif p.suffix.lower() == ".npz":
        src = _npz_source(p, key)
    elif p.suffix.lower() in HDF5_SUFFIXES:
        src = _h5_source(p, key)
    else:
        if key is not None:
            raise InputError(f"{spec}: only .npz and HDF5 files hold named arrays; give the .npy file alone")
        src = _npy_source(p)
    _check_layout(src)
    return src


def spec_file(spec: str) -> str | None:
    """The regular file a spec reads (None for a directory of shards), for the checks every command makes on
    its input paths."""
    path, _ = _split_key(spec)
    return None if os.path.isdir(path) else path


def _split_key(spec: str) -> tuple[str, str | None]:
    """`X.npz:KEY` / `X.h5:/PATH` -> (file, key); a colon that is part of an existing path is kept."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, key = spec.rsplit(":", 1)
    return path, key or None


def _npy_source(p: Path) -> Source:
    from spikedeploy.checks.sim_inputs import check_array_file

    a = check_array_file(lambda f, allow_pickle: np.load(f, mmap_mode="r", allow_pickle=allow_pickle), p, "input")
    if not isinstance(a, np.memmap) or not a.flags.c_contiguous:  # empty, or Fortran order: slice the mapping
        return Source(str(p), tuple(a.shape), a.dtype, lambda b0, b1: a[:, b0:b1], [p])
    return _file_source(str(p), p, a.offset, tuple(a.shape), a.dtype)


def _file_source(label: str, p: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> Source:
    """A C-ordered array stored at `offset` in `p`. Float chunks are views of a memory map, which the check
    converts to int8 in one pass without a copy; after each chunk, release() unmaps its pages (they stay in
    the page cache), for a mapping keeps every page it touched resident, counted in the process's memory, so
    a dataset larger than memory could not run. Other dtypes, which the backends get as a copy anyway, are
    read into that copy with one pread per time step: the kernel maps whole page-cache folios (up to a few
    MB) around each faulting page of a file read from disk, which made a mapped uint8 chunk of 64 MB occupy
    up to 250 MB (bench_cli_simulate --big)."""
    import mmap

    with open(p, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    a = np.ndarray(shape, dtype, buffer=mm, offset=offset)
    src = Source(label, shape, dtype, lambda b0, b1: a[:, b0:b1], [p], [mm])
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        src.release = lambda: mm.madvise(mmap.MADV_DONTNEED)
    if dtype.kind != "f" and hasattr(os, "preadv"):
        f = open(p, "rb", buffering=0)  # noqa: SIM115 - closed by Source.close
        src.keep.append(f)
        sample = int(np.prod(shape[2:], dtype=np.int64)) * dtype.itemsize  # bytes of one sample at one step

        def read(b0: int, b1: int) -> np.ndarray:
            out = np.empty((shape[0], b1 - b0, *shape[2:]), dtype)
            for t in range(shape[0]):
                row = memoryview(out[t].reshape(-1)).cast("B")
                at = offset + (t * shape[1] + b0) * sample
                while row:
                    n = os.preadv(f.fileno(), [row], at)
                    if n <= 0:
                        raise InputError(f"{label}: the file ended before sample {b1 - 1} of step {t}; it is "
                                         "truncated (or changed while read); write it again")
                    row, at = row[n:], at + n
            return out

        src.read = read
    return src


def _dir_source(d: Path) -> Source:
    files = sorted(f for f in d.iterdir() if f.suffix == ".npy" and f.is_file())
    if not files:
        raise InputError(f"{d}: directory holds no .npy shards; put one array [T, b, ...] per file there")
    parts = [_npy_source(f) for f in files]
    first = parts[0]
    for s in parts[1:]:
        if s.dtype != first.dtype or len(s.shape) != len(first.shape) or s.shape[0] != first.shape[0] \
                or s.shape[2:] != first.shape[2:]:
            raise InputError(f"{s.label}: shard is {s.dtype} {list(s.shape)}, but {first.label} is {first.dtype} "
                             f"{list(first.shape)}; every shard must have the same dtype, T and sample shape")
    starts = np.cumsum([0] + [s.batch for s in parts])
    shape = (first.shape[0], int(starts[-1]), *first.shape[2:])

    def read(b0: int, b1: int) -> np.ndarray:
        i0 = int(np.searchsorted(starts, b0, side="right")) - 1
        pieces = []
        i = i0
        while i < len(parts) and starts[i] < b1:
            lo, hi = max(b0, starts[i]) - starts[i], min(b1, starts[i + 1]) - starts[i]
            if hi > lo:
                pieces.append(parts[i].read(int(lo), int(hi)))
            i += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)

    src = Source(str(d), shape, first.dtype, read, files, [p for p in parts])
    src.release = lambda: [p.release() for p in parts]
    src.label_of = lambda b: parts[int(np.searchsorted(starts, b, side="right")) - 1].label
    return src


def _npz_source(p: Path, key: str | None) -> Source:
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as e:
        raise InputError(f"{p}: not a readable .npz archive ({e}); write it with numpy.savez") from None
    members = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    if key is None:
        if len(members) != 1:
            zf.close()
            raise InputError(f"{p}: the archive holds {len(members)} arrays {members[:8]}; name one as {p}:KEY")
        key = members[0]
    if key not in members:
        zf.close()
        raise InputError(f"{p}:{key}: no array '{key}' in the archive; it holds {members[:8]}")
    info = zf.getinfo(key + ".npy")
    label = f"{p}:{key}"
    tmp = None
    if info.compress_type == zipfile.ZIP_STORED:
        with open(p, "rb") as f:  # the member's bytes start after its local header
            f.seek(info.header_offset)
            head = f.read(30)
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            at = info.header_offset + 30 + name_len + extra_len
        file, offset = p, at
    else:  # deflated members cannot be read at an offset: unpack once to disk, not to memory
        tmp = tempfile.TemporaryDirectory(prefix="spikedeploy-npz-")
        file, offset = Path(tmp.name) / "member.npy", 0
        with zf.open(info) as src, open(file, "wb") as dst:
            shutil.copyfileobj(src, dst, 16 << 20)
    zf.close()
    try:
        with open(file, "rb") as f:
            f.seek(offset)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            data_at = f.tell()
        if dtype.hasobject or fortran:
            raise ValueError("object or Fortran-ordered arrays cannot be streamed")
    except (ValueError, OSError, EOFError) as e:
        if tmp is not None:
            tmp.cleanup()
        raise InputError(f"{label}: not a readable array ({e}); write it with numpy.savez") from None
    src = _file_source(label, Path(file), data_at, tuple(shape), dtype)
    src.files = [p]
    if tmp is not None:
        src.keep.append(tmp)
    return src


def _h5_source(p: Path, key: str | None) -> Source:
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({e})") from None
    if key is None:
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        if len(names) != 1:
            f.close()
            raise InputError(f"{p}: the file holds {len(names)} datasets {names[:8]}; name one as {p}:/PATH")
        key = names[0]
    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset):
        f.close()
        raise InputError(f"{p}:{key}: no dataset '{key}' in the file")
    return Source(f"{p}:{key}", tuple(ds.shape), ds.dtype, lambda b0, b1: ds[:, b0:b1], [p], [f])


def _check_layout(src: Source) -> None:
    if src.dtype.kind not in "biuf":
        src.close()
        raise InputError(f"{src.label}: dtype {src.dtype} is not a real number type; give bool, int or float "
                         "spikes or currents")
    if len(src.shape) < 2:
        src.close()
        raise InputError(f"{src.label}: shape {list(src.shape)} has {len(src.shape)} dimension(s); expected "
                         "[T, B, ...]: time steps, then samples, then the input's shape")
    if src.shape[0] == 0 or src.shape[1] == 0:
        src.close()
        raise InputError(f"{src.label}: shape {list(src.shape)} has no time steps or no samples; "
                         "expected [T, B, ...] with T, B >= 1")


def _sampled_digest(p: Path, blocks: int = 32, size: int = 1 << 16) -> bytes:
    import hashlib

    n = p.stat().st_size
    h = hashlib.sha256(str(n).encode())
    with open(p, "rb") as f:
        for i in range(blocks):
            f.seek(n * i // blocks)
            h.update(f.read(size))
        f.seek(max(0, n - size))
        h.update(f.read(size))
    return h.digest()


# ---- checking a chunk --------------------------------------------------------------------------------

BLOCK = 1 << 16  # values checked at a time: the conversion and the comparison stay in the cache


def check_chunk(src: Source, x: np.ndarray, b0: int, *, integers: bool) -> np.ndarray:
    """`x` (samples b0.. of `src`) checked, as the array the backend gets: floats that hold 0/1 spikes (or
    other integers in [-128, 127]) become int8, which holds the same values. integers: fixed-point backends
    take integers only."""
    if x.dtype.kind != "f":
        return x
    small = _as_int8(x)  # one pass; NaN, inf, fractions and large values all fail the round trip
    if small is not None:
        return small
    finite = np.isfinite(x)
    if not finite.all():
        _refuse(src, ~finite, b0, "holds NaN or infinite values", "inputs must be finite")
    if integers and not np.all(np.trunc(x) == x):
        _refuse(src, np.trunc(x) != x, b0, "holds values that are not integers",
                "fixed-point backends take spikes or integer payloads; scale and round them first")
    return x


def _as_int8(x: np.ndarray) -> np.ndarray | None:
    """x as int8 when every value is an integer in [-128, 127], else None: in one pass of the compiled kernel
    (kernels.c as_int8_*, the time steps split over the emulator's threads) where it is built and x's steps
    are contiguous rows, else with numpy a time step at a time, in blocks (a step of a chunk is contiguous
    in the file)."""
    from spikedeploy.targets.backends import as_int8_kernel

    out = np.empty(x.shape, np.int8)
    converted = as_int8_kernel()(x, out)
    if converted is not None:
        return out if converted else None
    same = np.empty(BLOCK, bool)
    with np.errstate(invalid="ignore", over="ignore"):
        for t in range(x.shape[0]):
            row, orow = np.ascontiguousarray(x[t]).reshape(-1), out[t].reshape(-1)
            for i in range(0, row.size, BLOCK):
                a, o = row[i:i + BLOCK], orow[i:i + BLOCK]
                np.copyto(o, a, casting="unsafe")
                eq = same[: a.size]
                np.equal(o, a, out=eq)
                if not eq.all():
                    return None
    return out


def _refuse(src: Source, bad: np.ndarray, b0: int, what: str, fix: str) -> None:
    axes = tuple(i for i in range(bad.ndim) if i != 1)
    per_sample = bad.any(axis=axes)
    j = int(np.argmax(per_sample))
    t = int(np.argmax(bad[:, j].reshape(bad.shape[0], -1).any(axis=1)))
    sample = b0 + j
    label = src.label_of(sample) if src.label_of else src.label
    raise InputError(f"{label}: sample {sample} (batch index), step {t} {what}; {fix}")


# ---- running a model chunk by chunk ------------------------------------------------------------------

def open_sources(specs: Mapping[str, str]) -> dict[str, Source]:
    """{input name: spec} -> {input name: Source}, all closed again if one fails."""
    out: dict[str, Source] = {}
    try:
        for name, spec in specs.items():
            out[name] = open_source(spec)
    except BaseException:
        for s in out.values():
            s.close()
        raise
    return out


def batch_of(sources: Mapping[str, Source]) -> int:
    bs = {s.batch for s in sources.values()}
    if len(bs) > 1:
        raise InputError("inputs disagree on the batch size: " +
                         ", ".join(f"{s.label} has {s.batch}" for s in sources.values()))
    return bs.pop() if bs else 0


def chunk_samples(sources: Mapping[str, Source], chunk_bytes: int = CHUNK_BYTES) -> int:
    per_sample = sum(int(np.prod(s.shape[:1] + s.shape[2:])) * s.dtype.itemsize for s in sources.values())
    return max(1, chunk_bytes // max(per_sample, 1))


def iter_chunks(sources: Mapping[str, Source], b0: int, b1: int, size: int, *, integers: bool
                ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """(c0, c1, {name: checked [T, c1 - c0, ...]}) over samples [b0, b1)."""
    for c0 in range(b0, b1, size):
        c1 = min(b1, c0 + size)
        # a chunk the check did not convert is still a view of a read-only mapping: the backends get a copy
        xs = {n: np.require(check_chunk(s, np.asarray(s.read(c0, c1)), c0, integers=integers), requirements="W")
              for n, s in sources.items()}
        for s in sources.values():
            s.release()
        yield c0, c1, xs


def simulate_chunks(model, sources: Mapping[str, Source], *, b0: int = 0, b1: int | None = None,
                    backend: str = "emulator", target: str | None = None, steps: int | None = None, probes=(),
                    chunk: int | None = None, progress: Callable[[int, int], None] | None = None,
                    out: str | os.PathLike | None = None, notes: list[str] | None = None) -> Run:
    """The Run of samples [b0, b1) of `sources`, simulated a chunk of samples at a time and assembled in place:
    the same Run as one call on the whole arrays (samples are independent). progress(samples done, samples)
    after each chunk. out: the run file, written a chunk at a time as the chunks finish (result.RunWriter),
    so that memory is bounded by the chunk; the Run returned then maps that file. notes: put before the
    run's own in meta["notes"]."""
    from spikedeploy.simulate.dispatch import as_fixed_point
    from spikedeploy.simulate.result import writing_run

    b1 = batch_of(sources) if b1 is None else b1
    chunk = chunk or chunk_samples(sources)
    model, note = as_fixed_point(model, target, backend)
    run_chunk = _chunk_runner(model, backend=backend, target=target, steps=steps, probes=tuple(probes))
    with writing_run(out, b1 - b0) if out is not None else contextlib.nullcontext() as writer:
        acc = RunAssembler(b1 - b0, into=writer)
        for c0, c1, xs in iter_chunks(sources, b0, b1, chunk, integers=backend != "float"):
            acc.add(c0 - b0, run_chunk(xs))
            if progress:
                progress(c1 - b0, b1 - b0)
        run = acc.run()
        if note:
            run.meta.setdefault("notes", []).insert(0, note)
        if notes is not None:
            run.meta["notes"] = [*notes, *run.meta.get("notes", [])]
        if writer is None:
            return run
        writer.finish(run)
    return writer.mapped()


def _chunk_runner(model, *, backend: str, target: str | None, steps: int | None, probes: tuple[str, ...]):
    """simulate() for one chunk. A backend that can compile a QGraph (the emulator: it prepares every weight
    matrix, 60 ms for bench_engine's network (b)) compiles it once, after simulate()'s checks of the target,
    for all chunks of 0/1 spikes; a chunk of graded values goes through simulate(), which compiles for
    their range."""
    from spikedeploy.graph.qgraph import QGraph
    from spikedeploy.simulate.dispatch import simulate

    def generic(xs):
        return simulate(model, xs, backend=backend, target=target, steps=steps, probes=probes)

    from spikedeploy.targets.backends import FLOAT, get_backend

    if backend == FLOAT or not isinstance(model, QGraph):
        return generic
    from spikedeploy.simulate.hybrid import has_host_part

    be = get_backend(backend)
    compile_ = be.load_compile()
    if compile_ is None or has_host_part(model.graph):
        return generic
    from spikedeploy.simulate.dispatch import _check_target
    from spikedeploy.simulate.result import model_layout

    programs: list = []

    def fast(xs):
        if not all(_spikes(x) for x in xs.values()):
            return generic(xs)
        if not programs:
            _check_target(model, target, backend)
            programs.append(compile_(model, probes=probes))
        return model_layout(model.graph, be.load()(programs[0], xs, steps=steps, probes=probes))

    return fast


def _spikes(x: np.ndarray) -> bool:
    """0/1 values only (a chunk is already checked to hold integers)."""
    return x.dtype == bool or x.size == 0 or (x.min() >= 0 and x.max() <= 1)


class RunAssembler:
    """Runs of consecutive sample ranges written into one Run of `batch` samples, allocated at the first; with
    `into`, their arrays go to that RunWriter's file instead, and run() holds the header and meta only."""

    SUMMED = ("u_wraps", "v_saturations")  # event counters: the whole run's are the sum of its parts'
    PER_CALL = ("threads", "chunk_steps", "shard")  # how one call was executed, not what it computed

    def __init__(self, batch: int, into: RunWriter | None = None):
        self.batch = batch
        self.into = into
        self.out: Run | None = None

    def add(self, at: int, part: Run) -> None:
        if self.out is None:
            meta = {k: v for k, v in part.meta.items() if k not in self.PER_CALL}
            self.out = Run(part.backend, part.steps, self.batch, meta=meta)
            for k in self.SUMMED:
                if isinstance(meta.get(k), dict):
                    meta[k] = {n: 0 for n in meta[k]}
        o = self.out
        n = part.batch
        if self.into is not None:
            for key, v in run_arrays(part).items():
                self.into.put(key, at, v)
        else:
            for dst, src in ((o.outputs, part.outputs), (o.counts, part.counts),
                             *((o.traces.setdefault(node, {}), tr) for node, tr in part.traces.items())):
                for k, v in src.items():
                    v = np.asarray(v)
                    if k not in dst:
                        dst[k] = np.zeros((v.shape[0], self.batch, *v.shape[2:]), v.dtype)
                    dst[k][:, at:at + n] = v
        for k in self.SUMMED:
            if isinstance(part.meta.get(k), dict):
                for node, c in part.meta[k].items():
                    o.meta[k][node] = o.meta[k].get(node, 0) + int(c)

    def run(self) -> Run:
        if self.out is None:
            raise InputError("no samples to simulate")
        return self.out


def simulate_files(model, specs: Mapping[str, str | os.PathLike], **kw) -> Run:
    """simulate_chunks on the sources `specs` name ({input name: spec}); the files are closed afterwards."""
    sources = open_sources({n: os.fspath(s) for n, s in specs.items()})
    try:
        return simulate_chunks(model, sources, **kw)
    finally:
        for s in sources.values():
            s.close()
