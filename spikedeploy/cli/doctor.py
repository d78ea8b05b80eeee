"""Environment check: versions, and whether Lava really runs a network and netx imports."""

from __future__ import annotations

import platform
import time
from importlib import metadata
from typing import Any

import numpy as np

PACKAGES = ("spikedeploy", "torch", "numpy", "nir", "nirtorch", "snntorch", "lava-nc", "lava-dl", "h5py", "onnxruntime")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def check_lava_runs(steps: int = 10) -> dict[str, Any]:
    """Build and run a 3-layer fixed-point network (RingBuffer → Dense → LIF ×3) under Loihi2SimCfg."""
    t0 = time.perf_counter()
    try:
        from spikedeploy.targets.lava.compat import lava_ready

        lava_ready()
        from lava.magma.core.run_conditions import RunSteps
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.dense.process import Dense
        from lava.proc.io.source import RingBuffer
        from lava.proc.lif.process import LIF
        from lava.proc.monitor.process import Monitor

        rng = np.random.default_rng(0)
        sizes = [16, 12, 8, 4]
        src = RingBuffer(data=(rng.random((sizes[0], steps)) < 0.5).astype(np.int32))
        prev = src.s_out
        lifs = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            dense = Dense(weights=rng.integers(20, 60, (n_out, n_in)) * 2)
            lif = LIF(shape=(n_out,), du=4095, dv=0, vth=40)
            prev.connect(dense.s_in)
            dense.a_out.connect(lif.a_in)
            prev = lif.s_out
            lifs.append(lif)
        mon = Monitor()
        mon.probe(lifs[-1].s_out, steps)
        try:
            lifs[-1].run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            data = mon.get_data()
        finally:
            lifs[-1].stop()
        spikes = int(sum(np.sum(v) for d in data.values() for v in d.values()))
        return {"ok": True, "layers": 3, "steps": steps, "output_spikes": spikes,
                "seconds": round(time.perf_counter() - t0, 3)}
    except Exception as e:  # doctor reports failures instead of raising
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def check_netx_imports() -> dict[str, Any]:
    try:
        from spikedeploy.targets.lava.compat import netx

        n = netx()
        return {"ok": True, "module": n.__name__}
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def check_emulator_kernels() -> dict[str, Any]:
    from spikedeploy.targets.emulator import kernels

    return {"ok": kernels.available(), "path": kernels.describe()}


def doctor() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in PACKAGES},
        "lava_runs": check_lava_runs(),
        "netx_imports": check_netx_imports(),
        "emulator_kernels": check_emulator_kernels(),
    }
