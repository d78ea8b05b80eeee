"""lava-dl netx `.net` files (HDF5) <-> QGraph for the loihi2 target.

Reading (`read_netx`) reproduces what `lava.lib.dl.netx.hdf5.Network` builds (lava-dl 0.6.0,
hdf5.py / blocks/process.py / utils.py), without importing Lava:

    layer types   input, dense, dense_rec, conv, flatten; anything else (pool, average, concat, convT,
                  unpool, dense_comp) is refused, as netx itself fails on them (NotImplementedError; for dense_comp an
                  undefined create_complex_dense).
                  `num_layers` reads only the first layers, like Network(num_layers=...).
    neurons       CUBA / LOIHI -> Lava LIF: du = iDecay - 1, dv = vDecay, vth = vThMant,
                  bias_mant = int(bias) (per neuron; conv bias per channel), bias_exp = 6.
                  A dense layer with no neuron group gets netx's default (iDecay 0 -> du = -1,
                  vDecay 4096, vThMant 1 << 17). SDNN -> SigmaDelta nodes (converters/netx_sdnn.py).
                  RF neurons are refused.
    weights       read as netx does (`.astype(int)`: floats are truncated). Dense weights go through
                  netx's `optimize_weight_bits` (reimplemented below, lossless unless netx clips), so
                  q holds the shifted mantissas, num_weight_bits, weight_exp and sign_mode Lava's
                  Dense gets. Conv weights pass unchanged (weight_exp 0, 8 bits; Lava's Conv ignores both).
    delays        dense `delay` (scalar, per output, per input or per synapse; clamped to 62 with a
                  warning as netx does) -> q[synapse].delay (out, in), the DelayDense delays.

The integer parameters are in `QGraph.q` (contract: spikedeploy/graph/qparams.py), in the Graph's CHW layout
(Lava's neurons are WHC: transpose when building Lava processes).

The float Graph (`QGraph.graph`, dt = 1, reset to zero) is a *view* of the same network, with
v_float = v_int / 64 (so QGraph.scale = 1 for every neuron):

    input layer        Input "input" (shape as stored, CHW)
    input with neuron  Input -> CubaLIF "0.neuron" (the input enters as current, weight 1).
                       Lava never connects this neuron's input port: it is driven only by bias_mant,
                       which the user sets per sample (q["0.neuron"].input_mode = "bias", and
                       input_weight, input_bias as the file's transform stores them;
                       q's bias_mant is 0, Lava's default).
    dense / conv       Linear "<i>.dense" / Conv2d "<i>.conv" (weight = mantissa * 2**weight_exp)
                       -> CubaLIF "<i>.neuron" with k_s = du/4096, k_m = dv/4096:
                       tau_syn = 1/k_s, w_in = 1/k_s, tau_mem = 1/k_m, r = 1/k_m,
                       v_leak = bias_mant * 2**(bias_exp-6) / k_m, v_threshold = vth, v_reset = 0.
                       du <= 0 or dv == 0 (no decay) use k = 2**-30 (recorded in meta["view_notes"]).
    dense_rec          also Linear "<i>.rec" from the neuron back to itself (same exponent as netx uses)
    delays             a Delay node ("<i>.delay") before (per-input) or after (per-output) the Linear;
                       q["<i>.delay"] = FoldedParams("<i>.dense"): backends that use q take the delay
                       from the synapse's q and skip the node; float backends simulate the node.
    flatten            Flatten "<i>.flatten" (CHW order, as netx's transpose([2, 1, 0]).flatten()).

Writing (`write_netx`, below the reader) is the inverse for QGraphs that netx can run exactly (one chain of
dense/conv layers; dense arithmetic that is an exact integer sum; biases in whole weight units, i.e.
bias_exp 6; one du/dv/vth per layer); anything else is refused with UnsupportedError naming the node.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spikedeploy.checks.limits import check_shape, check_stored_array
from spikedeploy.checks.netx import check_netx_layers
from spikedeploy.converters.netx_sdnn import is_sdnn, sdnn_params, sdnn_q
from spikedeploy.errors import FileFormatError, RepairWarning, SpikeDeployError, UnsupportedError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.ops import CUBA, DENSE, conv_params
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import (
    PROGRAMMABLE,
    CubaParams,
    FoldedParams,
    QParams,
    SigmaDeltaParams,
    SynapseParams,
)

# netx defaults and constants (lava-dl 0.6.0).
NETX_BIAS_EXP = 6  # hdf5.py get_neuron_params: 'bias_exp': 6
NETX_MAX_DELAY = 62  # hdf5.py create_dense: delays clamped to 62 (DelayDense max_delay=62)
NETX_INPUT_WEIGHT = 64  # hdf5.py create_input: transform weight default
# hdf5.py create_dense: a dense layer without a neuron group is a non-leaky integrator.
NETX_DEFAULT_NEURON = {"type": "CUBA", "iDecay": 0, "vDecay": 4096, "vThMant": 1 << 18 - 1}
_NO_DECAY_K = 2.0**-30  # float-view stand-in for "no decay" (tau would be infinite)

SUPPORTED_LAYERS = ("input", "dense", "dense_rec", "conv", "flatten")
_REFUSED_LAYERS = {
    "pool": "pooling", "average": "average readout", "concat": "concatenation", "convT": "transposed convolution",
    "unpool": "unpooling", "dense_comp": "complex dense, resonate-and-fire",
}
_SIGN_MODES = {1: "mixed", 2: "exc", 3: "inh"}


# ================================================================================================
# netx's weight optimisation (lava/lib/dl/netx/utils.py optimize_weight_bits), without Lava.
# ================================================================================================
def optimize_weight_bits(weight: np.ndarray) -> tuple[np.ndarray, int, int, str, list[str]]:
    """(weight mantissas, num_weight_bits, weight_exp, sign_mode, notes), exactly as netx computes them.

    netx shifts the weights left as far as 8 bits allow and sets a negative exponent, so the product
    mantissa * 2**weight_exp equals the stored weight unless netx had to clip (noted).
    """
    w = np.asarray(weight).astype(np.int64)
    notes: list[str] = []
    if w.size == 0:
        return w, 8, 0, "exc", ["no weights"]
    max_w, min_w = int(w.max()), int(w.min())
    if max_w > 254 and min_w < 0:
        notes.append(f"weights above 254 (max {max_w}) clipped to [-256, 254] as netx does")
        w = np.clip(w, -256, 254)
        max_w = int(w.max())
    if min_w < -256 and max_w > 0:
        notes.append(f"weights below -256 (min {min_w}) clipped to [-256, 254] as netx does")
        w = np.clip(w, -256, 254)
        min_w = int(w.min())
    if max_w == 0 and min_w == 0:
        # netx divides by zero here (and fails); an all-zero matrix needs no optimisation.
        return w, 8, 0, "exc", ["all weights are zero"]
    if max_w < 0:
        sign, is_signed, scale = 3, 0, -256 / min_w
    elif min_w >= 0:
        sign, is_signed, scale = 2, 0, 255 / max_w
    else:
        sign, is_signed = 1, 1
        scale = min(127 / max_w if max_w else np.inf, -128 / min_w)  # netx: 127/0 -> inf
    scale_bits = int(np.floor(np.log2(scale))) + is_signed
    n = 8
    while n > 0:
        if np.sum(np.abs(w / (2**n) - np.round(w / (2**n)))) == 0:
            break
        n -= 1
    n -= is_signed
    num_weight_bits = 8 - scale_bits - n
    weight_exp = -scale_bits
    shifted = np.left_shift(w.astype(np.int32), scale_bits).astype(np.int64)
    return shifted, int(num_weight_bits), int(weight_exp), _SIGN_MODES[sign], notes


# ================================================================================================
# Reader
# ================================================================================================
def read_netx(path: str | Path, *, num_layers: int | None = None,
              input_shape: tuple[int, ...] | None = None) -> QGraph:
    """QGraph (target "loihi2") of a lava-dl netx .net file; see the module docstring for the mapping.

    `num_layers` reads only the first layers and `input_shape` (C, H, W) or (N,) gives the input of a
    file without an input layer, as the same arguments of lava-dl's `netx.hdf5.Network` do (a file
    starting with a dense layer takes its input size from the weights).
    """
    from spikedeploy.io.graph_files import read_hdf5

    path = Path(path)
    layers, sim = read_hdf5(
        path, what="a lava-dl netx (.net) file", group="layer", hint="export it with lava-dl's export_hdf5",
        read=lambda f: (_read_layers(f["layer"], path),
                        {k: _plain(v[()]) for k, v in f["simulation"].items()} if "simulation" in f else {}))
    if num_layers is not None:
        layers = layers[: int(num_layers)]
    check_netx_layers(layers, path)
    return _Builder(path, sim, input_shape).build(layers)


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("ascii", "replace")
    if isinstance(v, np.ndarray) and v.dtype.kind == "S":
        return [x.decode("ascii", "replace") for x in v.ravel()]
    return v


def _read_layers(group, path: Path) -> list[dict]:
    import h5py

    idx = []
    for k in group.keys():
        if not k.isdigit():
            raise FileFormatError(f"{path}: netx layer group '{k}' is not a layer index")
        idx.append(int(k))
    if sorted(idx) != list(range(len(idx))):
        raise FileFormatError(f"{path}: netx layers are {sorted(idx)}, expected 0..{len(idx) - 1}")

    def read(g) -> dict:
        out = {}
        for k, item in g.items():
            if not isinstance(item, h5py.Group | h5py.Dataset):  # a dangling link or named datatype
                raise KeyError(f"'{k}' in {g.name} cannot be read")
            if not isinstance(item, h5py.Group):
                check_stored_array(path, item.name, item.shape or (), item.dtype.itemsize)
            out[k] = read(item) if isinstance(item, h5py.Group) else item[()]
        return out

    return [read(group[str(i)]) for i in range(len(idx))]


def _str(v: Any) -> str:
    """netx's NetDict: 'type' is a (1,) bytes array (value[0]) or a scalar."""
    if isinstance(v, np.ndarray):
        v = v.ravel()[0] if v.size else b""
    return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)


class _Builder:
    def __init__(self, path: Path, sim: dict, input_shape: tuple[int, ...] | None = None) -> None:
        self.path = path
        self.input_shape = input_shape
        self.g = Graph(dt=1.0, reset="zero", reset_delay=False)
        self.q: dict[str, QParams] = {}
        self.scale: dict[str, float] = {}
        self.deviations: list[str] = []
        self.notes: list[str] = []
        self.sim = sim
        self.prev: str | None = None  # node whose output feeds the next layer
        self.flatten_next = False

    # ---- helpers -----------------------------------------------------------------------------
    def err(self, i: int, kind: str, msg: str, cls=FileFormatError) -> SpikeDeployError:
        return cls(f"{self.path}: layer {i} ({kind}): {msg}")

    def add(self, node: Node, src: str | None = None) -> str:
        self.g.add(node)
        if src is not None:
            self.g.connect(src, node.name)
        return node.name

    def out_shape(self, name: str) -> tuple[int, ...]:
        self.g.infer_shapes()
        return tuple(self.g.nodes[name].out_shape)

    # ---- layers -------------------------------------------------------------------------------
    def build(self, layers: list[dict]) -> QGraph:
        if not layers:
            raise FileFormatError(f"{self.path}: netx file has no layers")
        if _str(layers[0].get("type", b"?")) != "input":
            shape = self.input_shape
            if shape is None and _str(layers[0].get("type", b"?")) in ("dense", "dense_rec") and "weight" in layers[0]:
                w = np.asarray(layers[0]["weight"])
                n = int(np.prod(np.asarray(layers[0].get("shape", w.shape[:1]))))
                shape = (int(w.size // n),)
            if shape is not None:
                shape = check_shape(shape, f"{self.path}: input of layer 0")
            if shape is None:
                raise FileFormatError(f"{self.path}: netx file has no input layer and the input shape cannot be "
                                      "inferred; pass input_shape=(C, H, W) to read_netx")
            self.add(Node("input", "Input", params={"shape": np.asarray(shape, dtype=np.int64)}))
            self.prev = "input"
        for i, lc in enumerate(layers):
            kind = _str(lc.get("type", b"?"))
            if kind in _REFUSED_LAYERS:
                hint = (f"; read the first {i} layers: read_netx(path, num_layers={i}), or --netx-layers {i} on "
                        "the command line (lava-dl's own tests do the same)") if i > 1 else ""
                fails = ("calls a create_complex_dense it does not define" if kind == "dense_comp"
                         else "raises NotImplementedError")  # lava-dl 0.6.0 hdf5.py _create
                raise self.err(i, kind, f"'{kind}' layers ({_REFUSED_LAYERS[kind]}) are not supported (lava-dl netx "
                                        f"itself {fails} for them){hint}", UnsupportedError)
            if kind not in SUPPORTED_LAYERS:
                raise self.err(i, kind, f"unknown netx layer type; supported: {', '.join(SUPPORTED_LAYERS)}")
            if "neuron" in lc:
                self.check_neuron(i, kind, lc["neuron"])
            try:
                getattr(self, f"layer_{kind}")(i, lc)
            except KeyError as e:
                raise self.err(i, kind, f"missing dataset {e}; the file is incomplete") from e
        if self.prev is None or self.prev == "input" and len(self.g.nodes) == 1:
            raise FileFormatError(f"{self.path}: netx file has only an input layer; nothing to run")
        self.add(Node("output", "Output"), self.prev)
        try:
            self.g.validate()
        except SpikeDeployError as e:
            raise type(e)(f"{self.path}: {e}") from e
        self.g.meta.update({"format": "netx", "source_file": str(self.path),
                            "provenance": {"format": "netx", "file": self.path.name, "tool": "lava-dl"}})
        if self.notes:
            self.g.meta["view_notes"] = list(self.notes)
        if self.sim:
            self.g.meta["netx_simulation"] = {k: (int(v) if np.isscalar(v) else v) for k, v in self.sim.items()}
        for d in self.deviations:
            warnings.warn(d, RepairWarning, stacklevel=3)
        return QGraph(graph=self.g, target="loihi2", q=self.q, scale=self.scale, deviations=list(self.deviations),
                      meta={"format": "netx", "source_file": str(self.path), "weights": "netx-optimized"})

    def check_neuron(self, i: int, kind: str, nc: dict) -> None:
        t = _str(nc.get("type", b"?"))
        if t == "SDNN":
            return
        if t in ("CUBA", "LOIHI"):
            for k in ("iDecay", "vDecay", "vThMant"):
                if k not in nc:
                    raise self.err(i, kind, f"neuron group lacks '{k}'")
            return
        what = "resonate-and-fire (RF)" if "RF" in t else f"'{t}'"
        raise self.err(i, kind, f"neuron type {what} is not supported; spikedeploy maps CUBA/LOIHI spiking "
                                "neurons (Lava LIF) and SDNN sigma-delta neurons only", UnsupportedError)

    def layer_input(self, i: int, lc: dict) -> None:
        if self.prev is not None:
            raise self.err(i, "input", "an input layer after other layers is not supported")
        shape = check_shape(np.asarray(lc["shape"]).ravel(), f"{self.path}: layer {i} (input)")
        self.add(Node("input", "Input", params={"shape": np.asarray(shape, dtype=np.int64)}))
        self.prev = "input"
        if "neuron" not in lc:
            return
        if is_sdnn(lc["neuron"]):  # Lava Delta: the graded input drives its a_in (converters/netx_sdnn.py)
            self.neuron(i, shape, self.neuron_q(i, "input", lc["neuron"], shape, None, input_layer=True), "input")
            return
        # Lava builds an Input block: a LIF whose input port is never connected; its drive is bias_mant,
        # which the user computes on the host from the sample (the file's transform weight and bias).
        w = int(np.asarray(lc["weight"]).ravel()[0]) if "weight" in lc else NETX_INPUT_WEIGHT
        b = int(np.asarray(lc["bias"]).ravel()[0]) if "bias" in lc else 0
        nq = self.neuron_q(i, "input", lc["neuron"], shape, bias=None)
        nq.input_mode, nq.input_weight, nq.input_bias = "bias", w, b
        self.neuron(i, shape, nq, "input")

    def layer_flatten(self, i: int, lc: dict) -> None:
        if self.prev is None:
            raise self.err(i, "flatten", "flatten before any input or layer")
        self.flatten_next = True

    def _flatten_if_needed(self, i: int) -> None:
        shp = self.out_shape(self.prev)
        if self.flatten_next or len(shp) > 1:
            if len(shp) > 1:
                self.prev = self.add(Node(f"{i - 1 if self.flatten_next else i}.flatten", "Flatten",
                                          params={"start_dim": 0, "end_dim": -1}), self.prev)
            self.flatten_next = False

    def layer_dense(self, i: int, lc: dict, rec: bool = False) -> None:
        kind = "dense_rec" if rec else "dense"
        if self.prev is None:
            raise self.err(i, kind, "a dense layer needs an input layer before it (give the input shape)")
        n = int(np.prod(np.asarray(lc["shape"])))
        w = _int_weights(lc["weight"])
        if w.ndim == 1:
            w = w.reshape(n, -1)
        if w.ndim != 2 or w.shape[0] != n:
            raise self.err(i, kind, f"weight shape {list(w.shape)} does not match the layer's {n} neurons")
        self._flatten_if_needed(i)
        n_in = int(np.prod(self.out_shape(self.prev)))
        if w.shape[1] != n_in:
            raise self.err(i, kind, f"weight expects {w.shape[1]} inputs but the previous layer gives {n_in}",
                           cls=FileFormatError)
        if rec:
            wr = _int_weights(lc["weight_rec"])
            wr = wr.reshape(n, -1) if wr.ndim == 1 else wr
            if wr.shape != (n, n):
                raise self.err(i, kind, f"weight_rec shape {list(wr.shape)} is not ({n}, {n})")
            qw, nwb, wexp, sign, notes = optimize_weight_bits(np.hstack((w, wr)))
            qw, qwr = qw[:, : w.shape[1]], qw[:, w.shape[1]:]
        else:
            qw, nwb, wexp, sign, notes = optimize_weight_bits(w)
        self.deviations += [f"{self.path.name}: layer {i} ({kind}): {s}" for s in notes if "clipped" in s]

        delay_q = None
        pre_delay = post_delay = None
        if "delay" in lc:
            delay_q, pre_delay, post_delay = self.delays(i, kind, lc["delay"], qw.shape)
        src = self.prev
        syn = f"{i}.dense"
        if pre_delay is not None:
            src = self.add(Node(f"{i}.delay", "Delay", params={"delay": pre_delay.astype(np.float64)}), src)
        self.add(Node(syn, "Linear", params={"weight": _view_weight(qw, wexp)}), src)
        self.q[syn] = SynapseParams(weight=qw, weight_exp=wexp, num_weight_bits=nwb, sign_mode=sign, delay=delay_q)
        if delay_q is not None:
            self.q[f"{i}.delay"] = FoldedParams(folded_into=syn)
        last = syn
        if post_delay is not None:
            last = self.add(Node(f"{i}.delay", "Delay", params={"delay": post_delay.astype(np.float64)}), syn)
        nc = lc.get("neuron", NETX_DEFAULT_NEURON)
        if "neuron" not in lc:
            self.notes.append(f"layer {i} ({kind}) has no neuron group: netx's default non-leaky integrator "
                              "(iDecay 0 -> du = -1, vDecay 4096, vThMant 2**17)")
        bias = self.bias(i, kind, lc, (n,))
        nq = self.neuron_q(i, kind, nc, (n,), bias)
        neuron = self.neuron(i, (n,), nq, last)
        if rec:
            r = self.add(Node(f"{i}.rec", "Linear", params={"weight": _view_weight(qwr, wexp)}), neuron)
            self.g.connect(r, neuron)
            self.q[r] = SynapseParams(weight=qwr, weight_exp=wexp, num_weight_bits=nwb, sign_mode=sign)

    def layer_dense_rec(self, i: int, lc: dict) -> None:
        self.layer_dense(i, lc, rec=True)

    def layer_conv(self, i: int, lc: dict) -> None:
        if self.prev is None:
            raise self.err(i, "conv", "a conv layer needs an input layer before it (give the input shape)")
        if self.flatten_next:
            raise self.err(i, "conv", "conv after flatten is not supported", UnsupportedError)
        w = _int_weights(lc["weight"])
        if w.ndim == 5:
            if w.shape[4] != 1:
                raise self.err(i, "conv", f"3-D kernels (weight {list(w.shape)}) are not supported", UnsupportedError)
            w = w.reshape(w.shape[:4])
        if w.ndim != 4:
            raise self.err(i, "conv", f"weight has shape {list(w.shape)}; expected (out, in/groups, kH, kW)")
        params = {"weight": w.astype(np.float32)}
        for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)):
            v = np.asarray(lc.get(k, d), dtype=np.int64).ravel()
            params[k] = np.repeat(v, 2) if v.size == 1 else v[:2]
        params["groups"] = np.asarray(int(np.asarray(lc.get("groups", 1)).ravel()[0]), dtype=np.int64)
        name = self.add(Node(f"{i}.conv", "Conv2d", params=params), self.prev)
        try:
            got = self.out_shape(name)
        except SpikeDeployError as e:
            raise self.err(i, "conv", str(e)) from e
        want = tuple(int(x) for x in np.asarray(lc["shape"]).ravel())
        if got != want:
            raise self.err(i, "conv", f"stored output shape {list(want)} differs from the computed {list(got)}")
        self.q[name] = SynapseParams(weight=w, weight_exp=0, num_weight_bits=8, sign_mode=None)
        bias = self.bias(i, "conv", lc, got)
        nq = self.neuron_q(i, "conv", lc["neuron"], got, bias)
        self.neuron(i, got, nq, name)

    def bias(self, i: int, kind: str, lc: dict, shape: tuple[int, ...]) -> np.ndarray | None:
        try:
            return _bias(lc, shape)
        except ValueError as e:
            raise self.err(i, kind, str(e)) from e

    # ---- neurons ------------------------------------------------------------------------------
    def neuron_q(self, i: int, kind: str, nc: dict, shape: tuple[int, ...], bias: np.ndarray | None,
                 input_layer: bool = False) -> CubaParams | SigmaDeltaParams:
        if is_sdnn(nc):
            return sdnn_q(nc, shape, bias, input_layer=input_layer, where=f"{self.path}: layer {i} ({kind})")
        du = self.decay(i, kind, nc["iDecay"], shape) - 1
        dv = self.decay(i, kind, nc["vDecay"], shape)
        vth = int(np.asarray(nc["vThMant"]).ravel()[0])
        bm = np.zeros(shape, np.int64) if bias is None else bias
        return CubaParams(du=du, dv=dv, vth=vth, bias_mant=bm, bias_exp=NETX_BIAS_EXP)

    def decay(self, i: int, kind: str, d, shape: tuple[int, ...]):
        """One decay for the layer (an int), or one per neuron (an int64 array of the layer's shape)."""
        d = np.asarray(d).astype(np.int64).ravel()
        if d.size == 1 or np.all(d == d[0]):
            return int(d[0])
        n = int(np.prod(shape))
        if d.size != n:
            raise self.err(i, kind, f"{d.size} per-neuron decays for {n} neurons; give one or one per neuron")
        return d.reshape(shape)

    def neuron(self, i: int, shape: tuple[int, ...], nq: CubaParams | SigmaDeltaParams, src: str) -> str:
        if isinstance(nq, SigmaDeltaParams):
            name = self.add(Node(f"{i}.neuron", "SigmaDelta", params=sdnn_params(nq, shape)), src)
            self.q[name], self.scale[name], self.prev = nq, 1.0, name
            return name
        du, dv, vth = nq.du, nq.dv, nq.vth
        ks = np.where(np.asarray(du) > 0, np.asarray(du) / 4096, _NO_DECAY_K)
        km = np.where(np.asarray(dv) > 0, np.asarray(dv) / 4096, _NO_DECAY_K)
        if np.any(np.asarray(du) <= 0):
            self.notes.append(f"layer {i}: du = {np.min(du)} (no current decay) shown as tau_syn = 2**30 steps")
        if np.any(np.asarray(dv) <= 0):
            self.notes.append(f"layer {i}: dv = {np.min(dv)} (no voltage decay) shown as tau_mem = 2**30 steps")
        bias = nq.bias_mant
        full = np.ones(shape, np.float64)
        params = {
            "tau_syn": full / ks, "tau_mem": full / km, "r": full / km, "w_in": full / ks,
            "v_leak": bias.astype(np.float64) * 2.0 ** (nq.bias_exp - 6) / km,
            "v_threshold": full * float(vth), "v_reset": np.zeros(shape, np.float64),
        }
        name = self.add(Node(f"{i}.neuron", "CubaLIF", params=params), src)
        self.q[name] = nq
        self.scale[name] = 1.0
        self.prev = name
        return name

    def delays(self, i: int, kind: str, d: Any, wshape: tuple[int, int]):
        """DelayDense delays (out, in) as netx builds them, and the elementwise view (before or after)."""
        d = np.asarray(d)
        if d.size and d.max() > NETX_MAX_DELAY:
            self.deviations.append(f"{self.path.name}: layer {i} ({kind}): delays up to {d.max():g} clamped to "
                                   f"{NETX_MAX_DELAY} as netx does")
            d = np.clip(d, 0, NETX_MAX_DELAY)
        if np.any(d < 0):
            raise self.err(i, kind, f"negative delay {d.min():g}")
        out, inp = wshape
        pre = post = None
        if d.ndim == 0:
            full = np.full(wshape, d[()])
            post = np.full(out, d[()])
        elif d.ndim == 1 and d.size == out:  # netx checks the axonal case first
            full = np.repeat(d.reshape(-1, 1), inp, axis=1)
            post = d
        elif d.ndim == 1 and d.size == inp:
            full = np.repeat(d.reshape(1, -1), out, axis=0)
            pre = d
        elif d.shape == wshape:
            full = d
            if np.all(d == d[:, :1]):
                post = d[:, 0]
            elif np.all(d == d[:1, :]):
                pre = d[0, :]
            else:
                raise self.err(i, kind, "per-synapse delays that differ within rows and columns cannot be shown in "
                                        "the float graph (NIR Delay is elementwise)", UnsupportedError)
        else:
            raise self.err(i, kind, f"delay of shape {list(d.shape)} is incompatible with weight {list(wshape)}")
        if not np.array_equal(full, np.trunc(full)):
            self.deviations.append(f"{self.path.name}: layer {i} ({kind}): fractional delays truncated as netx does")
        def steps(a):
            return None if a is None else np.trunc(a).astype(np.int64)

        return full.astype(np.int64), steps(pre), steps(post)


def _int_weights(w: Any) -> np.ndarray:
    # netx NetDict: weight[()].astype(int) -> truncation toward zero
    return np.asarray(w).astype(np.int64)


def _view_weight(qw: np.ndarray, wexp: int) -> np.ndarray:
    return (qw.astype(np.float64) * 2.0**wexp).astype(np.float32)


def _bias(lc: dict, shape: tuple[int, ...]) -> np.ndarray | None:
    """netx's bias_mant: per neuron for dense, per channel (broadcast over H, W) for conv, cast to int32."""
    if "bias" not in lc:
        return None
    b = np.asarray(lc["bias"]).astype(np.int64)
    if len(shape) == 1 or b.size == 1 and b.ndim == 0:
        out = np.broadcast_to(b.reshape(-1) if b.size == shape[0] else b, shape)
    elif b.shape == shape:
        out = b
    elif b.size == shape[0]:
        out = np.broadcast_to(b.reshape(-1, 1, 1), shape)
    else:
        raise ValueError(f"bias of shape {list(b.shape)} cannot be broadcast to neurons {list(shape)}")
    return np.asarray(out).astype(np.int32).astype(np.int64)


# ================================================================================================
# Writer
# ================================================================================================
# What a netx file can hold, and so what write_netx refuses (lava-fixed-point.md §3):
#   - one chain: input -> (dense | conv) + neuron group -> ... with flatten between conv and dense;
#   - netx recomputes the dense exponent (optimize_weight_bits): the file holds integers W and Lava then
#     computes the exact sum W·s, so a QGraph layer is written only if its arithmetic is an exact integer
#     sum (weight_exp >= 0: W << exp; weight_exp < 0: exact only where the dropped low bits of each row
#     can never carry into the floored sum, for binary spikes);
#   - bias_exp is fixed at 6 (bias = bias_mant << 6), one iDecay/vDecay/vThMant per layer, no LIFReset.
_NETX_NEURONS = CUBA - {"I"}  # netx's CUBA neuron has a decay; a pure integrator has no netx form


def write_netx(qg: QGraph, path: str | Path) -> Path:
    """Write `qg` (target loihi2) as a lava-dl netx `.net` file that `netx.hdf5.Network` runs bit for bit
    like the QGraph (spikes in, binary spikes between layers). Atomic. Returns the path.

    Raises UnsupportedError naming the node when netx cannot represent the QGraph exactly.
    """
    from spikedeploy.io.atomic import atomic_path

    path = Path(path)
    layers = netx_layers(qg)
    with atomic_path(path) as tmp:
        _write_h5(tmp, layers, qg)
    return path


def netx_layers(qg: QGraph) -> list[dict[str, Any]]:
    """The netx layer groups of `qg` as {dataset: value} dicts (a 'neuron' entry is the neuron group)."""
    if qg.target != "loihi2":
        raise UnsupportedError(f"netx files run on Lava's Loihi 2 model; this QGraph is quantized for "
                               f"'{qg.target}'; fix: quantize for 'loihi2'")
    late = sorted(n for n, q in qg.q.items() if isinstance(q, CubaParams) and q.bias_onset)
    if late:
        raise UnsupportedError(
            f"node '{late[0]}': its bias waits {int(qg.q[late[0]].bias_onset)} step(s) for its first input "
            "(bias_onset='depth'), and netx runs every bias from step 0; fix: quantize with bias_onset='step0' "
            "(CLI: --bias-onset step0; quantize --netx does it)")
    return _NetxWriter(qg).layers()


class _NetxWriter:
    def __init__(self, qg: QGraph) -> None:
        self.qg = qg
        self.g = qg.graph
        if any(n.out_shape is None for n in self.g.nodes.values()):
            self.g.infer_shapes()

    def q(self, name: str) -> QParams:
        if name not in self.qg.q:
            raise UnsupportedError(f"node '{name}' ({self.g.nodes[name].op}) has no quantized parameters in the QGraph")
        return self.qg.q[name]

    def synapse(self, name: str) -> SynapseParams:
        q = self.q(name)
        if not isinstance(q, SynapseParams):
            raise self.refuse(name, f"has {q.kind} parameters; a netx dense or conv layer needs synapse parameters")
        return q

    def cuba(self, name: str) -> CubaParams:
        q = self.q(name)
        if not isinstance(q, CubaParams):
            raise self.refuse(name, f"has {q.kind} parameters; a netx CUBA neuron group needs CUBA neuron parameters")
        return q

    def refuse(self, name: str, why: str, fix: str = "") -> UnsupportedError:
        op = self.g.nodes[name].op if name in self.g.nodes else "?"
        return UnsupportedError(f"node '{name}' ({op}): {why}" + (f"; fix: {fix}" if fix else ""))

    def passthrough(self, name: str) -> bool:
        """Delay nodes whose delays the synapse's q holds (read_netx's view of DelayDense)."""
        return self.g.nodes[name].op == "Delay" and isinstance(self.qg.q.get(name), FoldedParams)

    # ---- the chain ------------------------------------------------------------------------------
    def chain(self) -> list[str]:
        g = self.g
        for name, node in g.nodes.items():
            if node.spec.family == "host" or node.placement == "host":
                raise self.refuse(name, "runs on the host; a netx file holds only chip layers",
                                  "write the chip subgraph (spikedeploy partition) and run host nodes separately")
        if len(g.inputs) != 1:
            raise UnsupportedError(f"netx networks have one input; this graph has {len(g.inputs)}: {g.inputs}")
        if len(g.outputs) != 1:
            raise UnsupportedError(f"netx networks have one output (the last layer); this graph has "
                                   f"{len(g.outputs)}: {g.outputs}")
        _, back = g.order()
        if back:
            a, b = back[0]
            raise self.refuse(b, f"recurrent connection {a} -> {b}; netx files hold feed-forward chains here",
                              "keep recurrent layers in the QGraph (.sdq) and simulate them with the emulator or Lava")
        seq = [g.inputs[0]]
        while True:
            cur = seq[-1]
            succ = g.successors(cur)
            if g.nodes[cur].op == "Output":
                break
            if len(succ) != 1:
                raise self.refuse(cur, f"feeds {len(succ)} nodes ({', '.join(succ) or 'none'}); netx layers form "
                                       "a single chain, one layer feeding the next")
            nxt = succ[0]
            preds = g.predecessors(nxt)
            if len(preds) != 1:
                raise self.refuse(nxt, f"has {len(preds)} inputs ({', '.join(preds)}); netx layers take exactly one")
            seq.append(nxt)
        missing = [n for n in g.nodes if n not in seq]
        if missing:
            raise self.refuse(missing[0], "is not on the chain from the input to the output; netx files hold a "
                                          "single chain")
        return [n for n in seq if not self.passthrough(n)]

    def layers(self) -> list[dict[str, Any]]:
        g = self.g
        seq = self.chain()
        inp, body = seq[0], seq[1:-1]
        shape = tuple(int(s) for s in g.nodes[inp].out_shape)
        first = {"type": "input", "shape": np.asarray(shape, dtype=np.int64)}
        out = [first]
        i = 0
        if body and g.nodes[body[0]].spec.family == "neuron":
            # read_netx's input neuron: Lava drives it through bias_mant only (input_mode 'bias')
            self.input_neuron(body[0], first)
            i = 1
        cur_shape = shape
        while i < len(body):
            name = body[i]
            node = g.nodes[name]
            fam = node.spec.family
            if node.op == "Flatten":
                if len(node.out_shape) != 1:
                    raise self.refuse(name, f"flattens to {list(node.out_shape)}; netx flattens to one dimension")
                i += 1
                continue
            if fam == "neuron":
                raise self.refuse(name, "follows another neuron group without a synapse; each netx layer is one "
                                        "synapse (dense or conv) and one neuron group")
            if fam != "synapse":
                raise self.refuse(name, "has no netx layer type")
            if i + 1 >= len(body) or g.nodes[body[i + 1]].spec.family != "neuron":
                raise self.refuse(name, "is not followed by a neuron node; each netx layer is one synapse and one "
                                        "neuron group")
            neuron = body[i + 1]
            if node.op in DENSE:
                if len(cur_shape) > 1:
                    # netx: transpose([2, 1, 0]).flatten() = CHW order; 'shape' is not read (slayer writes it)
                    out.append({"type": "flatten", "shape": np.asarray([int(np.prod(cur_shape))], dtype=np.int64)})
                layer = self.dense(name, neuron)
            elif node.op == "Conv2d":
                if len(cur_shape) != 3:
                    raise self.refuse(name, f"reads a {len(cur_shape)}-D input {list(cur_shape)}; netx conv "
                                            "layers take (C, H, W) maps and cannot follow a flatten")
                layer = self.conv(name, neuron)
            else:
                what = {"Scale": "elementwise scaling", "Conv1d": "1-D convolution", "SumPool2d": "pooling",
                        "AvgPool2d": "pooling", "Delay": "a delay node"}.get(node.op, node.op)
                raise self.refuse(name, f"{what} has no netx layer (netx reads input, dense, conv, flatten)",
                                  "fold it into a neighbouring dense or conv layer when quantizing")
            layer["neuron"] = self.neuron_group(neuron)
            bias = self.bias(neuron, layer["type"])
            if bias is not None:
                layer["bias"] = bias
            out.append(layer)
            cur_shape = tuple(int(s) for s in g.nodes[neuron].out_shape)
            i += 2
        if not any("neuron" in lc for lc in out):
            raise UnsupportedError("the graph has no chip layer between its input and output; nothing to write")
        return out

    # ---- layers ---------------------------------------------------------------------------------
    def input_neuron(self, name: str, layer: dict) -> None:
        q = self.q(name)
        if not isinstance(q, CubaParams) or q.input_mode != "bias":
            raise self.refuse(name, "is fed by the input without a synapse; a netx input layer with a neuron is "
                                    "driven through its bias only (lava-dl leaves its input port unconnected)",
                              "put a dense or conv synapse between the input and the neurons")
        layer["weight"] = np.int64(NETX_INPUT_WEIGHT if q.input_weight is None else q.input_weight)
        layer["bias"] = np.int64(0 if q.input_bias is None else q.input_bias)
        if np.any(np.asarray(q.bias_mant) != 0):
            raise self.refuse(name, "the netx input neuron has no bias of its own (its bias carries the input)")
        layer["neuron"] = self.neuron_group(name)

    def dense(self, syn: str, neuron: str) -> dict[str, Any]:
        from spikedeploy.targets.loihi_arith import prepare_weights

        q = self.synapse(syn)
        where = f"node '{syn}'"
        w = np.asarray(q.weight)
        if w.ndim != 2:
            raise self.refuse(syn, f"weight has shape {list(w.shape)}; expected (out, in)")
        p = prepare_weights(w, q.sign_mode, q.num_weight_bits, where=where).astype(np.int64)
        e = int(q.weight_exp)
        if e >= 0:
            f = p << e
        else:
            k = -e
            low = p & ((1 << k) - 1)  # the bits the floored shift of the sum drops
            carry = low.sum(axis=1) >= (1 << k)
            if np.any(carry):
                r = int(np.flatnonzero(carry)[0])
                raise self.refuse(
                    syn, f"weight_exp {e} floors the sum of each row, and the dropped low bits of row {r} (sum "
                         f"{int(low[r].sum())}) can carry, so the result is not a sum of integer weights; netx "
                         "recomputes the exponent from integer weights and computes exact sums",
                    "quantize with weight_exp >= 0 for this layer, or mantissas that are multiples of "
                    f"2**{k}")
            f = p >> k
        if not np.any(f):
            raise self.refuse(syn, "all weights are zero; netx's optimize_weight_bits fails on them")
        self.check_netx_weights(syn, f)
        layer: dict[str, Any] = {"type": "dense", "shape": np.asarray([f.shape[0]], dtype=np.int64),
                                 "weight": _int_dataset(f)}
        if q.delay is not None:
            layer["delay"] = self.delay(syn, np.broadcast_to(np.asarray(q.delay), f.shape))
        return layer

    def check_netx_weights(self, syn: str, f: np.ndarray) -> None:
        """netx's optimize_weight_bits + Lava's weight preparation must give back the sum of `f` exactly."""
        from spikedeploy.targets.loihi_arith import prepare_weights

        shifted, nwb, exp, sign, notes = optimize_weight_bits(f)
        bad = "; ".join(notes)
        try:
            p2 = prepare_weights(shifted, None, nwb).astype(np.int64)
        except SpikeDeployError as e:  # netx chose a weight width Lava cannot use
            p2, bad = None, str(e)
        if p2 is not None and not bad:
            ok = np.array_equal(p2, f << -exp) if exp <= 0 else np.array_equal(p2 << exp, f)
            if ok:
                return
            bad = f"netx's weights {shifted.min()}..{shifted.max()} with {nwb} bits, exponent {exp} change them"
        raise self.refuse(
            syn, f"integer weights {int(f.min())}..{int(f.max())} do not survive netx's optimize_weight_bits and "
                 f"Lava's 8-bit weight preparation ({bad})",
            "weights must fit 8 bits as netx scales them (mixed: -256..254, excitatory 0..255); lower the "
            "layer's scale or weight_exp")

    def delay(self, syn: str, d: np.ndarray) -> np.ndarray:
        d = np.asarray(d).astype(np.int64)
        if d.size and (d.min() < 0 or d.max() > NETX_MAX_DELAY):
            raise self.refuse(syn, f"delays {int(d.min())}..{int(d.max())} are outside netx's 0..{NETX_MAX_DELAY}")
        out, inp = d.shape
        if np.all(d == d[:, :1]):
            return d[:, 0].copy()  # axonal: netx checks per-output first
        if np.all(d == d[:1, :]) and inp != out:
            return d[0].copy()
        return d

    def conv(self, syn: str, neuron: str) -> dict[str, Any]:
        node = self.g.nodes[syn]
        w = np.asarray(self.synapse(syn).weight)
        w = (np.trunc(w) if w.dtype.kind == "f" else w).astype(np.int64)  # Lava's Conv casts to int
        if w.ndim != 4:
            raise self.refuse(syn, f"weight has shape {list(w.shape)}; expected (out, in/groups, kH, kW)")
        # Lava's Conv ignores weight_exp and num_weight_bits (as the emulator does), so they are not written.
        layer: dict[str, Any] = {"type": "conv", "shape": np.asarray(node.out_shape, dtype=np.int64),
                                 "weight": _int_dataset(w)}
        for k, v in zip(("stride", "padding", "dilation"), conv_params(node.params, 2), strict=True):
            layer[k] = np.asarray(v, dtype=np.int64)  # (H, W); netx reverses
        layer["groups"] = np.int64(int(node.params.get("groups", 1)))
        return layer

    # ---- neurons --------------------------------------------------------------------------------
    def scalar(self, name: str, q: CubaParams, key: str) -> int:
        v = np.asarray(getattr(q, key))
        if v.size == 0 or np.any(v != v.ravel()[0]):
            raise self.refuse(name, f"per-neuron {key} values ({v.min()}..{v.max()}); netx stores one "
                                    f"{_NEURON_KEYS[key]} per layer",
                              "quantize with one time constant and threshold per layer")
        return int(v.ravel()[0])

    def neuron_group(self, name: str) -> dict[str, Any]:
        node = self.g.nodes[name]
        if node.op not in _NETX_NEURONS:
            raise self.refuse(name, "has no netx neuron type (netx CUBA neurons are Lava LIFs)")
        q = self.cuba(name)
        if q.reset_interval:
            raise self.refuse(name, "resets periodically (Lava LIFReset); a netx file cannot hold the reset, "
                                    "lava-dl sets it per network with Network(reset_interval=...)",
                              "write the file without reset_interval and pass reset_interval to netx.hdf5.Network")
        custom = [k for k in (*PROGRAMMABLE, "v_init") if getattr(q, k) is not None]
        if custom:
            raise self.refuse(name, f"uses spikedeploy's programmable neuron ({', '.join(custom)}); netx CUBA "
                                    "neurons are Lava's stock LIF (reset to 0, v > th, bias into v)",
                              "simulate it with spikedeploy (emulator or Lava), or retrain with reset to zero")
        return {"type": "CUBA", "iDecay": np.int64(self.scalar(name, q, "du") + 1),
                "vDecay": np.int64(self.scalar(name, q, "dv")), "vThMant": np.int64(self.scalar(name, q, "vth"))}

    def bias(self, name: str, kind: str) -> np.ndarray | None:
        from spikedeploy.targets.loihi_arith import effective_bias, expand_param

        q = self.cuba(name)
        shape = tuple(int(s) for s in self.g.nodes[name].out_shape)
        where = f"node '{name}'"
        bm = expand_param(q.bias_mant, shape, f"{where} bias_mant")
        be = expand_param(q.bias_exp, shape, f"{where} bias_exp")
        b = np.broadcast_to(effective_bias(bm, be), (int(np.prod(shape)),)).astype(np.int64).reshape(shape)
        if not np.any(b):
            return None
        m = b >> NETX_BIAS_EXP
        if np.any(m << NETX_BIAS_EXP != b):
            j = int(np.flatnonzero((m << NETX_BIAS_EXP).ravel() != b.ravel())[0])
            raise self.refuse(name, f"bias {int(b.ravel()[j])} (bias_mant·2^bias_exp) of neuron {j} is not a "
                                    f"multiple of 2^{NETX_BIAS_EXP}; netx fixes bias_exp = {NETX_BIAS_EXP}",
                              "quantize biases as whole weight units (bias_mant·2^bias_exp a multiple of 64)")
        if m.min() < -(1 << 15) or m.max() >= 1 << 15:
            raise self.refuse(name, f"bias {int(np.abs(b).max())} needs a mantissa beyond int16 at netx's bias_exp "
                                    f"{NETX_BIAS_EXP} (Lava stores bias_mant as int16)")
        if kind == "conv":
            per_channel = m.reshape(m.shape[0], -1)
            if np.any(per_channel != per_channel[:, :1]):
                raise self.refuse(name, "bias varies within a channel; netx conv biases are per channel")
            return per_channel[:, 0].copy()
        return m.reshape(-1).copy()


_NEURON_KEYS = {"du": "iDecay", "dv": "vDecay", "vth": "vThMant"}


def _int_dataset(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    for t in (np.int16, np.int32):
        if a.size == 0 or (a.min() >= np.iinfo(t).min and a.max() <= np.iinfo(t).max):
            return a.astype(t)
    return a


def _write_h5(path: Path, layers: list[dict[str, Any]], qg: QGraph) -> None:
    import h5py

    def put(group, key: str, value: Any) -> None:
        if isinstance(value, dict):
            sub = group.create_group(key)
            for k, v in value.items():
                put(sub, k, v)
        elif key == "type":
            group.create_dataset("type", data=np.array([value.encode("ascii")], dtype="S10"))  # NetDict: value[0]
        else:
            group.create_dataset(key, data=value)

    with h5py.File(path, "w") as f:
        f.attrs["writer"] = "spikedeploy write_netx"
        src = qg.graph.meta.get("source_file") or qg.meta.get("source_file")
        if src:
            f.attrs["source"] = str(src)
        sim = qg.graph.meta.get("netx_simulation")
        if isinstance(sim, dict) and sim:  # read_netx keeps the file's 'simulation' group (Ts, tSample)
            sg = f.create_group("simulation")
            for k, v in sim.items():
                sg.create_dataset(k, data=v)
        top = f.create_group("layer")
        for i, lc in enumerate(layers):
            g = top.create_group(str(i))
            for k, v in lc.items():
                put(g, k, v)
