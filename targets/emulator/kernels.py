"""The emulator's compiled kernels (kernels.c), loaded through ctypes, and the threads that run them.

`available()` says whether the library was built (setup.py builds it at install time when a C compiler
is there). The stages call `spike_rows` and `lif_scan` when it is, and their numpy code otherwise; both
give the same integers, which tests/test_emulator_kernels.py checks. SPIKEDEPLOY_KERNELS=numpy forces
the numpy path (for comparisons and debugging); SPIKEDEPLOY_THREADS=N caps the threads the kernels use.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np

_P = ctypes.c_void_p
_L = ctypes.c_long
_I = ctypes.c_int
MIN_ROWS_PER_THREAD = 64  # below this a second thread costs more than it saves


@cache
def _lib():
    if os.environ.get("SPIKEDEPLOY_KERNELS", "").lower() == "numpy":
        return None
    spec = importlib.util.find_spec(f"{__package__}._kernels")
    if spec is None or not spec.origin:
        return None
    return load_library(spec.origin)


def load_library(path) -> ctypes.CDLL | None:
    """A build of kernels.c with its functions' signatures declared (None when it cannot be loaded)."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    for fn in (lib.spike_rows_i16, lib.spike_rows_i8):
        fn.argtypes = [_P, _L, _P, _L, _L, _L, ctypes.c_float, _P, _L, _L]
        fn.restype = _I
    lib.spike_rows_p8.argtypes = [_P, _L, _P, _L, _L, ctypes.c_float, _P, _L, _L]
    lib.spike_rows_p8.restype = _I
    lib.count_rows.argtypes = [_P, _L, _P, _L, _L]
    lib.count_rows.restype = None
    lib.lif_scan.argtypes = [_L, _L, _L, _L, _L, _P, _I, _P, _P, _P, _P, _P, _P, ctypes.c_int32, _I, _I, _I,
                             _L, _L, _L, _P, _P, _P, _P, _P]
    lib.lif_scan.restype = None
    for fn in (lib.as_int8_f32, lib.as_int8_f64):
        fn.argtypes = [_P, _L, _L, _P, _L, _L]
        fn.restype = _I
    return lib


def available() -> bool:
    return _lib() is not None


def describe() -> str:
    return "compiled (kernels.c)" if available() else "numpy only (compiled kernels not built)"


def checks() -> dict[str, dict]:
    """The emulator's check for `spikedeploy doctor`: not required (the numpy path gives the same integers)."""
    ok = available()
    return {"emulator_kernels": {"ok": ok, "path": describe(), "label": "emulator kernels", "required": False,
                                 "summary": describe() if ok else
                                 f"{describe()}: correct but slower; install with a C compiler to build them"}}


@cache
def _threads() -> int:
    """SPIKEDEPLOY_THREADS, else every CPU this process may run on."""
    if os.environ.get("SPIKEDEPLOY_THREADS", "").isdigit():
        return max(1, int(os.environ["SPIKEDEPLOY_THREADS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_threads(), thread_name_prefix="spikedeploy-emulator")


_local = threading.local()  # .serial: this thread's kernel calls run alone (it is one of parallel_parts)


def split_range(n: int, min_part: int) -> list[tuple[int, int]]:
    """range(n) as one contiguous share per thread, each at least min_part long (one share when the
    calling thread is already one of parallel_parts')."""
    parts = 1 if getattr(_local, "serial", False) else max(1, min(_threads(), n // max(1, min_part)))
    edges = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def parallel_parts(fn, parts: list[tuple[int, int]]) -> list:
    """fn(i, b0, b1) for each share i from split_range, in parallel; the kernels those calls make run alone
    in their thread."""

    def serial(i, b0, b1):
        _local.serial = True
        try:
            return fn(i, b0, b1)
        finally:
            _local.serial = False

    return _run_parts(serial, [(i, b0, b1) for i, (b0, b1) in enumerate(parts)])


def _run_parts(fn, parts) -> list:
    """ctypes releases the GIL during each call, so the parts run in parallel."""
    if len(parts) == 1:
        return [fn(*parts[0])]
    return list(_pool().map(lambda p: fn(*p), parts))


def as_int8(x: np.ndarray, out: np.ndarray) -> bool | None:
    """x [T, ...] (float32 or float64) into out (int8, C order, x's shape) when every value is an integer in
    [-128, 127]: True, or False as soon as one is not (out then holds garbage); the time steps split over the
    threads. None (nothing done) without the compiled kernels, or when a step of x is not contiguous."""
    lib = _lib()
    fn = {np.dtype(np.float32): getattr(lib, "as_int8_f32", None),
          np.dtype(np.float64): getattr(lib, "as_int8_f64", None)}.get(x.dtype)
    if fn is None or x.ndim < 2 or x.size == 0 or not x[0].flags.c_contiguous or x.strides[0] % x.itemsize \
            or out.shape != x.shape or out.dtype != np.int8 or not out.flags.c_contiguous:
        return None
    n, ld = x[0].size, x.strides[0] // x.itemsize
    bad = _run_parts(lambda r0, r1: fn(x.ctypes.data, n, ld, out.ctypes.data, r0, r1),
                     split_range(x.shape[0], 1))
    return not any(bad)


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty, but starting on a 64-byte boundary: the kernels' 64-byte loads and stores then stay within
    one cache line each (misaligned int8 weights made a layer of the engine benchmark 25% slower)."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    off = -raw.ctypes.data % 64
    return raw[off:off + nbytes].view(dt).reshape(shape)


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


TILE_COLUMNS = 64  # kernels.c TMIN: weight rows are padded to a multiple of it
TILE = 128  # kernels.c TILE: the weights are stored in column tiles this wide (the last may be TILE_COLUMNS)


def spike_weights(w_out_in: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(out, in) integer weights as spike_rows reads them: an [in, ldw] array (out padded to TILE_COLUMNS)
    whose memory holds the column tiles of kernels.c one after the other, max |w|, scale.

    The weights are first divided by their common power of two (scale). Lava's 8-bit mixed-sign weights
    are all even, and halved they lie in [-64, 63]: weights in that range are stored as uint8 w + 64 with the
    columns of each 64-byte chunk interleaved, for kernels.c's spike_rows_p8, which adds two inputs' weights
    per byte. Other weights are int8 when they fit it, int16 otherwise.
    """
    n_out, n_in = w_out_in.shape
    ldw = -(-max(n_out, 1) // TILE_COLUMNS) * TILE_COLUMNS
    wi = w_out_in.astype(np.int32)  # the stage only calls this for |w| < 2**15
    low = int(np.bitwise_or.reduce(wi, axis=None)) if wi.size else 0
    # trailing zeros common to every weight: those of the OR of all (two's complement keeps them)
    z = (low & -low).bit_length() - 1 if low else 0
    if z:
        wi >>= z
    lo, hi = (int(wi.min()), int(wi.max())) if wi.size else (0, 0)
    padded = np.zeros((n_in, ldw), np.int32)
    padded[:, :n_out] = wi.T
    if lo >= -64 and hi <= 63:
        # byte 2p of each 64-column chunk holds column p, byte 2p + 1 column 32 + p
        chunks = (n_in, ldw // TILE_COLUMNS, 2, TILE_COLUMNS // 2)
        padded = (padded + 64).reshape(chunks).swapaxes(2, 3).reshape(n_in, ldw).astype(np.uint8)
    else:
        padded = padded.astype(np.int8 if lo >= -128 and hi <= 127 else np.int16)
    flat = aligned_empty(n_in * ldw, padded.dtype)
    j0 = 0
    while j0 < ldw:  # the tile at column j0 is [in, tw], stored contiguously from element j0 * in
        tw = TILE if ldw - j0 >= TILE else TILE_COLUMNS
        flat[j0 * n_in:(j0 + tw) * n_in] = padded[:, j0:j0 + tw].reshape(-1)
        j0 += tw
    return flat.reshape(n_in, ldw), int(np.abs(wi).max(initial=0)), float(2**z)


def spike_rows(x: np.ndarray, wk: np.ndarray, wmax: int, scale: float, out: np.ndarray) -> None:
    """out[r] = scale * sum of the weights wk stands for, over the inputs k with x[r, k] != 0 (exact
    integers in float32).

    x: uint8 [R, K] of 0/1; wk, wmax, scale: from spike_weights; out: float32 [R, n], C-contiguous.
    """
    lib = _lib()
    r, k = x.shape
    n = out.shape[1]
    ldw = wk.shape[1]
    assert x.dtype == np.uint8 and out.dtype == np.float32
    assert x.flags.c_contiguous and wk.flags.c_contiguous and out.flags.c_contiguous
    assert out.shape[0] == r and wk.shape[0] == k and ldw % TILE_COLUMNS == 0 and ldw >= n
    if wk.dtype == np.uint8:
        def part(r0, r1):
            return lib.spike_rows_p8(_ptr(x), k, _ptr(wk), n, ldw, float(scale), _ptr(out), r0, r1)
    else:
        fn = {np.dtype(np.int8): lib.spike_rows_i8, np.dtype(np.int16): lib.spike_rows_i16}[wk.dtype]

        def part(r0, r1):
            return fn(_ptr(x), k, _ptr(wk), n, ldw, int(wmax), float(scale), _ptr(out), r0, r1)

    if any(rc != 0 for rc in _run_parts(part, split_range(r, MIN_ROWS_PER_THREAD))):
        raise MemoryError("emulator kernel spike_rows: no memory for its scratch index")


def count_nonzero_rows(x: np.ndarray) -> np.ndarray:
    """Nonzero entries per step and sample of a time-major array [T, B, ...] (int32 [T, B])."""
    t, b = x.shape[0], x.shape[1]
    if not available() or x.dtype != np.uint8 or not x.flags.c_contiguous:
        return np.count_nonzero(x.reshape(t, b, -1), axis=2).astype(np.int32)
    lib = _lib()
    k = x.size // max(1, t * b)
    out = np.empty((t, b), np.int32)
    _run_parts(lambda r0, r1: lib.count_rows(_ptr(x), k, _ptr(out), r0, r1), split_range(t * b, 1024))
    return out


def lif_params(na, n: int) -> dict | None:
    """NeuronArith's operands as lif_scan reads them (per neuron, length n), or None where the kernel does
    not apply: it computes in 32-bit registers, splits the decay product at 1 <= decay_bits <= 16 and holds
    thresholds in int32; anything else runs on the numpy path."""
    ar = na.ar
    unity = 2**ar.decay_bits
    fu, fv = np.asarray(na.fu), np.asarray(na.fv)
    vth = np.asarray(na.vth)
    if (ar.reg_bits != 32 or not 1 <= ar.decay_bits <= 16 or na.M > 2**29 or min(fu.min(), fv.min()) < 0
            or max(fu.max(), fv.max()) > unity or vth.min() < -(2**31) or vth.max() > 2**31 - 1):
        return None
    return {"fu": np.broadcast_to(fu.astype(np.uint32), (n,)).copy(),
            "fv": np.broadcast_to(fv.astype(np.uint32), (n,)).copy(),
            "vth": np.broadcast_to(vth.astype(np.int32), (n,)).copy(),
            "bias": np.broadcast_to(np.asarray(na.bias).astype(np.int32), (n,)).copy()}


def lif_scan(na, a: np.ndarray | None, u: np.ndarray, v: np.ndarray, params: dict, reset: tuple[int, int, int],
             s: np.ndarray, counts: np.ndarray, v_out: np.ndarray | None, u_out: np.ndarray | None) -> None:
    """NeuronArith.step for tc steps over the batch, in place on u and v (int32 [B, n]).

    a: [tc, B, n] float32/float64 or None; params: from lif_params; reset: (interval, offset, t0).
    Writes s (uint8), counts (int32 [tc, B]), v_out and u_out (int32 [tc, B, n], or None).
    Adds the wrap and saturation events to na.u_wraps and na.v_saturations.
    """
    lib = _lib()
    tc, b, n = s.shape
    a_kind = 0
    if a is not None:
        # float32 converts straight to int32 when its values fit; else through float64, which wraps
        if a.dtype != np.float32 or na.bound_in >= 2**31:
            a = a.astype(np.float64, copy=False)
        a = np.ascontiguousarray(a)
        a_kind = 2 if a.dtype == np.float64 else 1
    assert u.dtype == v.dtype == np.int32 and u.flags.c_contiguous and v.flags.c_contiguous
    # kernels.c K_CHECK_U | K_CHECK_V | K_BIAS | K_NEAREST
    flags = bool(na.check_u_wrap) | bool(na.check_v_clip) << 1 | bool(na.has_bias) << 2 | bool(na.nearest) << 3
    interval, offset, t0 = reset
    ev = [np.zeros(2, np.int64) for _ in range(_threads())]
    act_shift = int(na.act).bit_length() - 1

    def part(i, b0, b1):
        lib.lif_scan(tc, b, n, b0, b1, _ptr(a), a_kind, _ptr(u), _ptr(v), _ptr(params["fu"]), _ptr(params["fv"]),
                     _ptr(params["vth"]), _ptr(params["bias"]), int(na.M), na.ar.decay_bits, act_shift, int(flags),
                     interval, offset, t0, _ptr(s), _ptr(counts), _ptr(v_out), _ptr(u_out), _ptr(ev[i]))

    parts = [(i, b0, b1) for i, (b0, b1) in enumerate(split_range(b, max(1, 4096 // max(n, 1))))]
    _run_parts(part, parts)
    na.u_wraps += sum(int(e[0]) for e in ev)
    na.v_saturations += sum(int(e[1]) for e in ev)
