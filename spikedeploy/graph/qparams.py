"""The integer parameters of one quantized node (`QGraph.q[node]`): one small dataclass per kind of node.

Every field is typed and every optional one has a default, so a misspelt field fails where it is written
(the constructor rejects an unknown keyword; `slots=True` makes assigning an unknown attribute raise).
The objects are mutable: the quantizer sets bias onsets and delays after it builds them, and
simulate/netx_drive.py drives and resets layers per run. Integer values are Python ints or numpy integer
arrays ("int | array": one value for the layer, or one per neuron / per synapse). `==` compares fields
value by value (arrays with np.array_equal).

The quantized graph file (io/qgraph_file.py) stores each node as {"kind": KIND, field: value, ...};
`from_fields` builds the object back, `fields_of` gives what is stored. Each field's metadata says its type
for checks/qgraph.py: "num" (a number or numeric array), "text" (a string, one of `choices`), "flag" (a
bool), "names" (a list of node names), and whether it may be None.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


def _num(default=dataclasses.MISSING, *, scalar: bool = False, optional: bool = False, step: bool = False):
    """A number or numeric array; `scalar`: one value for the layer (never a list); `step`: a step count, one
    number (not even a per-neuron array)."""
    return field(default=default, metadata={"type": "num", "scalar": scalar or step, "step": step,
                                            "optional": optional})


def _text(default=dataclasses.MISSING, *, choices: tuple[str, ...], optional: bool = False):
    return field(default=default, metadata={"type": "text", "choices": choices, "optional": optional})


def _flag(default=dataclasses.MISSING, *, optional: bool = False):
    return field(default=default, metadata={"type": "flag", "optional": optional})


def _names():
    return field(default_factory=list, metadata={"type": "names", "optional": False})


class _Params:
    __slots__ = ()
    kind: ClassVar[str]

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray | np.generic) or isinstance(b, np.ndarray | np.generic):
                if a is None or b is None or not np.array_equal(np.asarray(a), np.asarray(b)):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # mutable, and holds arrays


SIGN_MODES = ("mixed", "exc", "inh")


@dataclass(slots=True, eq=False)
class SynapseParams(_Params):
    """A synapse node (Affine, Linear, Conv2d, Conv1d, Scale, SumPool2d; pooling and gains folded in by the
    quantizer), as Lava's Dense / Sparse / DelayDense / Conv process holds it."""

    kind: ClassVar[str] = "synapse"
    # integer mantissas, same layout as the float weight; the chip clips them to the sign mode's range and
    # drops the low bits num_weight_bits does not keep (Lava's weightutils)
    weight: np.ndarray = _num()
    # the chip shifts each *sum* by weight_exp (left if > 0, floored right if < 0); Lava's Conv ignores it
    weight_exp: int = _num(0, scalar=True)
    # mantissa bits kept (Loihi 2: 8); None: the target's full width
    num_weight_bits: int | None = _num(None, scalar=True, optional=True)
    # None: derived from the weights, as Lava does
    sign_mode: str | None = _text(None, choices=SIGN_MODES, optional=True)
    # per-synapse delays in steps, (out, in) (Lava DelayDense); None: no delay beyond the synapse's one step
    delay: np.ndarray | None = _num(None, optional=True)
    # Lava's Sparse process instead of Dense; None: the backend decides from the weights' density
    sparse: bool | None = _flag(None, optional=True)


@dataclass(slots=True, eq=False)
class FoldedParams(_Params):
    """A node another synapse simulates (a netx or NIR Delay whose steps are that synapse's `delay`): the
    chip backends pass its values through, float backends simulate the node itself."""

    kind: ClassVar[str] = "folded"
    folded_into: str = _text(choices=())  # the synapse node that holds it


RESETS = ("zero", "subtract")


@dataclass(slots=True, eq=False)
class CubaParams(_Params):
    """A CUBA neuron node (LIF, IF, CubaLIF, LI, CubaLI, Threshold): Lava's LIF (PyLifModelBitAcc), or
    spikedeploy's programmable neuron (targets/lava/neurons.py) when a rule field below is set."""

    kind: ClassVar[str] = "cuba"
    # 12-bit decays of u and v per step (4096 = full decay); int, or one per neuron
    du: int | np.ndarray = _num()
    dv: int | np.ndarray = _num()
    # threshold mantissa: the neuron spikes when v > vth << 6
    vth: int | np.ndarray = _num()
    # bias added to v every step, bias_mant · 2^bias_exp (the chip stores bias_mant as int16)
    bias_mant: int | np.ndarray = _num(0)
    bias_exp: int | np.ndarray = _num(0, scalar=True)
    # programmable-neuron rule; all None: Lava's LIF. reset "subtract": v -= vth << 6 on a spike;
    # reset_delay: the reset decided from the previous step's v is applied before this step's update;
    # fire_at_equal: spike when v >= vth << 6; pending_reset (with "subtract", no reset_delay): snnTorch's
    # p = previous v fires, v -= p·th before the spike test, v += (p - s)·th after it
    reset: str | None = _text(None, choices=RESETS, optional=True)
    reset_delay: bool | None = _flag(None, optional=True)
    fire_at_equal: bool | None = _flag(None, optional=True)
    pending_reset: bool | None = _flag(None, optional=True)
    # state units (a_in << 6), per neuron, added to u every step (CubaLIF synapse bias; programmable neuron)
    u_bias: np.ndarray | None = _num(None, optional=True)
    # state units, per neuron, written into v by the host before step v_init_step (v_reset != 0: the state is
    # shifted by -v_reset, so the float model's start v = 0 is -64·λ·v_reset)
    v_init: np.ndarray | None = _num(None, optional=True)
    v_init_step: int = _num(0, step=True)
    # bias (and u_bias) held at 0 before this step, the layer's first input (the host enables it: quantizer)
    bias_onset: int = _num(0, step=True)
    # Lava LIFReset: u and v zeroed before step t (1-based) when t % reset_interval == reset_offset; 0: never
    reset_interval: int = _num(0, step=True)
    reset_offset: int = _num(0, step=True)
    # "bias": a netx input layer, driven only through bias_mant, which the host computes per sample as
    # input_weight · x + input_bias (the file's transform; lava-dl leaves the input port unconnected)
    input_mode: str | None = _text(None, choices=("bias",), optional=True)
    input_weight: int | None = _num(None, scalar=True, optional=True)
    input_bias: int | None = _num(None, scalar=True, optional=True)

    @property
    def programmable(self) -> bool:
        """Whether the layer needs spikedeploy's programmable neuron rather than Lava's LIF."""
        return any(getattr(self, k) is not None for k in PROGRAMMABLE)


PROGRAMMABLE = ("reset", "reset_delay", "fire_at_equal", "pending_reset", "u_bias")

SDNN_MODES = ("sigma_delta", "delta", "sigma")


@dataclass(slots=True, eq=False)
class SigmaDeltaParams(_Params):
    """A SigmaDelta node, as Lava's sdn processes hold it (arithmetic: targets/emulator/sdnn.py)."""

    kind: ClassVar[str] = "sigma_delta"
    # "sigma_delta": Lava SigmaDelta (ReLU); "delta": Delta (netx input layer); "sigma": Sigma (a running sum)
    mode: str = _text(choices=SDNN_MODES)
    # threshold mantissa: a message is sent when |delta| >= vth << (spike_exp + state_exp); None for sigma
    vth: int | None = _num(None, scalar=True, optional=True)
    # per-neuron bias added to sigma, shifted by spike_exp + state_exp (sigma_delta only)
    bias: int | np.ndarray = _num(0)
    # fixed-point exponents of the spikes and the state (netx: 6 and 6)
    spike_exp: int = _num(6, scalar=True)
    state_exp: int = _num(6, scalar=True)
    # accumulated-error spiking: not modelled, refused when set
    cum_error: bool = _flag(False)


RF_MODES = ("phase", "izhikevich")


@dataclass(slots=True, eq=False)
class RFParams(_Params):
    """A resonate-and-fire node, as Lava's RF / RF_IZ process takes it (arithmetic: targets/emulator/rf.py)."""

    kind: ClassVar[str] = "rf"
    # "phase": RF (spike on an upward phase crossing above vth); "izhikevich": RF_IZ
    mode: str = _text(choices=RF_MODES)
    # the float process arguments: oscillation period in steps, decay alpha, threshold (before state_exp)
    period: float = _num(scalar=True)
    alpha: float = _num(scalar=True)
    vth: float = _num(scalar=True)
    # fixed point: the state is scaled by 2^state_exp, the decays by 2^decay_bits (both > 0 on chip)
    state_exp: int = _num(0, scalar=True)
    decay_bits: int = _num(0, scalar=True)
    # the input nodes summed into the real and the imaginary port (a node may drive both)
    real_inputs: list[str] = _names()
    imag_inputs: list[str] = _names()


QParams = SynapseParams | FoldedParams | CubaParams | SigmaDeltaParams | RFParams
KINDS: dict[str, type] = {c.kind: c for c in (SynapseParams, FoldedParams, CubaParams, SigmaDeltaParams, RFParams)}


def fields_of(p: QParams) -> dict[str, Any]:
    """{field: value} of `p`, every field included (what the quantized graph file stores besides the kind)."""
    return {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}


def from_fields(kind: str, values: dict[str, Any], where: str) -> QParams:
    """The `kind` object holding `values`; ValueError (one line, naming `where` and the field) for an unknown
    kind, a field the kind does not have, or a missing required field."""
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"{where}: unknown quantized parameter kind {kind!r:.40}; expected one of "
                         f"{', '.join(KINDS)}")
    have = {f.name: f for f in dataclasses.fields(cls)}
    for k in values:
        if k not in have:
            raise ValueError(f"{where}: field '{k}' is not a field of kind '{kind}' (its fields: "
                             f"{', '.join(have)})")
    for k, f in have.items():
        if k not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: required field '{k}' of kind '{kind}' is missing")
    return cls(**values)

