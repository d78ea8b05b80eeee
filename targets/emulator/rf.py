"""Resonate-and-fire neurons, as Lava 0.10's fixed-point models compute them.

Lava `lava/proc/rf/process.py` (RF.__init__) and `models.py` (PyRFModelFixed), `lava/proc/rf_iz/models.py`
(PyRF_IZModelFixed); lava-dl's ComplexInput block feeds its input to both ports, ComplexDense feeds a real
and an imaginary Dense synapse (lava-dl `netx/blocks/process.py`).

Construction (RF.__init__, from the float parameters period, alpha, vth):
    sin_decay = int32((1 - alpha) sin(2 pi / period) * 2**decay_bits)   (truncation toward 0)
    cos_decay = int32((1 - alpha) cos(2 pi / period) * 2**decay_bits)
    vth       = int(vth * 2**state_exp)
Per step, with scale(x) = sign(x) * (|x| >> decay_bits) (truncation toward 0) and L = 2**23 - 1
(`ri_bitwidth` = 2 x the 12-bit decay precision):
    re_in, im_in = a_real_in << state_exp, a_imag_in << state_exp
    re' = clip(scale(cos re) - scale(sin im) + re_in, -L, L)
    im' = clip(scale(sin re) + scale(cos im) + im_in, -L, L)
    RF      s = re' >= vth and im' >= 0 and im < 0 (the previous im: a phase crossing); re, im = re', im'
    RF_IZ   s = im' >= vth; re = re' where not s else 0; im = im' where not s else vth - 1

QGraph contract: q of an RF node is an RFParams (spikedeploy/graph/qparams.py): mode "phase" | "izhikevich",
period, alpha, vth (the float process arguments), state_exp, decay_bits, real_inputs and imag_inputs (node
names; a node may drive both ports). Probes record u = re, v = im.
"""

from __future__ import annotations

import numpy as np

from spikedeploy.errors import ParameterError
from spikedeploy.graph.qparams import RF_MODES, RFParams
from spikedeploy.targets.loihi_arith import Arith, wrap_int

RF_DECAY_PRECISION = 12  # AbstractPyRFModelFixed: sin_decay precision=12, state limit 2**(2*12-1) - 1


def rf_constants(q: RFParams) -> tuple[int, int, int]:
    """(sin_decay, cos_decay, vth) as RF.__init__ stores them."""
    period, alpha, vth = float(q.period), float(q.alpha), float(q.vth)
    se, db = int(q.state_exp), int(q.decay_bits)
    sin_d = (1 - alpha) * np.sin(np.pi * 2 * 1 / period)
    cos_d = (1 - alpha) * np.cos(np.pi * 2 * 1 / period)
    if se > 0:
        vth = int(vth * (1 << se))
    if db > 0:
        sin_d, cos_d = np.int32(sin_d * (1 << db)), np.int32(cos_d * (1 << db))
    if not all(float(v).is_integer() for v in (sin_d, cos_d, vth)):
        raise ParameterError("RF: fixed point needs state_exp > 0 and decay_bits > 0 (integer decays and threshold)")
    return int(sin_d), int(cos_d), int(vth)


class RFStage:
    """A layer of resonate-and-fire neurons; the NeuronStage interface, with two input ports."""

    spiking = True

    def __init__(self, name, q: RFParams, shape, ar: Arith, preds: list[str], probe: bool):
        self.name = name
        self.shape = tuple(shape)
        self.n = int(np.prod(shape)) if shape else 1
        self.probe = probe
        where = f"node '{name}' (RF)"
        self.mode = q.mode
        if self.mode not in RF_MODES:
            raise ParameterError(f"{where}: quantized mode must be one of {RF_MODES}, got {self.mode!r}")
        try:
            self.sin, self.cos, self.vth = rf_constants(q)
        except ParameterError as e:
            raise ParameterError(f"{where}: {e}") from e
        self.state_exp, self.decay_bits = int(q.state_exp), int(q.decay_bits)
        self.limit = 2 ** (2 * RF_DECAY_PRECISION - 1) - 1
        real, imag = list(q.real_inputs), list(q.imag_inputs)
        stray = sorted(set(preds) - set(real) - set(imag))
        if stray or set(real + imag) - set(preds):
            raise ParameterError(f"{where}: real_inputs {real} and imag_inputs {imag} must name exactly its "
                                 f"inputs {preds}")
        self.ports = (real, imag)
        self.na = type("RFCounters", (), {"u_wraps": 0, "v_saturations": 0})()
        self.re = self.im = None

    def reset(self, batch: int) -> None:
        self.re = np.zeros((batch, self.n), np.int64)
        self.im = np.zeros((batch, self.n), np.int64)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        return np.sign(x) * (np.abs(x) >> self.decay_bits)

    def run(self, a, tc: int, want_v: bool, t0: int = 0, scratch=None):
        b = self.re.shape[0]
        s_out = np.zeros((tc, b, self.n), np.uint8)
        u_out = np.zeros((tc, b, self.n), np.int64) if self.probe else None
        v_out = np.zeros((tc, b, self.n), np.int64) if (self.probe or want_v) else None
        zero = np.zeros((tc, b, self.n), np.int64)
        a_re, a_im = (zero if x is None else np.asarray(x).reshape(tc, b, self.n).astype(np.int64) for x in a)
        lim = self.limit
        for t in range(tc):
            re_in = wrap_int(a_re[t] << self.state_exp, 32)
            im_in = wrap_int(a_im[t] << self.state_exp, 32)
            re, im = self.re, self.im
            nre = np.clip(self._scale(self.cos * re) - self._scale(self.sin * im) + re_in, -lim, lim)
            nim = np.clip(self._scale(self.sin * re) + self._scale(self.cos * im) + im_in, -lim, lim)
            if self.mode == "phase":
                s = (nre >= self.vth) & (nim >= 0) & (im < 0)
                self.re, self.im = nre, nim
            else:
                s = nim >= self.vth
                self.re = np.where(s, 0, nre)
                self.im = np.where(s, self.vth - 1, nim)
            s_out[t] = s
            if u_out is not None:
                u_out[t] = self.re
            if v_out is not None:
                v_out[t] = self.im
        counts = np.count_nonzero(s_out, axis=2).astype(np.int32)
        return s_out, counts, v_out, u_out
