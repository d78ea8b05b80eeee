"""Lava's checks for `spikedeploy doctor`: Lava really runs a network, and lava-dl's netx imports."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


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


def checks() -> dict[str, dict[str, Any]]:
    lr, nx = check_lava_runs(), check_netx_imports()
    lr.update(label="Lava runs (Loihi2SimCfg fixed_pt)", required=True,
              summary=(f"{lr['layers']} layers, {lr['steps']} steps, {lr['output_spikes']} output spikes, "
                       f"{lr['seconds']} s") if lr["ok"] else lr["error"])
    nx.update(label="lava-dl netx imports", required=True, summary=nx.get("module") or nx.get("error", ""))
    return {"lava_runs": lr, "netx_imports": nx}
