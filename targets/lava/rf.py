"""Lava processes for RF nodes (lava.proc.rf RF, lava.proc.rf_iz RF_IZ), as lava-dl's ComplexInput and
ComplexDense blocks build them. The emulator's rule is in targets/emulator/rf.py."""

from __future__ import annotations

from spikedeploy.graph.qparams import RFParams


def rf_process(q: RFParams, lava_shape: tuple[int, ...]):
    """The RF / RF_IZ process for an RF node's q (float period, alpha and vth, as the process takes them)."""
    from lava.proc.rf.process import RF
    from lava.proc.rf_iz.process import RF_IZ

    cls = RF_IZ if q.mode == "izhikevich" else RF
    return cls(shape=lava_shape, period=float(q.period), alpha=float(q.alpha), vth=float(q.vth),
               state_exp=int(q.state_exp), decay_bits=int(q.decay_bits))
