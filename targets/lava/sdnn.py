"""Lava processes for SigmaDelta nodes (lava.proc.sdn): Delta, SigmaDelta (ReLU) and Sigma, as lava-dl netx
builds them for SDNN neuron groups. The emulator's rule is in targets/emulator/sdnn.py."""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import UnsupportedError
from spikedeploy.graph.qparams import SigmaDeltaParams


def sdnn_process(name: str, q: SigmaDeltaParams, lava_shape: tuple[int, ...], bias_lava: np.ndarray | None):
    """(process, [state Vars zeroed between samples]) for a SigmaDelta node's q, in Lava's layout."""
    from lava.proc.sdn.process import ActivationMode, Delta, Sigma, SigmaDelta

    mode = q.mode
    if q.cum_error:
        raise UnsupportedError(f"node '{name}': cum_error sigma-delta neurons are not modelled")
    if mode == "sigma":
        p = Sigma(shape=lava_shape)
        return p, [p.sigma]
    kw = {"shape": lava_shape, "vth": int(np.asarray(q.vth).ravel()[0]),
          "spike_exp": int(q.spike_exp), "state_exp": int(q.state_exp)}
    if mode == "delta":
        p = Delta(**kw)
        return p, [p.act, p.residue, p.error]
    if mode == "sigma_delta":
        p = SigmaDelta(bias=bias_lava.astype(np.int32), act_mode=ActivationMode.RELU, **kw)
        return p, [p.sigma, p.act, p.residue, p.error]
    raise UnsupportedError(f"node '{name}': unknown sigma-delta mode {mode!r}")
