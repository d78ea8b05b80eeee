"""The primitives a Graph may hold: one OpSpec per op, with its parameters, shape rule and counts.

Shapes never include the batch or time dimensions. Chip ops are the NIR primitives; host ops are the
few operations NIR and neuromorphic chips cannot run, which spikedeploy keeps visible (they run on the
host and are counted with the host's constants).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spikedeploy.errors import ParameterError, ShapeError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class OpSpec:
    name: str
    family: str  # io | synapse | neuron | shape | host
    required: tuple[str, ...] = ()
    optional: dict[str, object] = field(default_factory=dict)
    spiking: bool = False  # emits binary spikes (LIF, IF, CubaLIF, Threshold)
    graded: bool = False  # emits graded spikes: integer messages, counted as events where nonzero (SigmaDelta)
    stateful: bool = False  # has state carried across time steps (a cycle may pass through it)
    infer: Callable[[object, Shape], Shape] | None = None  # (node, in_shape) -> out_shape
    positive: tuple[str, ...] = ()  # parameters that must be > 0 (time constants)
    max_inputs: int | None = None  # None: any number of edges in, summed
    # how a chip computes it: dense (a weight matrix), diagonal (one weight per element), conv, pool, delay;
    # cuba (Loihi's CUBA neuron), sdnn, rf. None: no chip lowering (io, shape and host ops)
    lowering: str | None = None
    resets: bool = False  # integrate-and-fire with a reset to v_reset after a spike (IF, LIF, CubaLIF)


OPS: dict[str, OpSpec] = {}


def _register(spec: OpSpec) -> None:
    OPS[spec.name] = spec


def _same(node, s: Shape) -> Shape:
    return s


def _neuron_shape(node, s: Shape) -> Shape:
    """Neuron layers take their shape from their parameters when those are not scalars."""
    shp = _param_shape(node)
    if s and shp and tuple(s) != shp and int(np.prod(s)) != int(np.prod(shp)):
        raise ShapeError(
            f"node '{node.name}' ({node.op}): input shape {list(s)} does not match parameter shape "
            f"{list(shp)}; make the preceding layer produce {int(np.prod(shp))} values"
        )
    return tuple(s) if s else shp


def _param_shape(node) -> Shape:
    shapes = [np.shape(node.params[k]) for k in OPS[node.op].required if k in node.params]
    shapes = [s for s in shapes if s not in ((), (1,))]
    return tuple(shapes[0]) if shapes else ()


def _dense(node, s: Shape) -> Shape:
    w = node.params["weight"]
    if w.ndim != 2:
        raise ParameterError(f"node '{node.name}' ({node.op}): weight must be 2-D (out, in), got shape {list(w.shape)}")
    n_in = int(np.prod(s)) if s else w.shape[1]
    if s and (len(s) != 1 or s[0] != w.shape[1]):
        raise ShapeError(
            f"node '{node.name}' ({node.op}): expects input of size {w.shape[1]} (weight {list(w.shape)}), "
            f"got shape {list(s)}; insert a Flatten or fix the weight"
        )
    del n_in
    return (int(w.shape[0]),)


def pair(v, n: int) -> tuple[int, ...]:
    a = np.atleast_1d(np.asarray(v)).astype(np.int64).ravel()
    if a.size == 1:
        a = np.repeat(a, n)
    return tuple(int(x) for x in a[:n])


def conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_params(params, nd: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(stride, padding, dilation) of a Conv node, one int per spatial axis (NIR's defaults 1, 0, 1)."""
    return tuple(pair(d if params.get(k) is None else params[k], nd)
                 for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))


def pool_params(params) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(kernel, stride, padding) of a pooling node; a missing stride means the kernel size (NIR, torch)."""
    k = pair(params["kernel_size"], 2)
    st = params.get("stride")
    pd = params.get("padding")
    return k, (k if st is None else pair(st, 2)), pair(0 if pd is None else pd, 2)


def _conv(nd: int):
    def infer(node, s: Shape) -> Shape:
        w = node.params["weight"]
        if w.ndim != nd + 2:
            raise ParameterError(
                f"node '{node.name}' ({node.op}): weight must have {nd + 2} dims (out, in/groups, k...), got {list(w.shape)}"
            )
        if not s:
            ishp = node.params.get("input_shape")
            if ishp is None or np.size(ishp) == 0:
                raise ShapeError(f"node '{node.name}' ({node.op}): input shape unknown; give the Input node a shape")
            s = (int(w.shape[1] * int(node.params.get("groups", 1))), *pair(ishp, nd))
        if len(s) != nd + 1:
            raise ShapeError(f"node '{node.name}' ({node.op}): expects input (C, {'H, W' if nd == 2 else 'L'}), got {list(s)}")
        groups = int(node.params.get("groups", 1))
        if s[0] != w.shape[1] * groups:
            raise ShapeError(
                f"node '{node.name}' ({node.op}): input has {s[0]} channels, weight expects "
                f"{w.shape[1]}×{groups} groups = {w.shape[1] * groups}"
            )
        k = w.shape[2:]
        st, pd, dl = conv_params(node.params, nd)
        out = tuple(conv_out(s[1 + i], k[i], st[i], pd[i], dl[i]) for i in range(nd))
        if min(out) <= 0:
            raise ShapeError(f"node '{node.name}' ({node.op}): input {list(s)} is smaller than the kernel {list(k)}")
        return (int(w.shape[0]), *out)

    return infer


def _pool(node, s: Shape) -> Shape:
    if len(s) != 3:
        raise ShapeError(f"node '{node.name}' ({node.op}): expects input (C, H, W), got {list(s)}")
    k, st, pd = pool_params(node.params)
    out = tuple(conv_out(s[1 + i], k[i], st[i], pd[i]) for i in range(2))
    if min(out) <= 0:
        raise ShapeError(f"node '{node.name}' ({node.op}): input {list(s)} is smaller than the kernel {list(k)}")
    return (s[0], *out)


def _flatten(node, s: Shape) -> Shape:
    if not s:
        ishp = node.params.get("input_shape")
        s = tuple(int(x) for x in np.asarray(ishp).ravel()) if ishp is not None else ()
    nd = len(s)
    a = int(node.params.get("start_dim", 0))
    b = int(node.params.get("end_dim", -1))
    a = a + nd if a < 0 else a
    b = b + nd if b < 0 else b
    if nd == 0:
        return s
    if not (0 <= a <= b < nd):
        raise ShapeError(f"node '{node.name}' (Flatten): start_dim/end_dim {a}/{b} invalid for input shape {list(s)}")
    return (*s[:a], int(np.prod(s[a : b + 1])), *s[b + 1 :])


def _input(node, s: Shape) -> Shape:
    return tuple(int(x) for x in np.asarray(node.params["shape"]).ravel())


# Input / Output
_register(OpSpec("Input", "io", required=("shape",), infer=_input, max_inputs=0))
_register(OpSpec("Output", "io", infer=_same))
# Synapses
_register(OpSpec("Affine", "synapse", required=("weight", "bias"), infer=_dense, lowering="dense"))
_register(OpSpec("Linear", "synapse", required=("weight",), infer=_dense, lowering="dense"))
_register(OpSpec("Scale", "synapse", required=("scale",), infer=_same, lowering="diagonal"))
_register(
    OpSpec("Conv1d", "synapse", required=("weight",),
           optional={"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": None, "input_shape": None},
           infer=_conv(1), lowering="conv")
)
_register(
    OpSpec("Conv2d", "synapse", required=("weight",),
           optional={"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": None, "input_shape": None},
           infer=_conv(2), lowering="conv")
)
_register(OpSpec("SumPool2d", "synapse", required=("kernel_size",), optional={"stride": None, "padding": 0}, infer=_pool,
                        lowering="pool"))
_register(OpSpec("AvgPool2d", "synapse", required=("kernel_size",), optional={"stride": None, "padding": 0}, infer=_pool,
                        lowering="pool"))
_register(OpSpec("Delay", "synapse", required=("delay",), infer=_same, stateful=True, lowering="delay"))
# Shape
_register(OpSpec("Flatten", "shape", optional={"start_dim": 0, "end_dim": -1, "input_shape": None}, infer=_flatten))
# Neurons
_register(OpSpec("Threshold", "neuron", required=("threshold",), spiking=True, infer=_neuron_shape, lowering="cuba"))
_register(OpSpec("I", "neuron", required=("r",), stateful=True, infer=_neuron_shape, lowering="cuba"))
_register(
    OpSpec("IF", "neuron", required=("r", "v_threshold"), optional={"v_reset": 0.0},
           spiking=True, stateful=True, infer=_neuron_shape, lowering="cuba", resets=True)
)
_register(
    OpSpec("LI", "neuron", required=("tau", "r", "v_leak"), stateful=True, infer=_neuron_shape, positive=("tau",),
           lowering="cuba")
)
_register(
    OpSpec("LIF", "neuron", required=("tau", "r", "v_leak", "v_threshold"), optional={"v_reset": 0.0},
           spiking=True, stateful=True, infer=_neuron_shape, positive=("tau",), lowering="cuba", resets=True)
)
_register(
    OpSpec("CubaLI", "neuron", required=("tau_syn", "tau_mem", "r", "v_leak"), optional={"w_in": 1.0},
           stateful=True, infer=_neuron_shape, positive=("tau_syn", "tau_mem"), lowering="cuba")
)
_register(
    OpSpec("CubaLIF", "neuron", required=("tau_syn", "tau_mem", "r", "v_leak", "v_threshold"),
           optional={"w_in": 1.0, "v_reset": 0.0}, spiking=True, stateful=True, infer=_neuron_shape,
           positive=("tau_syn", "tau_mem"), lowering="cuba", resets=True)
)
# Sigma-delta neuron (Loihi 2 / Lava lava.proc.sdn, lava-dl SDNN): graded spikes, see
# targets/emulator/sdnn.py for the fixed-point rule and the float view of these parameters.
_register(
    OpSpec("SigmaDelta", "neuron", required=("v_threshold",),
           optional={"bias": 0.0, "relu": 1, "sigma": 1, "delta": 1, "in_scale": 1.0, "out_scale": 1.0},
           graded=True, stateful=True, infer=_neuron_shape, lowering="sdnn")
)
# Resonate-and-fire neuron (Lava lava.proc.rf RF, lava.proc.rf_iz RF_IZ): a complex state driven through two
# input ports; which inputs drive the real and the imaginary part is in the QGraph's q (targets/emulator/rf.py).
_register(
    OpSpec("RF", "neuron", required=("period", "alpha", "v_threshold"), optional={"izhikevich": 0},
           spiking=True, stateful=True, infer=_neuron_shape, lowering="rf")
)

# Host-side ops: what neither NIR nor the chip can run. Their semantics live with the converters that
# create them (ONNX export) and the float backend; here they only need shapes and identities.
HOST_OPS = (
    "Mul",  # elementwise product of two signals (spike x spike attention, gating)
    "MatMul",  # product of two signals (Q @ K^T)
    "LayerNorm",
    "Softmax",
    "MaxPool2d",  # max pooling of analog values
    "Embedding",  # token lookup
    "Readout",  # learned per-time-step readout
    "CosineSimilarity",  # similarity head against a gallery
    "Concat",
    "HostOp",  # any other torch op run on the host (allow_approximate export); node.meta["torch"] names it
)
for _op in HOST_OPS:
    _register(OpSpec(_op, "host", optional={"out_shape": None}, infer=None))




def ops_where(pred: Callable[[OpSpec], bool]) -> frozenset[str]:
    return frozenset(n for n, s in OPS.items() if pred(s))


# Classes of ops, derived from the specs above: the rest of the code asks these and never lists op names.
IO = ops_where(lambda s: s.family == "io")  # Input, Output
DENSE = ops_where(lambda s: s.lowering == "dense")  # Affine, Linear
MATRIX = ops_where(lambda s: s.lowering in ("dense", "diagonal"))  # + Scale: one weight matrix on chip
CONV = ops_where(lambda s: s.lowering == "conv")  # Conv1d, Conv2d
POOL = ops_where(lambda s: s.lowering == "pool")  # SumPool2d, AvgPool2d
SPATIAL = CONV | POOL
ONE_TO_ONE = ops_where(lambda s: s.lowering in ("diagonal", "delay"))  # Scale, Delay
WEIGHTED = ops_where(lambda s: "weight" in s.required)  # Affine, Linear, Conv1d, Conv2d
BIASED = ops_where(lambda s: s.family == "synapse" and ("bias" in s.required or "bias" in s.optional))
RESETTING = ops_where(lambda s: s.resets)  # IF, LIF, CubaLIF
CUBA = ops_where(lambda s: s.lowering == "cuba")  # Loihi's CUBA neuron computes these
CUBA_SPIKING = ops_where(lambda s: s.lowering == "cuba" and s.spiking)  # RESETTING + Threshold
LEAKY = ops_where(lambda s: bool({"tau", "tau_mem"} & set(s.required)))  # LI, LIF, CubaLI, CubaLIF
CURRENT_BASED = ops_where(lambda s: "tau_syn" in s.required)  # CubaLI, CubaLIF: a synaptic current state
MEMBRANE_ONLY = LEAKY - CURRENT_BASED  # LI, LIF


def is_neuron(op: str) -> bool:
    return OPS[op].family == "neuron"


def synapse_count(node, in_shape: Shape, out_shape: Shape) -> int:
    """Number of (source neuron, target neuron) connections, padding taps excluded."""
    p = node.params
    if node.op in DENSE:
        return int(p["weight"].size)
    if node.op == "Scale":  # one-to-one connection per element
        return int(np.prod(out_shape))
    if node.op == "Delay":  # a property of the synapses it follows (DelayDense), not synapses of its own
        return 0
    if node.op in CONV:
        nd = 1 if node.op == "Conv1d" else 2
        w = p["weight"]
        k = w.shape[2:]
        st, pd, dl = conv_params(p, nd)
        taps = 1
        for i in range(nd):
            taps *= _valid_taps(in_shape[1 + i], out_shape[1 + i], k[i], st[i], pd[i], dl[i])
        return int(out_shape[0] * w.shape[1] * taps)
    if node.op in POOL:
        k, st, pd = pool_params(p)
        taps = 1
        for i in range(2):
            taps *= _valid_taps(in_shape[1 + i], out_shape[1 + i], k[i], st[i], pd[i], 1)
        return int(out_shape[0] * taps)
    return 0


def _valid_taps(n_in: int, n_out: int, k: int, s: int, p: int, d: int) -> int:
    """Sum over output positions of kernel taps that land inside the (unpadded) input, along one axis."""
    o = np.arange(n_out)[:, None] * s - p + np.arange(k)[None, :] * d
    return int(((o >= 0) & (o < n_in)).sum())
