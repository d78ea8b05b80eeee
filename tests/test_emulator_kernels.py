"""The compiled kernels (targets/emulator/kernels.c) give the numpy path's integers.

spike_rows is checked against an int64 matrix product, lif_scan against NeuronArith.step (the numpy path,
itself checked against Lava in test_emulator_vs_lava.py, which runs with the kernels), and whole random
graphs are run both ways, traces and wrap counts included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from random_qgraphs import conv_net, dense_chain, overflow_net, recurrent_net, two_input_net

from spikedeploy.graph.qparams import CubaParams
from spikedeploy.targets.emulator import kernels, simulate_emulator
from spikedeploy.targets.emulator.stages import NeuronStage
from spikedeploy.targets.loihi_arith import LOIHI2, Arith

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="compiled kernels not built")
_PORTABLE = {}


@pytest.fixture(params=["installed", "portable"])
def kernel_build(request, monkeypatch, tmp_path_factory):
    """The installed kernels (AVX-512 paths on this machine) and a build for baseline x86-64 without
    -march (the generic C paths), so that both sets of code are checked wherever the tests run."""
    if request.param == "portable":
        if "lib" not in _PORTABLE:
            src = Path(kernels.__file__).with_name("kernels.c")
            cc = shutil.which("cc") or shutil.which("gcc")
            if not src.exists() or not cc:
                pytest.skip("no kernels.c or no C compiler for the portable build")
            so = tmp_path_factory.mktemp("portable") / "kernels_portable.so"
            subprocess.run([cc, "-O2", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", str(src),
                            "-o", str(so)], check=True, capture_output=True)
            _PORTABLE["lib"] = kernels.load_library(so)
        monkeypatch.setattr(kernels, "_lib", lambda: _PORTABLE["lib"])
    return request.param


def test_install_builds_the_kernels():
    # `make` installs with setup.py, which compiles kernels.c; without them the engine benchmark's numbers
    # do not hold, so a silent fallback must not pass unnoticed here
    if os.environ.get("SPIKEDEPLOY_KERNELS", "").lower() == "numpy":
        pytest.skip("numpy path forced by SPIKEDEPLOY_KERNELS")
    assert kernels.available(), kernels.describe()


@needs_kernels
@pytest.mark.parametrize("rows,k,n,wmax,mult,seed,dtype", [
    (50, 30, 10, 255, 1, 0, np.int16),  # one narrow tile, partly stored
    (130, 100, 300, 256, 1, 1, np.int16),  # two 128-column tiles and a 64-column tile storing 44 columns
    (130, 100, 300, 127, 2, 1, np.int8),  # Lava's even 8-bit weights: int8 storage, scale 2
    (90, 300, 70, 100, 1, 5, np.int8),
    (70, 2000, 257, 8000, 1, 2, np.int16),  # dense rows overflow int16: int32 tiles, sparse rows stay int16
    (70, 3000, 130, 120, 32, 6, np.int8),  # int8 weights, int32 rows, scale 32
    (5, 1, 64, 7, 1, 3, np.uint8),  # from here: weights in [-64, 63] once halved, two per byte (p8)
    (3, 40, 600, 0, 1, 4, np.uint8),  # all-zero weights
    (130, 100, 300, 64, 2, 7, np.uint8),  # Lava's 8-bit range, -128..126 even; tiles of 128, 128 and 64
    (40, 1200, 70, 64, 1, 8, np.uint8),  # rows of up to 1200 spikes: more than 258 pairs, summed in parts
    (33, 517, 129, 41, 2, 9, np.uint8),  # odd spike counts, a 64-column tile storing 1 column
    (9, 50, 97, 63, 1, 10, np.uint8),  # one tile storing 97 columns: the last 64-column chunk's high half holds 1
])
def test_spike_rows_equals_integer_matmul(kernel_build, rows, k, n, wmax, mult, seed, dtype):
    rng = np.random.default_rng(seed)
    w = rng.integers(-wmax, wmax + 1, (n, k)) * mult
    w[0, 0] = wmax * mult
    if dtype == np.uint8 and wmax == 64:  # the p8 range is asymmetric: -64 is in it, 64 is not
        w = np.clip(w, -64 * mult, 63 * mult)
        w[0], w[1] = -64 * mult, 63 * mult  # every input's extreme weights in one column each
    density = rng.random((rows, 1))  # some rows nearly empty, some nearly full
    density[0] = 0.0
    density[-1] = 1.0  # every input spikes: the largest sums, and the most pairs
    x = (rng.random((rows, k)) < density).astype(np.uint8)
    assert np.abs(w).sum(axis=1).max() < 2**24  # the stage only uses the kernel when float32 is exact
    wk, wm, scale = kernels.spike_weights(w)
    assert wk.dtype == dtype and (wmax == 0 or scale == mult)
    assert wk.ctypes.data % 64 == 0  # a 64-byte load within one cache line (25% on a misaligned layer)
    out = np.full((rows, n), np.nan, np.float32)
    kernels.spike_rows(x, wk, wm, scale, out)
    ref = x.astype(np.int64) @ w.T.astype(np.int64)
    np.testing.assert_array_equal(out.astype(np.int64), ref)
    if wk.dtype != np.uint8 and wm * k > 32767:  # the case really mixes int16 and int32 rows
        m = x.sum(axis=1)
        assert (m * wm > 32767).any() and (m * wm <= 32767).any()


@needs_kernels
@pytest.mark.parametrize("rows,k,n", [(5, 0, 10), (0, 10, 10), (5, 10, 1)])
@pytest.mark.parametrize("wmax", [63, 127, 300])  # the p8, int8 and int16 layouts
def test_spike_rows_degenerate_shapes(kernel_build, rows, k, n, wmax):
    rng = np.random.default_rng(k + n)
    w = rng.integers(-wmax, wmax + 1, (n, k))
    x = (rng.random((rows, k)) < 0.5).astype(np.uint8)
    wk, wm, scale = kernels.spike_weights(w)
    out = np.full((rows, n), np.nan, np.float32)
    kernels.spike_rows(x, wk, wm, scale, out)
    np.testing.assert_array_equal(out.astype(np.int64), x.astype(np.int64) @ w.T.astype(np.int64))


@needs_kernels
@pytest.mark.parametrize("shape", [(7, 3, 100), (2, 5, 3, 11, 4), (1, 1, 32), (3, 2, 0)])
def test_count_nonzero_rows(shape):
    x = (np.random.default_rng(1).random(shape) < 0.3).astype(np.uint8) * 3
    want = np.count_nonzero(x.reshape(shape[0], shape[1], -1), axis=2)
    np.testing.assert_array_equal(kernels.count_nonzero_rows(x), want)


@needs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_as_int8_converts_exactly_the_values_int8_holds(kernel_build, dtype):
    rng = np.random.default_rng(2)
    big = rng.integers(-128, 128, (9, 40, 3)).astype(dtype)
    big[0, :4, 0] = [-128, 127, -0.0, 0]
    x = big[:, 5:31]  # a chunk of samples: each step contiguous, steps 40 samples apart
    out = np.empty(x.shape, np.int8)
    assert kernels.as_int8(x, out) is True
    np.testing.assert_array_equal(out, x.astype(np.int64))  # -0.0 is 0
    for bad in (np.nan, np.inf, -np.inf, 0.5, -1e-30, 127.5, -128.5, 128, -129, 1e30):
        y = x.copy()
        y[8, 25, 2] = bad  # the last value of the last step
        assert kernels.as_int8(y, np.empty(y.shape, np.int8)) is False, bad
    assert kernels.as_int8(x.astype(np.float16), out) is None  # no kernel: the caller's numpy path
    assert kernels.as_int8(big[:, :, ::2], np.empty((9, 40, 2), np.int8)) is None  # a step not contiguous


NEARES = Arith(rounding="nearest", name="nearest")
NARROW = Arith(state_bits=12, name="narrow")  # u wraps and v saturates at +-2048


def _neuron_case(seed, ar, du, dv, bias, reset):
    rng = np.random.default_rng(seed)
    n = 70
    q = CubaParams(du=du, dv=dv, vth=rng.integers(5, 400, n), bias_mant=0, bias_exp=0)
    if bias:
        q.bias_mant, q.bias_exp = rng.integers(-3000, 3000, n), 2
    if reset:
        q.reset_interval, q.reset_offset = 7, 3
    bound = 300 if ar is NARROW else 20000
    a = rng.integers(-bound, bound + 1, (23, 3, n)).astype(np.float64)
    return q, a, bound


def _scan(q, a, bound, ar):
    st = NeuronStage("lif", q, (a.shape[2],), ar, float(bound), True, True)
    st.reset(a.shape[1])
    s1, c1, v1, u1 = st.run(a[:11], 11, True, 0)
    s2, c2, v2, u2 = st.run(a[11:], a.shape[0] - 11, True, 11)  # the state carries across chunks
    out = [np.concatenate(p) for p in ((s1, s2), (c1, c2), (v1, v2), (u1, u2))]
    return out, (st.na.u_wraps, st.na.v_saturations)


@needs_kernels
@pytest.mark.parametrize("ar", [LOIHI2, NEARES, NARROW], ids=["loihi2", "nearest", "narrow"])
@pytest.mark.parametrize("du,dv", [(0, 0), (1024, 256), (4095, 4096), (4000, 3)])
@pytest.mark.parametrize("bias,reset", [(False, False), (True, True)])
def test_lif_scan_equals_numpy_step(kernel_build, monkeypatch, ar, du, dv, bias, reset):
    q, a, bound = _neuron_case(du + dv, ar, du, dv, bias, reset)
    with monkeypatch.context() as m:
        m.setattr(kernels, "available", lambda: False)
        ref, ref_events = _scan(q, a, bound, ar)
    # float64 inputs (wrapped to 32 bits as they convert) and float32 ones (converted directly)
    for a_in in (a, a.astype(np.float32)):
        fast, fast_events = _scan(q, a_in, bound, ar)
        for got, want, what in zip(fast, ref, ("spikes", "counts", "v", "u"), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"{what} ({a_in.dtype} input)")
        assert fast_events == ref_events
    if ar is NARROW:
        assert fast_events[0] > 0 and fast_events[1] > 0  # the wrap and saturation paths ran


GRAPHS = [
    (dense_chain, 0, {}), (dense_chain, 5, {"sparse": True, "delay": True}), (dense_chain, 300, {"graded": True}),
    (dense_chain, 400, {"reset": 10, "cuba": True}), (conv_net, 1, {}), (recurrent_net, 0, {}),
    (overflow_net, 1, {}), (two_input_net, 0, {}),
    # wide layers with dense input: several 128-column tiles and int32 rows in the synapse kernel
    (dense_chain, 7, {"sizes": [600, 300, 40], "steps": 12, "batch": 3}),
]


@needs_kernels
@pytest.mark.parametrize("build,seed,kw", GRAPHS, ids=[f"{b.__name__}-{s}" for b, s, _ in GRAPHS])
def test_whole_graph_kernels_equal_numpy(kernel_build, monkeypatch, build, seed, kw):
    qg, x, _ = build(seed, **kw)
    probes = [n for n, v in qg.graph.nodes.items() if v.spec.family == "neuron"]
    fast = simulate_emulator(qg, x, probes=probes, chunk_bytes=1 << 14)  # several chunks
    with monkeypatch.context() as m:
        m.setattr(kernels, "available", lambda: False)
        ref = simulate_emulator(qg, x, probes=probes)
    assert fast.counts.keys() == ref.counts.keys()
    for k in ref.counts:
        np.testing.assert_array_equal(fast.counts[k], ref.counts[k], err_msg=k)
    for k in ref.outputs:
        np.testing.assert_array_equal(fast.outputs[k], ref.outputs[k], err_msg=k)
    for node, tr in ref.traces.items():
        for var in tr:
            np.testing.assert_array_equal(fast.traces[node][var], tr[var], err_msg=f"{node}.{var}")
    assert fast.meta["u_wraps"] == ref.meta["u_wraps"]
    assert fast.meta["v_saturations"] == ref.meta["v_saturations"]
    assert sum(int(c.sum()) for n, c in ref.counts.items() if n not in qg.graph.inputs) > 0


@needs_kernels
def test_neuron_kernel_only_for_32_bit_registers():
    """The int32 neuron kernel relies on 32-bit registers wrapping; wider formats take the numpy path."""
    from spikedeploy.targets.spec import NumericFormat

    wide = Arith.from_numeric(NumericFormat(state_bits=28), name="wide")  # 28 + 6 bits: 64-bit registers
    q = CubaParams(du=100, dv=200, vth=5)
    assert wide.reg_bits == 64 and NeuronStage("lif", q, (4,), wide, 10.0, True, False).kparams is None
    assert NeuronStage("lif", q, (4,), LOIHI2, 10.0, True, False).kparams is not None
