"""Sigma-delta neurons with graded spikes, as Lava 0.10's fixed-point models compute them.

Lava `lava/proc/sdn/models.py` (PyDeltaModelFixed, PySigmaDeltaModelFixed, PySigmaModelFixed) and
`process.py`; lava-dl netx builds them for SDNN neuron groups (`lib/dl/netx/hdf5.py` get_neuron_params:
spike_exp 6, state_exp 6; input layer -> Delta, `sigma_output` -> Sigma, else SigmaDelta with ReLU).
Every state variable is an int32 numpy array in Lava, so each step below wraps to 32 bits where numpy does.
With S = spike_exp + state_exp, per step and neuron:

    sigma-delta  sigma += a_in                        (a_in: the synapse's sum, unshifted)
                 act_new = relu(sigma + (bias << S))  (bias scaled once, at process construction)
    delta        act_new = a_in << S                  (the input layer: no sigma, no ReLU, no bias)
    both         delta = act_new - act + residue
                 s = delta if |delta| >= (vth << S) else 0     (>=, although the docstring says >)
                 residue = delta - s; act = act_new
                 message = s >> state_exp             (arithmetic shift: floors)
    sigma        sigma += a_in; message = sigma       (lava-dl's `sigma_output` readout)

A message is an integer that the next synapse multiplies by its weights (Dense with num_message_bits > 0:
W @ s; Conv: the same convolution, graded). No reset, no refractory period; cum_error is not used by netx
and not supported here.

QGraph contract: q of a SigmaDelta node is a SigmaDeltaParams (spikedeploy/graph/qparams.py): mode
"sigma_delta" | "delta" | "sigma", vth, bias per neuron (sigma_delta), spike_exp, state_exp.
Float view (the SigmaDelta op's parameters): the same rule on real numbers without the final floor:
in_scale = 2**S for delta (1 otherwise), bias and v_threshold multiplied by 2**S, out_scale = 2**-state_exp
(1 for sigma), relu/sigma/delta flags.
Probes record u = sigma and v = act (Lava's Var names), s = the message.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import InputError, ParameterError
from spikedeploy.graph.qparams import SDNN_MODES, SigmaDeltaParams
from spikedeploy.targets.loihi_arith import Arith, wrap_int


def message_bound(q: SigmaDeltaParams) -> float:
    """Largest |message| a SigmaDelta node can send: int32 state, shifted right by state_exp unless sigma."""
    if q.mode == "sigma":
        return 2.0**31
    return 2.0 ** (31 - int(q.state_exp))


def check_delta_input(name: str, preds, x: np.ndarray, shift: int) -> None:
    """a_in << shift must fit Lava's int32 state; larger inputs would wrap silently there."""
    lim = 1 << (31 - shift)
    big = int(np.abs(np.asarray(x)).max(initial=0))
    if big >= lim:
        raise InputError(
            f"input {list(preds)} of node '{name}' (sigma-delta input layer): values up to {big}, "
            f"but graded inputs must lie in [-{lim - 1}, {lim - 1}] (a_in << {shift} in int32); "
            "fix: scale the input down")


class _Counters:
    """What the engine reads from every neuron stage's arithmetic (no wraps or saturations are counted)."""

    u_wraps = 0
    v_saturations = 0


class SigmaDeltaStage:
    """A layer of sigma-delta neurons; same interface as NeuronStage (engine.py)."""

    spiking = True  # events are counted (nonzero messages)
    graded = True

    def __init__(self, name, q: SigmaDeltaParams, shape, ar: Arith, probe: bool, preds: tuple[str, ...] = ()):
        self.name = name
        self.shape = tuple(shape)
        self.n = int(np.prod(shape)) if shape else 1
        self.ar = ar
        self.probe = probe
        where = f"node '{name}' (SigmaDelta)"
        self.mode = q.mode
        if self.mode not in SDNN_MODES:
            raise ParameterError(f"{where}: quantized mode must be one of {SDNN_MODES}, got {self.mode!r}")
        if q.cum_error:
            raise ParameterError(f"{where}: cum_error (accumulated-error spiking) is not supported; set it False")
        self.state_exp = int(q.state_exp)
        s = int(q.spike_exp) + self.state_exp
        self.shift = s
        if self.mode != "sigma":
            if q.vth is None:
                raise ParameterError(f"{where}: quantized parameter 'vth' missing from the QGraph")
            self.vth = int(wrap_int(int(np.asarray(q.vth).ravel()[0]) << s, 32))
        bias = np.asarray(q.bias, dtype=np.int64).reshape(-1)
        if bias.size not in (1, self.n):
            raise ParameterError(f"{where}: {bias.size} bias values for {self.n} neurons")
        # SigmaDelta.__init__ multiplies the int32 bias by 1 << S in int32
        self.bias = wrap_int(wrap_int(bias, 32) * (1 << s), 32)
        self.preds = tuple(preds)
        self.na = _Counters()
        self.sigma = self.act = self.residue = None

    def reset(self, batch: int) -> None:
        z = np.zeros((batch, self.n), np.int64)
        self.sigma, self.act, self.residue = z, z.copy(), z.copy()

    def run(self, a, tc: int, want_v: bool, t0: int = 0, scratch=None):
        b = self.sigma.shape[0]
        s_out = np.zeros((tc, b, self.n), np.float64)
        u_out = np.zeros((tc, b, self.n), np.int64) if self.probe else None
        v_out = np.zeros((tc, b, self.n), np.int64) if (self.probe or want_v) else None
        x = np.zeros((tc, b, self.n), np.int64) if a is None else np.asarray(a).reshape(tc, b, self.n).astype(np.int64)

        def w32(v):
            return wrap_int(v, 32)

        if self.mode == "delta" and tc:
            check_delta_input(self.name, self.preds, x, self.shift)
        for t in range(tc):
            if self.mode == "sigma":
                self.sigma = w32(x[t] + self.sigma)
                s_out[t] = self.sigma
            else:
                if self.mode == "delta":
                    new = w32(x[t] << self.shift)
                else:
                    self.sigma = w32(x[t] + self.sigma)
                    new = np.maximum(w32(self.sigma + self.bias), 0)
                delta = w32(w32(new - self.act) + self.residue)
                s = np.where(np.abs(delta) >= self.vth, delta, 0)
                self.residue = w32(delta - s)
                self.act = new
                s_out[t] = s >> self.state_exp
            if u_out is not None:
                u_out[t] = self.sigma
            if v_out is not None:
                v_out[t] = self.act
        counts = np.count_nonzero(s_out, axis=2).astype(np.int32)
        return s_out, counts, v_out, u_out
