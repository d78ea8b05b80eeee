"""spikedeploy's programmable CUBA neuron for Lava: a Process and its fixed_pt ProcessModel.

Loihi 2 runs neuron models written in microcode (targets/loihi2.py, programmable_neurons). The neurons
people train with need three things Lava's stock LIF (`PyLifModelBitAcc`) lacks, and one it does not
allow; this model adds them to the same integer update (lava-fixed-point.md §1), with th = vth << 6:

- reset "subtract": v −= th on a spike (snnTorch's default, spikingjelly's v_reset=None) instead of v = 0;
- reset_delay: the reset decided from the previous step's v, which kept its above-threshold value, is
  applied in this step (snnTorch's default): "zero" zeroes v before the decay, "subtract" subtracts th
  after adding u and the bias, before the saturation; there is then no reset after this step's spike;
- fire_at_equal: s = v >= th (spikingjelly), computed as v > th − 1;
- pending_reset (with "subtract", no reset_delay: snnTorch's reset_delay=False): p = the previous step's v
  fires; v −= p·th before the saturation, then v += (p − s)·th after the spike test (snnTorch's
  `do_reset = spk − reset`), not saturated again;
- u_bias: a per-neuron integer added to u with a_in << 6 every step, before u's wrap (the synapse bias of
  a NIR CubaLIF enters the current, not v).

Everything else (decays truncated toward zero, u's single wrap, v's saturation, bias_mant as int16, the
bias recomputed every step) is Lava's `AbstractPyLifModelFixed.subthr_dynamics` (lif/models.py:137-192),
restated here because u_bias must enter before u wraps. The emulator's `NeuronArith` runs the same steps;
tests/test_neuron_models.py proves the two equal bit for bit in u, v and spikes.

Import only after `spikedeploy.targets.lava.compat.lava_ready()`.
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import AbstractPyLifModelFixed
from lava.proc.lif.process import AbstractLIF

RESETS = ("zero", "subtract")


class ProgLIF(AbstractLIF):
    """A CUBA neuron layer with a programmable reset, firing rule and current bias (see module doc).

    Parameters as Lava's LIF (du, dv: ints or per-neuron arrays; vth: int or per-neuron array, mantissa;
    bias_mant int16, bias_exp), plus u_bias (per-neuron int, state units), reset ("zero"/"subtract"),
    reset_delay and fire_at_equal (bools, fixed for the run).
    """

    def __init__(self, *, shape, du=0, dv=0, vth=10, bias_mant=0, bias_exp=0, u_bias=0, reset="zero",
                 reset_delay=False, fire_at_equal=False, pending_reset=False, name=None, log_config=None, **kwargs):
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        super().__init__(shape=shape, u=0, v=0, du=du, dv=dv, bias_mant=bias_mant, bias_exp=bias_exp, name=name,
                         log_config=log_config, reset=reset, reset_delay=bool(reset_delay),
                         fire_at_equal=bool(fire_at_equal),
                         pending_reset=bool(pending_reset) and reset == "subtract" and not reset_delay, **kwargs)
        self.vth = Var(shape=(1,), init=vth)
        self.u_bias = Var(shape=shape, init=np.broadcast_to(np.asarray(u_bias, dtype=np.int32), shape).copy())


@implements(proc=ProgLIF, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyProgLifModelFixed(AbstractPyLifModelFixed):
    """Bit-accurate model of ProgLIF: Lava's LIF integer update with the rules of the module docstring."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int16, precision=16)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    vth: int = LavaPyType(int, np.int32, precision=17)
    u_bias: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.subtract = proc_params["reset"] == "subtract"
        self.reset_delay = bool(proc_params["reset_delay"])
        self.fire_at_equal = bool(proc_params["fire_at_equal"])
        self.pending_reset = bool(proc_params["pending_reset"])

    def _decay(self, x, d):
        y = np.int64(x) * (self.decay_unity - d)
        return np.int32(np.sign(y) * np.right_shift(np.abs(y), self.decay_shift))

    def run_spk(self):
        a_in = self.a_in.recv()
        self.scale_bias()  # as Lava's LIF: every step (lif/models.py:202)
        th = np.left_shift(np.asarray(self.vth, dtype=np.int64), self.vth_shift)
        cmp = th - 1 if self.fire_at_equal else th  # v >= th  <=>  v > th - 1 (integers)
        pending = None
        if self.reset_delay or self.pending_reset:
            pending = self.v > cmp
            if not self.subtract:
                self.v[pending] = 0
        # current: decay, a_in << 6, the current bias, then Lava's single wrap (lif/models.py:144-170)
        m = self.max_uv_val
        x = np.int64(self._decay(self.u, self.du + self.ds_offset))
        x = x + np.left_shift(np.int64(a_in), self.act_shift) + self.u_bias
        x = np.where(x > m, x - 2 * m, x)
        x = np.where(x <= -m, x + 2 * m, x)
        self.u[:] = x
        # voltage: decay, + u + bias, the delayed subtraction, then saturation (lif/models.py:172-186)
        y = np.int64(self._decay(self.v, self.dv + self.dm_offset)) + self.u + self.effective_bias
        if pending is not None and self.subtract:
            y = y - pending * th
        self.v[:] = np.clip(y, -m + 1, m - 1)
        s = self.v > cmp
        if self.pending_reset:
            self.v[:] = self.v + (pending.astype(np.int64) - s) * th
        elif pending is None:
            if self.subtract:
                self.v[:] = np.where(s, self.v - th, self.v)
            else:
                self.v[s] = 0
        self.s_out.send(s)
