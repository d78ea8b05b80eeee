"""lava-dl netx SDNN neuron groups -> SigmaDelta nodes (read_netx calls these for `type = SDNN`).

netx (lava-dl 0.6.0 `lib/dl/netx/hdf5.py` get_neuron_params, `blocks/process.py`) builds:
    input layer with an SDNN group     Lava Delta (no sigma, no bias, no ReLU); lava-dl's own test feeds the
                                       graded input straight into its a_in (the layer's transform is unused)
    group with a `sigma_output` entry  Lava Sigma (a running sum; it takes no threshold and no bias)
    any other SDNN group               Lava SigmaDelta, ReLU activation (netx never passes act_mode, and
                                       the file's `activation` is not read), bias = the layer's bias as int32
spike_exp = 6 (Network's default) and state_exp = 6 for Delta and SigmaDelta; vth = vThMant.
The arithmetic is in targets/emulator/sdnn.py.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import FileFormatError, UnsupportedError
from spikedeploy.graph.qparams import SigmaDeltaParams

NETX_SPIKE_EXP = 6  # hdf5.Network(spike_exp=6) default
NETX_STATE_EXP = 6  # hdf5.py get_neuron_params: 'state_exp': 6


def is_sdnn(nc: dict) -> bool:
    t = nc.get("type", b"")
    t = t.ravel()[0] if isinstance(t, np.ndarray) and t.size else t
    return (t.decode("ascii", "replace") if isinstance(t, bytes) else str(t)) == "SDNN"


def sdnn_q(nc: dict, shape: tuple[int, ...], bias: np.ndarray | None, *, input_layer: bool,
           where: str) -> SigmaDeltaParams:
    """The QGraph parameters of an SDNN group (contract: targets/emulator/sdnn.py)."""
    if input_layer:
        mode = "delta"
    elif "sigma_output" in nc:  # netx tests the key, not its value
        mode = "sigma"
    else:
        mode = "sigma_delta"
    q = SigmaDeltaParams(mode=mode, spike_exp=NETX_SPIKE_EXP, state_exp=NETX_STATE_EXP)
    if mode == "sigma":
        if bias is not None:
            raise UnsupportedError(f"{where}: a sigma_output (Lava Sigma) group with a bias; Lava's Sigma takes "
                                   "no bias and netx fails to build it; fix: drop the bias or the sigma_output flag")
        return q
    if "vThMant" not in nc:
        raise FileFormatError(f"{where}: SDNN neuron group lacks 'vThMant'")
    q.vth = int(np.asarray(nc["vThMant"]).ravel()[0])
    q.bias = np.zeros(shape, np.int64) if bias is None or mode == "delta" else np.asarray(bias, np.int64)
    return q


def sdnn_params(q: SigmaDeltaParams, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Float-view parameters of the SigmaDelta node for q (see targets/emulator/sdnn.py)."""
    s = 2.0 ** (q.spike_exp + q.state_exp)
    mode = q.mode
    full = np.ones(shape, np.float64)
    return {
        "v_threshold": full * float(q.vth or 0) * s,
        "bias": np.broadcast_to(np.asarray(q.bias, np.float64), shape) * s,
        "relu": np.asarray(int(mode == "sigma_delta")),
        "sigma": np.asarray(int(mode != "delta")),
        "delta": np.asarray(int(mode != "sigma")),
        "in_scale": np.asarray(s if mode == "delta" else 1.0),
        "out_scale": np.asarray(1.0 if mode == "sigma" else 2.0 ** -q.state_exp),
    }
