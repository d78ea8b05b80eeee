"""torch / snnTorch modules -> spikedeploy Graph, through torch.fx (no nirtorch, no snnTorch exporter).

A model is turned into a *step function*: one call processes one time step, neurons keep their state in
their own buffers (snnTorch does that whether or not `init_hidden` is set). Two model forms are read:

- a model with a single-step `forward(x_a, x_b, ...)`: traced symbolically with snnTorch neurons, the
  known chip/host layers and every other torch.nn module as leaves. Each forward argument becomes one
  Input (one modality). Membrane arguments threaded by the caller (`spk, mem = lif(cur, mem)`) are state,
  not inputs.
- a model without `forward` whose children are chains (an nn.Sequential, or a module holding one as
  `.net`), as the reference retrieval model's encoders are: each chain is one modality.

Neurons: snnTorch Leaky/RLeaky/Synaptic and spikingjelly (activation_based) LIFNode/IFNode, single-step or
multi-step (run in single-step mode, see `single_step_mode`); `_neuron` documents each mapping and the
per-node reset rule (node.meta, graph.RULE_KEYS).

Each fx node becomes a chip node (Affine/Linear, Conv, AvgPool2d, Flatten, Scale, LIF/IF/CubaLIF, fan-in
for `+`), a host node (Mul, MatMul, LayerNorm, Softmax, MaxPool2d, Embedding, CosineSimilarity, Concat),
a pass-through (Dropout, Identity, shape glue next to host ops), or a refusal naming the module path.
BatchNorm is folded into the Conv/Linear before it; a torch.cat consumed by a Linear is split into one
Linear per part summed into the same target (exact, and on chip).
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from spikedeploy.converters.host_programs import insert_host_synapses
from spikedeploy.errors import UnsupportedError
from spikedeploy.graph.align import align_branches
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.ops import WEIGHTED

try:  # snnTorch is a dependency, but keep the plain-torch path importable without it
    import snntorch as snn
    from snntorch._neurons.neurons import SpikingNeuron
    from snntorch._neurons.rleaky import RecurrentOneToOne
except ImportError:  # pragma: no cover
    snn = None
    SpikingNeuron = ()
    RecurrentOneToOne = ()

try:  # spikingjelly (activation_based API) is optional: only its neurons are recognised
    from spikingjelly.activation_based import base as sj_base
    from spikingjelly.activation_based import neuron as sj_neuron
except ImportError:  # pragma: no cover
    sj_base = sj_neuron = None

TOKEN_DENSE_MAX = 1 << 22  # weights of a Dense standing in for a Linear over token-major data (32 MiB float64)
CHIP_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.AvgPool2d, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d)
PASS_MODULES = (nn.Dropout, nn.Identity)
HOST_MODULES = {
    nn.LayerNorm: "LayerNorm",
    nn.Softmax: "Softmax",
    nn.MaxPool2d: "MaxPool2d",
    nn.Embedding: "Embedding",
    nn.CosineSimilarity: "CosineSimilarity",
}
HOST_FUNCTIONS = {
    operator.matmul: "MatMul", torch.matmul: "MatMul", torch.bmm: "MatMul", torch.mm: "MatMul",
    torch.einsum: "MatMul",
    F.softmax: "Softmax", torch.softmax: "Softmax", F.layer_norm: "LayerNorm", F.max_pool2d: "MaxPool2d",
    F.embedding: "Embedding", F.cosine_similarity: "CosineSimilarity", F.normalize: "CosineSimilarity",
}
HOST_METHODS = {"matmul": "MatMul", "bmm": "MatMul", "mm": "MatMul", "softmax": "Softmax"}
ADD = (operator.add, operator.iadd, torch.add)
MUL = (operator.mul, operator.imul, torch.mul)
DIV = (operator.truediv, operator.itruediv, torch.div)
CAT = (torch.cat, torch.concat)
# Pure tensor functions that are harmless next to host ops (they end up in the ONNX host part).
GLUE_METHODS = {
    "transpose", "permute", "reshape", "view", "unsqueeze", "squeeze", "contiguous", "sum", "mean", "t",
    "flatten", "exp", "norm", "float", "to", "clamp", "expand", "repeat", "size", "max", "argmax", "mul",
    "div", "add", "sub", "neg", "pow", "sqrt", "abs", "unflatten", "chunk", "split",
}
GLUE_FUNCTIONS = {
    torch.transpose, torch.permute, torch.reshape, torch.unsqueeze, torch.squeeze, torch.sum, torch.mean,
    torch.exp, torch.flatten, torch.clamp, torch.sqrt, torch.abs, operator.sub, torch.sub, operator.neg,
    operator.getitem, operator.truediv, operator.mul, operator.add, torch.stack, torch.max, torch.argmax,
    torch.norm, getattr, torch.logsumexp, torch.amax, torch.chunk, torch.split,
}


# Thresholds of the AND / OR lowerings. Spikes fire on strictly greater (simulate_float, snnTorch, Lava), so
# AND of two 0/1 inputs needs a threshold in [1, 2) and OR over a window one in [0, 1); the midpoints keep the
# largest margin to the integer sums on either side once weights are quantized.
AND_THRESHOLD = 1.5
OR_THRESHOLD = 0.5


# Pure layout ops: on chip a permuted view is only wiring (the builder tracks it, see Val.idx).
LAYOUT_METHODS = {"transpose", "permute", "reshape", "view", "flatten", "unsqueeze", "squeeze", "contiguous", "t",
                  "unflatten"}
LAYOUT_FUNCTIONS = {torch.transpose, torch.permute, torch.reshape, torch.flatten, torch.unsqueeze, torch.squeeze}


def _identity(idx: np.ndarray) -> bool:
    return bool(np.array_equal(idx.ravel(), np.arange(idx.size)))


def _same_view(a, b) -> bool:
    """Both values lay their elements out alike on chip (a view in identity order is a plain signal)."""
    if a.idx is None or b.idx is None:
        return all(v.idx is None or _identity(v.idx) for v in (a, b))
    # the same element order over chip layouts of the same size ([C, H, W] and [C, H·W] hold elements alike)
    return int(np.prod(a.base)) == int(np.prod(b.base)) and np.array_equal(a.idx, b.idx)


def _maxpool_args(n: fx.Node) -> dict:
    """F.max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)."""
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    a = dict(zip(names, n.args, strict=False))
    a.update(n.kwargs)
    return a


def is_neuron(m: nn.Module) -> bool:
    return (bool(SpikingNeuron) and isinstance(m, SpikingNeuron)) or is_sj_neuron(m)


def is_sj_neuron(m: nn.Module) -> bool:
    return sj_neuron is not None and isinstance(m, sj_neuron.BaseNode)


def single_step_mode(model: nn.Module) -> list[str]:
    """Put spikingjelly modules in multi-step mode ('m') into single-step mode, in place; returns their paths.

    The exporter calls the model one time step at a time. A multi-step neuron fed [1, B, ...] slices keeps
    its state between calls and gives exactly the single-step neuron's spikes (test_neuron_models), so the
    step function may run it in single-step mode, where it takes the [B, ...] values every other layer sees.
    """
    changed = []
    if sj_base is None:
        return changed
    for name, m in model.named_modules():
        if isinstance(m, sj_base.StepModule) and getattr(m, "step_mode", "s") == "m":
            m.step_mode = "s"
            changed.append(name)
    return changed


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_neuron(m) or isinstance(m, CHIP_MODULES + PASS_MODULES + tuple(HOST_MODULES)):
            return True
        return super().is_leaf_module(m, qualname)


@dataclass
class Traced:
    """The step function of a model and what its placeholders mean."""

    gm: fx.GraphModule
    inputs: dict[str, str]  # fx placeholder name -> Input node name (modality)
    state: list[str]  # fx placeholders that only carry neuron state
    mode: str  # "forward" | "chains"
    output_names: list[str]


def _chains(model: nn.Module) -> dict[str, nn.Sequential]:
    out = {}
    for name, child in model.named_children():
        seq = child if isinstance(child, nn.Sequential) else getattr(child, "net", None)
        if isinstance(seq, nn.Sequential):
            out[name] = seq
    return out


def trace_model(model: nn.Module, input_names: list[str] | None = None) -> Traced:
    """Build the fx step function of `model` (see the module docstring for the accepted forms)."""
    single_step_mode(model)
    has_forward = type(model).forward is not nn.Module.forward
    if not has_forward:
        chains = _chains(model)
        if not chains:
            raise UnsupportedError(
                f"model {type(model).__name__} has no forward() and no chain children (nn.Sequential or a "
                "module with a .net nn.Sequential); give it a single-step forward(x_t, ...)"
            )
        g = fx.Graph()
        names = list(chains)
        if input_names is not None:
            if len(input_names) != len(names):
                raise UnsupportedError(f"input_names has {len(input_names)} names, the model has {len(names)} "
                                       f"modalities ({names})")
        else:
            input_names = names
        outs = []
        prefixes = {}
        for name, seq in chains.items():
            prefixes[name] = next(q for q, m in model.named_modules() if m is seq)
        inputs = {}
        for name, iname in zip(names, input_names, strict=True):
            x = g.placeholder(iname)
            inputs[x.name] = iname
            for i, _ in enumerate(chains[name]):
                x = g.call_module(f"{prefixes[name]}.{i}", (x,))
            outs.append(x)
        g.output(tuple(outs))
        gm = fx.GraphModule(model, g)
        return Traced(gm, inputs, [], "chains", [f"{n}_output" for n in input_names])

    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises plain TypeErrors on data-dependent control flow
        raise UnsupportedError(
            f"cannot trace {type(model).__name__}.forward with torch.fx ({type(e).__name__}: {e}); the "
            "forward must process one time step without data-dependent control flow"
        ) from e
    gm = fx.GraphModule(model, graph)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    state = []
    real = []
    for p in placeholders:
        uses = list(p.users)
        if uses and all(u.op == "call_module" and is_neuron(gm.get_submodule(u.target)) and
                        (p in u.args[1:] or p in u.kwargs.values()) and u.args[0] is not p for u in uses):
            state.append(p.name)
        else:
            real.append(p)
    if input_names is not None and len(input_names) != len(real):
        raise UnsupportedError(
            f"input_names has {len(input_names)} names but forward takes {len(real)} inputs "
            f"({[p.target for p in real]})"
        )
    names = input_names or [str(p.target) for p in real]
    inputs = {p.name: n for p, n in zip(real, names, strict=True)}
    _check_single_use(gm)
    return Traced(gm, inputs, state, "forward", [])


def _check_single_use(gm: fx.GraphModule) -> None:
    seen: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and is_neuron(gm.get_submodule(n.target)):
            seen[n.target] = seen.get(n.target, 0) + 1
    again = [k for k, v in seen.items() if v > 1]
    if again:
        raise UnsupportedError(
            f"neuron module(s) {again} are called more than once per forward; the forward must process "
            "ONE time step (move the time loop out of forward) and use each neuron layer once"
        )


# ---- running the step function -------------------------------------------------------------------


def reset_neurons(model: nn.Module) -> None:
    """Every neuron back to rest: snnTorch's state buffers emptied (re-created at the next call, as
    `init_hidden` does), spikingjelly's memories reset to their initial values (`functional.reset_net`)."""
    for m in model.modules():
        if is_sj_neuron(m):
            m.reset()
        elif is_neuron(m):
            for buf in ("mem", "syn", "spk"):
                if hasattr(m, buf):
                    setattr(m, buf, torch.zeros(0, dtype=getattr(m, buf).dtype))


class _StepInterpreter(fx.Interpreter):
    """Runs the step function once, recording every node's value; neurons keep their own state."""

    def __init__(self, gm: fx.GraphModule, state: list[str]):
        super().__init__(gm)
        self.state_names = set(state)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        self._current = n
        out = super().run_node(n)
        self.values[n.name] = out
        return out

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        if is_neuron(m):
            out = m(args[0])  # state lives in the neuron; the caller's state arguments are its own copy
            if args[0].dtype != torch.float32:  # snnTorch's spike functions always return float32
                out = tuple(o.to(args[0].dtype) for o in out) if isinstance(out, tuple) else out.to(args[0].dtype)
            node = self._current
            if isinstance(out, tuple) and not all(u.op == "call_function" and u.target is operator.getitem
                                                  for u in node.users):
                out = out[0]
            return out
        return super().call_module(target, args, kwargs)


def run_steps(traced: Traced, inputs: dict[str, torch.Tensor], steps: int) -> list[dict[str, Any]]:
    """Run the step function over `steps` steps from rest; inputs are time-major `[T, B, ...]` per Input
    name (T == 1 repeats the one frame every step). Returns each step's fx node values."""
    gm = traced.gm
    reset_neurons(gm)
    ph = [n for n in gm.graph.nodes if n.op == "placeholder"]
    records = []
    with torch.no_grad():
        for t in range(steps):
            it = _StepInterpreter(gm, traced.state)
            args = []
            for p in ph:
                if p.name in traced.state:
                    args.append(None)
                else:
                    x = inputs[traced.inputs[p.name]]
                    args.append(x[min(t, x.shape[0] - 1)])
            it.run(*args)
            records.append(it.values)
    reset_neurons(gm)
    return records


# ---- building the Graph ----------------------------------------------------------------------------


@dataclass
class Val:
    """What an fx value is in the Graph: the sum of `srcs` (chip or host nodes), a constant, a membrane
    (not a signal NIR carries), or a lazy concatenation that a following Linear may split."""

    kind: str  # "sig" | "const" | "mem" | "cat" | "tuple" | "view"
    srcs: list[str] = field(default_factory=list)
    host: bool = False
    parts: list[tuple[Val, int]] = field(default_factory=list)
    fx_name: str = ""
    # kind "view": a permuted view (transpose/permute/reshape) of the graph nodes' channel-first layout `base`:
    # the torch element at position p is graph element idx[p] (flat, C order). Free on chip: only wiring.
    idx: np.ndarray | None = None
    base: tuple[int, ...] = ()


@dataclass
class Plan:
    """How the Graph relates to the fx step function (used by the export check and the ONNX writer)."""

    spikes: dict[str, str] = field(default_factory=dict)  # spiking graph node -> fx node with its spikes
    membranes: dict[str, str] = field(default_factory=dict)  # neuron graph node -> neuron module path
    host_fx: list[str] = field(default_factory=list)  # fx nodes run on the host
    to_host: dict[str, str] = field(default_factory=dict)  # fx value (chip) used by host -> chip Output name
    from_host: dict[str, str] = field(default_factory=dict)  # host graph node feeding chip -> fx value name
    outputs: dict[str, str] = field(default_factory=dict)  # Output node -> fx value
    deviations: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    dropped_outputs: list[str] = field(default_factory=list)
    const_fx: set[str] = field(default_factory=set)  # fx nodes whose value does not depend on inputs
    val_srcs: dict[str, list[str]] = field(default_factory=dict)  # fx value -> graph nodes it sums
    defining: dict[str, str] = field(default_factory=dict)  # graph node -> the fx node that created it
    layouts: dict[str, np.ndarray] = field(default_factory=dict)  # spiking node in a permuted view -> its idx
    slices: dict[str, tuple[int, int]] = field(default_factory=dict)  # part of a split neuron -> dim-1 range


def _f64(t) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def _where(gm, n: fx.Node) -> str:
    if n.op == "call_module":
        return f"module '{n.target}' ({type(gm.get_submodule(n.target)).__name__})"
    tgt = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    return f"'{tgt}' (fx node '{n.name}')"


class _Builder:
    def __init__(self, traced: Traced, rec0: dict[str, Any], dt: float, allow_approximate: bool,
                 host_modules=()):
        self.t = traced
        self.gm = traced.gm
        self.rec = rec0
        self.dt = float(dt)
        self.allow = allow_approximate
        self.g = Graph(dt=self.dt, reset="zero", reset_delay=False)
        self.plan = Plan()
        self.vals: dict[str, Val] = {}
        self.resets: set[tuple[str, bool]] = set()  # (reset, reset_delay) of every neuron node
        self._fx = ""  # the fx node being translated (recorded as each new graph node's origin)
        self.host_modules = tuple(host_modules)  # module paths the user puts on the host

    # -- helpers ---------------------------------------------------------------------------------
    def shape(self, n: fx.Node) -> tuple[int, ...]:
        v = self.rec.get(n.name)
        if isinstance(v, tuple):
            v = v[0]
        return tuple(int(s) for s in v.shape[1:])

    def new(self, name: str, op: str, params: dict, src: Val | list[str] | None, **kw) -> str:
        base, k = name, 1
        while name in self.g.nodes:
            name = f"{base}_{k}"
            k += 1
        self.g.add(Node(name, op, params, **kw))
        self.plan.defining[name] = self._fx
        srcs = src.srcs if isinstance(src, Val) else (src or [])
        for s in srcs:
            self.g.connect(s, name)
        return name

    def refuse(self, n: fx.Node, why: str, fix: str) -> None:
        msg = f"{_where(self.gm, n)}: {why}"
        if not self.allow:
            raise UnsupportedError(f"{msg}; {fix} (or export with allow_approximate=True to record it as a "
                                   "deviation)")
        self.plan.deviations.append(msg)

    def tensor_args(self, n: fx.Node) -> list[fx.Node]:
        out = []
        fx.node.map_arg((n.args, n.kwargs), lambda a: out.append(a))
        return [a for a in out if self.vals.get(a.name) is not None and self.vals[a.name].kind != "const"]

    def sig(self, a: fx.Node, user: fx.Node) -> Val:
        v = self.vals[a.name]
        if v.kind == "mem":
            raise UnsupportedError(
                f"{_where(self.gm, user)} uses a membrane potential ({a.name}); NIR and the chip pass spikes "
                "only; use the spike output, or read the membrane on the host"
            )
        if v.kind == "cat":
            return self.materialize_cat(a)
        if v.kind == "view":
            if np.array_equal(v.idx.ravel(), np.arange(v.idx.size)):  # torch order is the graph order
                return Val("sig", list(v.srcs), fx_name=v.fx_name)
            if self._is_host_op(user) or user.name in getattr(self, "host_glue", ()):
                # the host reads the chip's values in torch order: the index map (Plan.layouts of the source
                # layer) reorders them at the chip->host boundary, as the ONNX part expects
                for s in v.srcs:
                    self.plan.layouts.setdefault(s, v.idx)
                self.plan.rewrites.append(f"{_where(self.gm, user)} reads token view '{a.name}' on the host: the chip "
                                          f"sends its {list(v.base)} layout, reordered by Plan.layouts (exact)")
                return Val("sig", list(v.srcs), fx_name=v.fx_name)
            raise UnsupportedError(
                f"{_where(self.gm, user)} reads a permuted token view ({a.name}, shape {list(v.idx.shape)} over the "
                f"chip layout {list(v.base)}); on chip a permuted view feeds only Linear (over its last dim or after "
                "a flatten), neurons, BatchNorm1d, AND, sums and token means; transpose it back first")
        if v.kind == "tuple":
            raise UnsupportedError(f"{_where(self.gm, user)} takes a tuple ({a.name}); index it first")
        return v

    def materialize_cat(self, a: fx.Node) -> Val:
        v = self.vals[a.name]
        if v.kind != "cat":
            return v
        srcs = [s for p, _ in v.parts for s in p.srcs]
        name = self.new(a.name, "Concat", {"out_shape": np.asarray(self.shape(a))}, srcs)
        self.g.nodes[name].meta["operands"] = [list(p.srcs) for p, _ in v.parts]
        self.plan.host_fx.append(a.name)
        nv = Val("sig", [name], host=True, fx_name=a.name)
        self.vals[a.name] = nv
        return nv

    # -- main loop -------------------------------------------------------------------------------
    def build(self) -> tuple[Graph, Plan]:
        nodes = list(self.gm.graph.nodes)
        host_glue = self._host_glue(nodes)
        for n in nodes:
            self._fx = n.name
            if n.op == "placeholder":
                if n.name in self.t.state:
                    self.vals[n.name] = Val("const")
                    continue
                iname = self.t.inputs[n.name]
                x = self.rec[n.name]
                kind = "int" if not torch.is_floating_point(x) else "float"
                name = self.new(iname, "Input", {"shape": np.asarray(self.shape(n), dtype=np.int64)}, None,
                                modality=iname)
                self.g.nodes[name].meta["dtype"] = kind
                self.vals[n.name] = Val("sig", [name], fx_name=n.name)
            elif n.op == "get_attr":
                self.vals[n.name] = Val("const")
            elif n.op == "output":
                self._outputs(n)
            elif n.op == "call_module":
                self._module(n)
            else:
                self._function(n, host_glue)
        self._mark_boundaries()
        for k, v in self.vals.items():
            if v.kind == "const":
                self.plan.const_fx.add(k)
            elif v.kind == "sig":
                self.plan.val_srcs[k] = list(v.srcs)
        g = self.g
        # a chip neuron reads a host value through an identity synapse, one more step on that branch: insert
        # them before aligning the branches
        self.plan.rewrites += insert_host_synapses(g)
        self._align()
        g.meta["rewrites"] = list(self.plan.rewrites)
        g.meta["deviations"] = list(self.plan.deviations)
        return g, self.plan

    def _align(self) -> None:
        """Relay neurons on the shorter branch of every merge, so that the chip's one step per synapse keeps
        merged branches in step (spikedeploy/graph/align.py); the zero-delay graph, which the check runs, is unchanged."""
        try:
            self.plan.rewrites += align_branches(self.g)
        except UnsupportedError as e:
            if not self.allow:
                raise UnsupportedError(f"{e} (or export with allow_approximate=True to record it as a deviation)") from e
            self.plan.deviations.append(f"on chip: {e}")

    def _host_glue(self, nodes: list[fx.Node]) -> set[str]:
        """Shape glue on chip values that only feeds host ops (e.g. k.transpose before q @ k^T)."""
        host_like = set()
        for n in reversed(nodes):
            if n.op not in ("call_function", "call_method") or not n.users:
                continue
            chip_expressible = n.target in ADD + MUL + DIV or n.target in ("add", "mul", "div", "flatten") \
                or n.target is torch.flatten
            if chip_expressible:
                continue
            if all(u.name in host_like or self._is_host_op(u) for u in n.users):
                if n.op == "call_method" and n.target in GLUE_METHODS or n.target in GLUE_FUNCTIONS:
                    host_like.add(n.name)
        self.host_glue = host_like
        return host_like

    def _is_host_op(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return isinstance(self.gm.get_submodule(n.target), tuple(HOST_MODULES))
        if n.op == "call_function":
            if n.target in HOST_FUNCTIONS:
                return True
            if n.target in MUL:
                return sum(isinstance(a, fx.Node) and self.vals.get(a.name, Val("sig")).kind != "const"
                           for a in n.args) == 2
            return False
        return n.op == "call_method" and n.target in HOST_METHODS

    # -- modules ---------------------------------------------------------------------------------
    def _module(self, n: fx.Node) -> None:
        m = self.gm.get_submodule(n.target)
        path = str(n.target)
        if is_neuron(m):
            xv = self.vals.get(n.args[0].name) if n.args and isinstance(n.args[0], fx.Node) else None
            if xv is not None and xv.kind == "sig" and xv.host and len(xv.srcs) == 1 \
                    and len(self.shape(n.args[0])) == 2:
                self._neuron_view(n, m, path, self._host_channel_first(n.args[0], xv))
                self.vals[n.args[0].name] = xv  # still the host value (the boundary is found from it)
            elif xv is not None and xv.kind == "view":
                self._neuron_view(n, m, path, xv)
            elif xv is not None and xv.kind == "cat":
                self._neuron_cat(n, m, path, xv)
            else:
                self._neuron(n, m, path)
            return
        if any(path == p or path.startswith(p + ".") for p in self.host_modules):
            self._host_node(n, "HostOp", self.tensor_args(n), reason="marked for the host (host_modules)")
            return
        if isinstance(m, PASS_MODULES):
            self.vals[n.name] = self.vals[n.args[0].name]
            return
        ins = self.tensor_args(n)
        any_host = any(self.vals[a.name].host for a in ins)
        if isinstance(m, nn.MaxPool2d) and ins and self._lower_or(n, ins[0], {
                "kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding, "dilation": m.dilation,
                "ceil_mode": m.ceil_mode, "return_indices": m.return_indices}):
            return
        if isinstance(m, tuple(HOST_MODULES)):
            self._host_node(n, HOST_MODULES[type(m)], ins)
            return
        if isinstance(m, nn.Linear):
            x = self.vals[n.args[0].name]
            if x.kind == "cat":
                self._split_linear(n, m, x)
                return
            if x.kind == "view" or x.kind == "sig" and not x.host and len(self.shape(n.args[0])) > 1:
                self._linear_view(n, m, path, self._as_view(n.args[0], x))
                return
            if x.host and len(self.shape(n.args[0])) > 1:
                self.refuse(n, f"applies a Linear over the last dim of a {list(self.shape(n.args[0]))} host value "
                               "(token-major); the chip computes it only on a channel-first layout",
                            "keep this Linear in the host part, or make it an nn.Conv1d(kernel_size=1) over a "
                            "channel-first [D, N] value")
                self._host_node(n, "HostOp", ins)
                return
            x = self.sig(n.args[0], n)
            w = _f64(m.weight)
            names = self._per_source(n, path, x, lambda first: (
                ("Affine", {"weight": w, "bias": _f64(m.bias)}) if first and m.bias is not None
                else ("Linear", {"weight": w})))
            self.vals[n.name] = Val("sig", names, fx_name=n.name)
            return
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            xc = self.vals[n.args[0].name]
            if xc.kind == "cat" and xc.base == ("channel",):
                self._split_conv(n, m, path, xc)
                return
            x = self.sig(n.args[0], n)
            nd = 1 if isinstance(m, nn.Conv1d) else 2
            if m.padding_mode != "zeros":
                self.refuse(n, f"padding_mode='{m.padding_mode}' is not zero padding", "use padding_mode='zeros'")
            params = {
                "weight": _f64(m.weight), "bias": None if m.bias is None else _f64(m.bias),
                "stride": np.asarray(m.stride), "dilation": np.asarray(m.dilation), "groups": int(m.groups),
                "padding": m.padding if isinstance(m.padding, str) else np.asarray(m.padding),
                "input_shape": np.asarray(self.shape(n.args[0])[1:]),
            }
            names = self._per_source(n, path, x, lambda first: (
                f"Conv{nd}d", params if first else {**params, "bias": None}))
            self.vals[n.name] = Val("sig", names, fx_name=n.name)
            return
        if isinstance(m, nn.AvgPool2d):
            x = self.sig(n.args[0], n)
            pad = np.asarray(torch.nn.modules.utils._pair(m.padding))
            if m.ceil_mode or m.divisor_override is not None or (not m.count_include_pad and pad.any()):
                self.refuse(n, "ceil_mode, divisor_override or count_include_pad=False with padding change "
                               "the average", "use AvgPool2d(k, stride, padding) with the defaults")
            k = np.asarray(torch.nn.modules.utils._pair(m.kernel_size))
            st = np.asarray(torch.nn.modules.utils._pair(m.stride if m.stride is not None else m.kernel_size))
            names = self._per_source(n, path, x, lambda first: (
                "AvgPool2d", {"kernel_size": k, "stride": st, "padding": pad}))
            self.vals[n.name] = Val("sig", names, fx_name=n.name)
            return
        if isinstance(m, nn.Flatten):
            self._flatten(n, path, int(m.start_dim), int(m.end_dim))
            return
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            self._batchnorm(n, m, path)
            return
        if any_host:  # an unknown module applied to host values is part of the host program
            self._host_node(n, "HostOp", ins)
            return
        # no chip equivalent: the host runs it exactly (its ONNX program is checked against torch at export)
        self._host_node(n, "HostOp", ins, reason="no chip equivalent (chip layers: Linear, Conv1d/2d, AvgPool2d, "
                        "Flatten, BatchNorm folded, spiking neurons)")

    # -- exact lowerings of fusion ops onto chip primitives (README "Operations") -------------------
    def _per_source(self, n: fx.Node, path: str, x: Val, make) -> list[str]:
        """One node per source of a summed value (a residual `a + b`): on chip a synapse reads one source,
        and the target neurons sum what their synapses deliver, so W(a + b) = Wa + Wb is exact.
        `make(first)` gives (op, params); the caller leaves any bias on the first copy only."""
        names = []
        for i, s in enumerate(x.srcs or [None]):
            op, params = make(i == 0)
            params = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in params.items()}
            names.append(self.new(path if i == 0 else f"{path}.src{i}", op, params, [s] if s else []))
        if len(names) > 1:
            self.plan.rewrites.append(
                f"{_where(self.gm, n)} reads a sum of {len(names)} sources: one {self.g.nodes[names[0]].op}"
                f" per source ({', '.join(names)}) into the same target (exact: W(a+b) = Wa + Wb)")
        return names

    def _chip_synapse_end(self, name: str) -> bool:
        """Whether `name` ends a chain of chip synapse ops (Flatten skipped): what a neuron may read."""
        while self.g.nodes[name].spec.family == "shape":
            preds = self.g.predecessors(name)
            if len(preds) != 1:
                return False
            name = preds[0]
        node = self.g.nodes[name]
        return node.spec.family == "synapse" and node.placement == "chip"

    def _neuron_input(self, path: str, x: Val) -> Val:
        """A sum of sources straight into a neuron (`lif(a + b)`, a residual of spikes): every chip source
        that is not already a synapse gets an identity Scale synapse, because on chip every neuron input
        arrives through a synapse (exact: weight 1, one synapse per element)."""
        if len(x.srcs) < 2 or x.host:
            return x
        srcs = []
        for i, s in enumerate(x.srcs):
            if self.g.nodes[s].placement == "chip" and not self._chip_synapse_end(s):
                s = self.new(f"{path}.in{i}", "Scale", {"scale": np.asarray(1.0)}, [s])
                self.plan.rewrites.append(f"sum into neuron '{path}': identity Scale synapse '{s}' for source "
                                          f"'{self.g.predecessors(s)[0]}' (exact)")
            srcs.append(s)
        return Val("sig", srcs, fx_name=x.fx_name)

    def _binary(self, v: Val | None) -> bool:
        """The value is 0/1 spikes: one spiking neuron's output, through pure shape nodes. AND/OR are exact
        lowerings only on such values (a sum of spikes or an analog value is not binary)."""
        if v is None or v.kind not in ("sig", "view") or v.host or len(v.srcs) != 1:
            return False
        s = v.srcs[0]
        while self.g.nodes[s].spec.family == "shape":
            preds = self.g.predecessors(s)
            if len(preds) != 1:
                return False
            s = preds[0]
        return self.g.nodes[s].spec.spiking and self.g.nodes[s].placement == "chip"

    def _feeds_chip(self, n: fx.Node) -> bool:
        """Whether the value of `n` reaches a chip layer or a model output other than through host ops;
        a product only host ops read stays on the host with them (no chip->host crossing is saved)."""
        todo, seen = list(n.users), set()
        while todo:
            u = todo.pop()
            if u in seen:
                continue
            seen.add(u)
            if u.op == "output":
                return True
            if u.op == "call_module":
                m = self.gm.get_submodule(u.target)
                if is_neuron(m) or isinstance(m, CHIP_MODULES):
                    return True
            if self._is_host_op(u) and not (u.op == "call_module" and isinstance(self.gm.get_submodule(u.target),
                                                                                  nn.MaxPool2d)):
                continue
            todo.extend(u.users)
        return False

    def _lower_and(self, n: fx.Node, ins: list[fx.Node]) -> bool:
        """spike x spike (elementwise) -> identity Scale per operand into Threshold(1.5): a AND b."""
        va, vb = (self.vals.get(a.name) for a in ins)
        shp = self.shape(n)
        if self._binary(va) and self._binary(vb) and self._feeds_chip(n) \
                and sorted([self.shape(ins[0]) == shp, self.shape(ins[1]) == shp]) == [False, True]:
            return self._lower_broadcast_and(n, ins, va, vb)
        if not (self._binary(va) and self._binary(vb)) or self.shape(ins[0]) != shp or self.shape(ins[1]) != shp \
                or not _same_view(va, vb) or not self._feeds_chip(n):
            return False
        if va.srcs == vb.srcs:  # x * x = x: both operands through one synapse of weight 2
            syn = [self.new(f"{n.name}.and", "Scale", {"scale": np.asarray(2.0)}, va)]
        else:
            syn = [self.new(f"{n.name}.and_{k}", "Scale", {"scale": np.asarray(1.0)}, v)
                   for k, v in (("a", va), ("b", vb))]
        thr = self.new(n.name, "Threshold", {"threshold": np.asarray(AND_THRESHOLD)}, syn)
        self.plan.spikes[thr] = n.name
        self.plan.rewrites.append(f"{_where(self.gm, n)}: spike x spike lowered to AND: identity Scale per operand "
                                  f"into Threshold '{thr}' (a + b > {AND_THRESHOLD}; exact for 0/1 spikes)")
        self.vals[n.name] = self._like(va, [thr], n.name)
        if va.idx is not None:
            self.plan.layouts[thr] = va.idx
        return True

    def _lower_broadcast_and(self, n: fx.Node, ins: list[fx.Node], va: Val, vb: Val) -> bool:
        """spikes x a broadcast spike mask (spike-driven attention's q ⊙ SN(Σ k ⊙ v)): the full operand through an
        identity Scale, the mask through a Dense that copies each mask element to every position it covers,
        both into Threshold(1.5). Exact for 0/1 spikes."""
        shp = self.shape(n)
        (big, vbig), (small, vsmall) = sorted(zip(ins, (va, vb), strict=True), key=lambda p: self.shape(p[0]) != shp)
        ss = self.shape(small)
        try:
            sidx = np.broadcast_to(self._as_view(small, vsmall).idx.reshape((1,) * (len(shp) - len(ss)) + ss), shp)
        except ValueError:
            return False
        bv = self._as_view(big, vbig)
        w = np.zeros((bv.idx.size, int(np.prod(vsmall.base if vsmall.idx is not None else ss))))
        w[bv.idx.ravel(), sidx.ravel()] = 1.0
        src = Val("sig", list(vsmall.srcs))
        base_small = vsmall.base if vsmall.idx is not None else ss
        if len(base_small) > 1:
            src = Val("sig", self._per_source(n, f"{n.name}.mask.flat", src, lambda first: (
                "Flatten", {"start_dim": 0, "end_dim": -1, "input_shape": np.asarray(base_small)})))
        a = self.new(f"{n.name}.and_a", "Scale", {"scale": np.asarray(1.0)}, Val("sig", list(vbig.srcs)))
        b = self.new(f"{n.name}.and_mask", "Linear", {"weight": w}, src)
        thr = self.new(n.name, "Threshold", {"threshold": np.asarray(AND_THRESHOLD)}, [a, b])
        self.plan.spikes[thr] = n.name
        self.plan.rewrites.append(f"{_where(self.gm, n)}: spikes x broadcast spike mask {list(ss)} lowered to AND: "
                                  f"identity Scale and a Dense copying the mask to its {int(np.prod(shp))} positions "
                                  f"into Threshold '{thr}' (exact for 0/1 spikes)")
        self.vals[n.name] = self._like(bv if vbig.idx is not None else vbig, [thr], n.name)
        if vbig.idx is not None:
            self.plan.layouts[thr] = vbig.idx
        return True

    def _lower_or(self, n: fx.Node, x_fx: fx.Node, a: dict) -> bool:
        """MaxPool2d on spikes -> SumPool2d (same kernel, stride, padding) into Threshold(0.5): OR over the
        window. torch pads with -inf, SumPool with 0: for spikes >= 0 both give the OR of the valid taps."""
        v = self.vals.get(x_fx.name)
        if v is not None and v.kind == "view":
            if not _identity(v.idx):
                return False
            v = Val("sig", list(v.srcs), fx_name=v.fx_name)
        if not self._binary(v) or a.get("ceil_mode") or a.get("return_indices") or len(self.shape(x_fx)) != 3:
            return False
        k = torch.nn.modules.utils._pair(a["kernel_size"])
        st = torch.nn.modules.utils._pair(a.get("stride") or a["kernel_size"])
        pd = torch.nn.modules.utils._pair(a.get("padding") or 0)
        if torch.nn.modules.utils._pair(a.get("dilation") or 1) != (1, 1):
            return False
        path = str(n.target) if n.op == "call_module" else n.name
        pool = self.new(f"{path}.sum", "SumPool2d", {"kernel_size": np.asarray(k), "stride": np.asarray(st),
                                                     "padding": np.asarray(pd)}, v)
        thr = self.new(path, "Threshold", {"threshold": np.asarray(OR_THRESHOLD)}, [pool])
        self.plan.spikes[thr] = n.name
        self.plan.rewrites.append(f"{_where(self.gm, n)}: max pooling of spikes lowered to OR: SumPool2d '{pool}' "
                                  f"into Threshold '{thr}' (count > {OR_THRESHOLD}; exact for 0/1 spikes)")
        self.vals[n.name] = Val("sig", [thr], fx_name=n.name)
        return True

    # -- token layouts: permuted views of channel-first chip tensors -------------------------------
    def _like(self, v: Val, srcs: list[str], fx_name: str) -> Val:
        """A signal over `srcs` in the same layout as `v` (a view if `v` is one)."""
        if v.idx is not None:
            return Val("view", list(srcs), idx=v.idx, base=v.base, fx_name=fx_name)
        return Val("sig", list(srcs), fx_name=fx_name)

    def _as_view(self, a: fx.Node, v: Val) -> Val:
        if v.kind == "view":
            return v
        ts = self.shape(a)
        return Val("view", list(v.srcs), idx=np.arange(int(np.prod(ts))).reshape(ts), base=ts, fx_name=v.fx_name)

    def _layout(self, n: fx.Node, ins: list[fx.Node], vals: list[Val], host_glue: set[str]) -> bool:
        """transpose / permute / reshape / view / unsqueeze ... of a chip signal: a new index map, no node.
        (flatten and reshapes to a vector of a plain signal keep their graph Flatten node.)"""
        tgt = n.target
        if not (n.op == "call_method" and tgt in LAYOUT_METHODS or n.op == "call_function" and tgt in LAYOUT_FUNCTIONS):
            return False
        if len(ins) != 1 or vals[0].host or n.name in host_glue or vals[0].kind not in ("sig", "view") \
                or not vals[0].srcs:
            return False
        v = vals[0]
        if v.kind == "sig":
            if tgt in ("flatten", torch.flatten) or len(self.shape(n)) == 1 and tgt in ("view", "reshape", torch.reshape):
                return False
            v = self._as_view(ins[0], v)
        x = self.rec.get(ins[0].name)
        x = x[0] if isinstance(x, tuple) else x
        B = int(x.shape[0])
        t = torch.as_tensor(v.idx).unsqueeze(0).expand(B, *v.idx.shape).contiguous()
        try:
            args = fx.node.map_arg(n.args, lambda z: t if z is ins[0] else self.rec[z.name])
            kwargs = fx.node.map_arg(n.kwargs, lambda z: t if z is ins[0] else self.rec[z.name])
            r = getattr(t, tgt)(*args[1:], **kwargs) if n.op == "call_method" else tgt(*args, **kwargs)
        except Exception:  # noqa: BLE001 - anything torch refuses here is not a pure layout op
            return False
        if not isinstance(r, torch.Tensor) or r.dim() == 0 or r.shape[0] != B or tuple(r.shape[1:]) != self.shape(n) \
                or not torch.equal(r, r[:1].expand_as(r)):
            return False  # it mixes the batch into the layout
        self.vals[n.name] = Val("view", list(v.srcs), idx=r[0].numpy().copy(), base=v.base, fx_name=n.name)
        return True

    def _host_channel_first(self, a: fx.Node, xv: Val) -> Val:
        """Tokens [N, D] from a host op into neurons: the host hands them over channel-first [D, N] (its
        program transposes, converters/host_programs.py), so that a Linear over D on chip is a kernel-1
        Conv1d with shared weights; the neurons see a token view of that layout."""
        N, D = self.shape(a)
        h = self.g.nodes[xv.srcs[0]]
        h.meta["channel_first"] = True
        h.params["out_shape"] = np.asarray([D, N], dtype=np.int64)
        self.plan.rewrites.append(f"host node '{h.name}' hands its [{N}, {D}] tokens to the chip channel-first "
                                  f"[{D}, {N}] (a transpose on the host; exact)")
        return Val("view", list(xv.srcs), idx=np.arange(D * N).reshape(D, N).T.copy(), base=(D, N), fx_name=xv.fx_name)

    def _neuron_view(self, n: fx.Node, m, path: str, xv: Val) -> None:
        """Neurons are elementwise: the layer lives in the chip layout `xv.base`; per-neuron parameters are
        permuted from torch order into it, and its spikes are the same view."""
        if snn is not None and isinstance(m, snn.RLeaky):
            raise UnsupportedError(f"module '{path}' (RLeaky) reads a permuted token view; its recurrent weights would "
                                   "need the same permutation; transpose the tokens back to channel-first first")
        a = n.args[0]
        self.vals[a.name] = Val("sig", list(xv.srcs), fx_name=xv.fx_name)
        try:
            self._neuron(n, m, path)
        finally:
            self.vals[a.name] = xv
        out = self.vals[n.name]
        name = out.srcs[0]
        node = self.g.nodes[name]
        perm = xv.idx.ravel()
        for d in (node.params, node.meta):
            for k, val in list(d.items()):
                if isinstance(val, np.ndarray) and val.ndim > 0 and val.size == perm.size:
                    gv = np.empty(perm.size, dtype=val.dtype)
                    gv[perm] = val.ravel()
                    d[k] = gv.reshape(xv.base)
        out.idx, out.base = xv.idx, xv.base
        if out.kind == "sig":
            out.kind = "view"
        self.plan.layouts[name] = xv.idx

    def _neuron_cat(self, n: fx.Node, m, path: str, xc: Val) -> None:
        """A neuron layer over a concatenation: neurons are elementwise, so it is one layer per part (its slice
        of the parameters), each fed by its part (an identity Scale where the part is not a synapse), and its
        spikes are the same concatenation, kept lazy for the Linear/Conv that reads it: an index mapping."""
        if snn is not None and isinstance(m, snn.RLeaky):
            raise UnsupportedError(f"module '{path}' (RLeaky) reads a torch.cat; its recurrent weights would span the "
                                   "parts; apply it before the concatenation")
        a = n.args[0]
        self.vals[a.name] = Val("sig", [], fx_name=xc.fx_name)  # built unconnected, then split per part
        try:
            self._neuron(n, m, path)
        finally:
            self.vals[a.name] = xc
        out = self.vals[n.name]
        full = out.srcs[0]
        node = self.g.nodes.pop(full)
        self.g.edges = [e for e in self.g.edges if full not in e]
        del self.plan.spikes[full], self.plan.membranes[full]
        parts, off = [], 0
        for i, (part, size) in enumerate(xc.parts):
            srcs = [s if self._chip_synapse_end(s) or self.g.nodes[s].placement != "chip"
                    else self.new(f"{path}.part{i}.in", "Scale", {"scale": np.asarray(1.0)}, [s]) for s in part.srcs]
            params = {k: v[off:off + size].copy() if isinstance(v, np.ndarray) and v.ndim > 0 else v
                      for k, v in node.params.items()}
            name = self.new(f"{path}.part{i}", node.op, params, srcs, placement=node.placement)
            self.g.nodes[name].meta.update({k: v[off:off + size].copy() if isinstance(v, np.ndarray) and v.ndim > 0
                                            else v for k, v in node.meta.items()})
            self.plan.spikes[name] = n.name
            self.plan.membranes[name] = path
            self.plan.slices[name] = (off, off + size)
            parts.append((Val("sig", [name], fx_name=n.name, base=(size, *part.base[1:])), size))
            off += size
        self.plan.rewrites.append(f"module '{path}' reads torch.cat '{xc.fx_name}': one neuron layer per part "
                                  f"({', '.join(v.srcs[0] for v, _ in parts)}; exact: neurons are elementwise)")
        out.parts, out.base = parts, xc.base
        if out.kind == "sig":
            self.vals[n.name] = Val("cat", parts=parts, base=xc.base, fx_name=n.name)

    def _linear_view(self, n: fx.Node, m: nn.Linear, path: str, v: Val) -> None:
        """Linear on a multi-dim or permuted signal. Over the last dim of a token view [N, D] whose chip layout
        is channel-first [D, N]: a Conv1d with kernel 1 (the weights shared by the N tokens: N·D·D_out synapses).
        On a vector view: the permutation folded into the Dense's columns (after a Flatten of the layout)."""
        w = _f64(m.weight)
        b = None if m.bias is None else _f64(m.bias)
        t = v.idx
        x = Val("sig", list(v.srcs), fx_name=v.fx_name)
        if t.ndim == 1:
            wg = np.zeros((w.shape[0], t.size))
            wg[:, t] = w
            if len(v.base) > 1:
                x = Val("sig", self._per_source(n, f"{path}.flat", x, lambda first: (
                    "Flatten", {"start_dim": 0, "end_dim": -1, "input_shape": np.asarray(v.base)})))
            names = self._per_source(n, path, x, lambda first: (
                ("Affine", {"weight": wg, "bias": b}) if first and b is not None else ("Linear", {"weight": wg})))
            if not _identity(t):
                self.plan.rewrites.append(f"{_where(self.gm, n)}: the permuted view it reads folded into its columns "
                                          "(exact; no node)")
            self.vals[n.name] = Val("sig", names, fx_name=n.name)
            return
        if t.ndim == 2 and len(v.base) >= 2 and np.array_equal(t, np.arange(t.size).reshape(t.shape[1], t.shape[0]).T):
            N, D = t.shape
            if len(v.base) != 2:  # a conv map [C, H, W] seen as tokens: [C, H·W] on chip (Flatten from dim 1)
                x = Val("sig", self._per_source(n, f"{path}.flat", x, lambda first: (
                    "Flatten", {"start_dim": 1, "end_dim": -1, "input_shape": np.asarray(v.base)})))
            params = {"weight": w[:, :, None], "bias": b, "stride": np.asarray([1]), "padding": np.asarray([0]),
                      "dilation": np.asarray([1]), "groups": 1, "input_shape": np.asarray([N])}
            names = self._per_source(n, path, x, lambda first: ("Conv1d", params if first else {**params, "bias": None}))
            d_out = w.shape[0]
            self.plan.rewrites.append(
                f"{_where(self.gm, n)} over the last dim of token view [{N}, {D}]: Conv1d with kernel 1 on the chip "
                f"layout [{D}, {N}] ({N * D * d_out} synapses, weights shared by the tokens; exact)")
            self.vals[n.name] = Val("view", names, idx=np.arange(d_out * N).reshape(d_out, N).T, base=(d_out, N),
                                    fx_name=n.name)
            return
        if t.ndim == 2 and t.size * t.shape[0] * w.shape[0] <= TOKEN_DENSE_MAX:
            # any other layout (token-major Inputs and host values): one Dense whose rows for token n read
            # that token's D inputs (a Dense's output is a vector: the view is over its d_out·N values)
            N, D = t.shape
            d_out = w.shape[0]
            wd = np.zeros((d_out * N, int(np.prod(v.base))))
            for k in range(N):
                wd[np.ix_(np.arange(d_out) * N + k, t[k])] = w
            bd = None if b is None else np.repeat(b, N)
            if len(v.base) > 1:
                x = Val("sig", self._per_source(n, f"{path}.flat", x, lambda first: (
                    "Flatten", {"start_dim": 0, "end_dim": -1, "input_shape": np.asarray(v.base)})))
            names = self._per_source(n, path, x, lambda first: (
                ("Affine", {"weight": wd, "bias": bd}) if first and bd is not None else ("Linear", {"weight": wd})))
            self.plan.rewrites.append(
                f"{_where(self.gm, n)} over the last dim of token-major [{N}, {D}]: one Dense with the weights "
                f"repeated per token ({N * D * d_out} of its {wd.size} weights non-zero; exact)")
            self.vals[n.name] = Val("view", names, idx=np.arange(d_out * N).reshape(d_out, N).T, base=(d_out * N,),
                                    fx_name=n.name)
            return
        self.refuse(n, f"applies a Linear over the last dim of a {list(t.shape)} signal laid out token-major on chip "
                       f"(as one Dense it would hold {t.size * t.shape[0] * w.shape[0]:,} weights, limit "
                       f"{TOKEN_DENSE_MAX:,})",
                    "build the tokens channel-first (x.flatten(2).transpose(1, 2) of a conv map [C, H, W]) so that "
                    "the Linear becomes a kernel-1 Conv1d, or flatten the tokens before the Linear")
        self._host_node(n, "HostOp", [n.args[0]])

    def _mean(self, n: fx.Node, a: fx.Node, v: Val, average: bool = True) -> bool:
        """Mean (sum: average=False) over token (or other non-batch) dims: a synapse with weights 1/count (1).
        Over the positions of a channel-first [D, N] layout it is a grouped Conv1d (D·N synapses); otherwise a
        Dense."""
        dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        if dims is None or n.kwargs.get("dtype") is not None:
            return False
        ts, out = self.shape(a), self.shape(n)
        rank = len(ts) + 1
        tdims = sorted((d + rank if d < 0 else d) - 1 for d in ((dims,) if isinstance(dims, int) else tuple(dims)))
        if not tdims or tdims[0] < 0:
            return False  # averages over the batch
        vv = self._as_view(a, v)
        keep = tuple(1 if i in tdims else s for i, s in enumerate(ts))
        n_out, count = int(np.prod(keep)), int(np.prod([ts[i] for i in tdims]))
        if int(np.prod(out)) != n_out:
            return False
        opos = np.broadcast_to(np.arange(n_out).reshape(keep), ts)
        mat = np.zeros((n_out, vv.idx.size))
        wt = 1.0 / count if average else 1.0
        mat[opos.ravel(), vv.idx.ravel()] = wt
        x = Val("sig", list(vv.srcs), fx_name=vv.fx_name)
        base = vv.base
        if len(base) == 2 and np.array_equal(mat, np.kron(np.eye(base[0]), np.ones((1, base[1]))) * wt):
            D, N = base
            params = {"weight": np.full((D, 1, N), wt), "bias": None, "stride": np.asarray([1]),
                      "padding": np.asarray([0]), "dilation": np.asarray([1]), "groups": D, "input_shape": np.asarray([N])}
            names = self._per_source(n, n.name, x, lambda first: ("Conv1d", params))
            self.vals[n.name] = Val("view", names, idx=np.arange(D).reshape(out), base=(D, 1), fx_name=n.name)
            how = f"grouped Conv1d over the {N} positions of each of {D} channels ({D * N} synapses, weight {wt:g})"
        else:
            if len(base) > 1:
                x = Val("sig", self._per_source(n, f"{n.name}.flat", x, lambda first: (
                    "Flatten", {"start_dim": 0, "end_dim": -1, "input_shape": np.asarray(base)})))
            names = self._per_source(n, n.name, x, lambda first: ("Linear", {"weight": mat}))
            self.vals[n.name] = Val("view", names, idx=np.arange(n_out).reshape(out), base=(n_out,), fx_name=n.name)
            how = f"Dense {n_out}x{vv.idx.size} with weights {wt:g}"
        what = "mean" if average else "sum"
        self.plan.rewrites.append(f"{_where(self.gm, n)}: {what} over dims {[d + 1 for d in tdims]} as a {how} (exact)")
        return True

    def _batchnorm_view(self, n: fx.Node, m, path: str, prev: fx.Node) -> bool:
        """BatchNorm over channel dim 1 of a signal reached through layout ops (Spikformer's
        `bn(x.transpose(1, 2)).transpose(1, 2)` after a token Linear): folded elementwise into the synapses
        that produce it (their outputs must take one factor per channel for a conv). False: not foldable."""
        pv = self.vals.get(prev.name)
        if pv is None or pv.kind not in ("sig", "view") or pv.host or m.training or m.running_mean is None:
            return False
        cur = prev
        while cur.op in ("call_method", "call_function") and (cur.target in LAYOUT_METHODS or cur.target in LAYOUT_FUNCTIONS):
            if len(cur.users) != 1:
                return False
            cur = cur.args[0]
        if len(cur.users) != 1:
            return False
        ts = self.shape(prev)
        scale, shift = _bn_affine(m)
        vv = self._as_view(prev, pv)
        gs, gh = np.empty(vv.idx.size), np.empty(vv.idx.size)
        per = (scale.size,) + (1,) * (len(ts) - 1)
        gs[vv.idx.ravel()] = np.broadcast_to(scale.reshape(per), ts).ravel()
        gh[vv.idx.ravel()] = np.broadcast_to(shift.reshape(per), ts).ravel()
        plan = []
        for s in vv.srcs:
            node = self.g.nodes[s]
            if node.op not in WEIGHTED or self.g.successors(s):
                return False
            if node.op.startswith("Conv"):
                c_out = node.params["weight"].shape[0]
                fs, fh = gs.reshape(c_out, -1), gh.reshape(c_out, -1)
                if not (np.all(fs == fs[:, :1]) and np.all(fh == fh[:, :1])):
                    return False
                plan.append((node, fs[:, 0], fh[:, 0]))
            else:
                plan.append((node, gs, gh))
        for i, (node, fs, fh) in enumerate(plan):
            w = node.params["weight"]
            node.params["weight"] = w * fs.reshape((-1,) + (1,) * (w.ndim - 1))
            b = node.params.get("bias")
            node.params["bias"] = (np.zeros_like(fs) if b is None else b * fs) + (fh if i == 0 else 0.0)
            if node.op == "Linear":
                node.op = "Affine"
            node.meta["folded_batchnorm"] = path
        self.plan.rewrites.append(f"BatchNorm '{path}' (through layout ops) folded into {', '.join(pv.srcs)} (exact: "
                                  "w·γ/√(σ²+ε), (b−μ)·γ/√(σ²+ε)+β per channel)")
        self.vals[n.name] = self._like(pv, pv.srcs, n.name)
        return True

    def _split_linear(self, n: fx.Node, m: nn.Linear, x: Val) -> None:
        w = _f64(m.weight)
        names, off = [], 0
        for i, (part, size) in enumerate(x.parts):
            sub = w[:, off:off + size]
            off += size
            names += self._per_source(n, f"{n.target}.part{i}", part, lambda first, i=i, sub=sub: (
                ("Affine", {"weight": sub, "bias": _f64(m.bias)}) if first and i == 0 and m.bias is not None
                else ("Linear", {"weight": sub})))
        self.plan.rewrites.append(
            f"torch.cat '{x.fx_name}' into Linear '{n.target}': split into {len(names)} Linear nodes "
            f"({', '.join(names)}) summed into the same target (exact; the concatenation stays on chip)")
        self.vals[n.name] = Val("sig", names, fx_name=n.name)

    def _flatten(self, n: fx.Node, path: str, start: int, end: int) -> None:
        xc = self.vals[n.args[0].name]
        if xc.kind == "cat" and xc.base == ("channel",):
            # flattening a channel concatenation concatenates the flattened parts: a flat lazy cat
            parts = []
            for i, (part, _) in enumerate(xc.parts):
                names = self._per_source(n, f"{path}.part{i}", part, lambda first, b=part.base: (
                    "Flatten", {"start_dim": 0, "end_dim": -1, "input_shape": np.asarray(b)}))
                parts.append((Val("sig", names, fx_name=part.fx_name), int(np.prod(part.base))))
            self.vals[n.name] = Val("cat", parts=parts, fx_name=n.name)
            if not all(u.op == "call_module" and isinstance(self.gm.get_submodule(u.target), nn.Linear) for u in n.users):
                self.materialize_cat(n)
            return
        x = self.sig(n.args[0], n)
        if x.host:
            self.vals[n.name] = Val("sig", list(x.srcs), host=True, fx_name=n.name)
            self._glue(n, [n.args[0]])
            return
        if start == 0:
            self.refuse(n, "flattens the batch dimension", "flatten from dim 1")
        in_shape = self.shape(n.args[0])
        nd = len(in_shape)
        end_g = end - 1 if end > 0 else end
        start_g = max(start - 1, 0) if start > 0 else start + nd + 1 - 1
        names = self._per_source(n, path, x, lambda first: (
            "Flatten", {"start_dim": start_g, "end_dim": end_g, "input_shape": np.asarray(in_shape)}))
        self.vals[n.name] = Val("sig", names, fx_name=n.name)

    def _batchnorm(self, n: fx.Node, m, path: str) -> None:
        prev = n.args[0]
        if prev.op != "call_module" and self._batchnorm_view(n, m, path, prev):
            return
        pm = self.gm.get_submodule(prev.target) if prev.op == "call_module" else None
        foldable = isinstance(pm, nn.Linear | nn.Conv1d | nn.Conv2d) and len(prev.users) == 1
        pv = self.vals[prev.name]
        if not foldable or len(pv.srcs) != 1:
            self.refuse(n, "BatchNorm can only be folded into a Conv/Linear that feeds it alone",
                        "put the BatchNorm directly after a Conv2d/Conv1d/Linear")
            self.vals[n.name] = pv
            return
        if m.training or m.running_mean is None:
            self.refuse(n, "BatchNorm without running statistics (track_running_stats=False) uses batch "
                           "statistics", "train with track_running_stats=True")
        mean, var = _f64(m.running_mean), _f64(m.running_var)
        gamma = _f64(m.weight) if m.affine else np.ones_like(mean)
        beta = _f64(m.bias) if m.affine else np.zeros_like(mean)
        scale = gamma / np.sqrt(var + float(m.eps))
        shift = beta - mean * scale
        node = self.g.nodes[pv.srcs[0]]
        w = node.params["weight"]
        node.params["weight"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        b = node.params.get("bias")
        b = np.zeros_like(mean) if b is None else b
        node.params["bias"] = b * scale + shift
        if node.op == "Linear":
            node.op = "Affine"
        node.meta["folded_batchnorm"] = path
        self.plan.rewrites.append(f"BatchNorm '{path}' folded into '{node.name}' (exact: w·γ/√(σ²+ε), "
                                  "(b−μ)·γ/√(σ²+ε)+β)")
        self.vals[n.name] = Val("sig", [node.name], fx_name=n.name)

    # -- neurons ---------------------------------------------------------------------------------
    def _neuron(self, n: fx.Node, m, path: str) -> None:
        """snnTorch Leaky/RLeaky -> LIF (IF for beta=1), Synaptic -> CubaLIF, spikingjelly LIFNode -> LIF,
        IFNode -> IF. The reset rule goes into node.meta ("reset", "reset_delay", "fire_at_equal"; see
        graph.RULE_KEYS), read from the module's parameters: snnTorch's reset_mechanism and reset_delay,
        spikingjelly's v_reset (None: subtract v_threshold) and its v >= v_threshold firing."""
        kind = type(m).__name__
        if is_sj_neuron(m):
            self._sj_neuron(n, m, path)
            return
        if not isinstance(m, snn.Leaky | snn.Synaptic | snn.RLeaky):
            self.refuse(n, f"snnTorch neuron {kind} is not supported", "use Leaky, Synaptic or RLeaky")
            self._host_node(n, "HostOp", self.tensor_args(n)[:1])
            return
        x = self._neuron_input(path, self.sig(n.args[0], n))
        shape = self.shape(n)
        size = int(np.prod(shape))

        def per_neuron(t, what):
            a = _f64(t)
            if a.size not in (1, size):
                raise UnsupportedError(f"module '{path}' ({kind}): {what} has {a.size} values for {size} neurons")
            return np.broadcast_to(a.reshape(a.shape if a.size == size else ()), shape).reshape(shape).copy()

        rm = m.reset_mechanism
        delay = bool(getattr(m, "reset_delay", False))
        if rm not in ("zero", "subtract"):
            self.refuse(n, f"reset_mechanism='{rm}' (no reset) has no chip neuron model",
                        "use reset_mechanism='subtract' or 'zero'")
            rm = "zero"
        if rm == "zero" and delay and not isinstance(m, snn.Leaky):
            # Synaptic and RLeaky zero the membrane *after* integrating the step's input (mem - reset·mem),
            # Leaky before it ((1 - reset)·mem, then beta·mem + input); only Leaky's rule is modelled
            self.refuse(n, f"{kind} with reset_mechanism='zero' and reset_delay=True zeroes the membrane after "
                           "integrating the input, a rule no backend models",
                        "use reset_delay=False, or reset_mechanism='subtract'")
            delay = False
        self.resets.add((rm, delay))
        gsf = _f64(getattr(m, "graded_spikes_factor", 1.0))
        if np.any(gsf != 1.0):
            self.refuse(n, f"graded_spikes_factor={gsf.ravel()[:4].tolist()} scales spikes; NIR spikes are 1",
                        "set graded_spikes_factor=1 and fold the factor into the next layer's weights")
        if m.state_quant:
            self.refuse(n, "state_quant quantizes the membrane in the forward pass; NIR has no such state",
                        "export without state_quant (quantization is spikedeploy's own step)")
        if m.inhibition:
            self.refuse(n, "inhibition=True (winner-take-all) has no NIR equivalent", "train without inhibition")
        beta32 = m.beta.detach().clamp(0, 1)
        beta = per_neuron(beta32, "beta")
        if np.any(_f64(m.beta) != _f64(beta32)):
            self.plan.rewrites.append(f"'{path}': beta clipped to [0, 1] as snnTorch does in its forward")
        thr = per_neuron(m.threshold, "threshold")
        meta = {"source_module": f"snntorch.{kind}", "beta": per_neuron(beta32, "beta").astype(np.float32),
                "reset": rm, "reset_delay": delay, "fire_at_equal": False,
                # snnTorch subtracts the pending reset before firing and corrects after (do_reset = spk - reset)
                "pending_reset": rm == "subtract" and not delay}
        dt = self.dt
        v_leak = np.zeros(shape)
        rec = None
        if isinstance(m, snn.RLeaky):
            rec = m.recurrent
            rb = getattr(rec, "bias", None)
            if isinstance(rec, nn.Linear | nn.Conv2d) and rb is not None:
                # snnTorch adds the recurrent bias from the first step on, before any spike has travelled
                # round the loop; as a constant input current it is exact: v_leak = r·b
                b = _f64(rb)
                b = np.broadcast_to(b.reshape((-1,) + (1,) * (len(shape) - 1)), shape) if isinstance(rec, nn.Conv2d) else b
                if np.any(beta >= 1):
                    raise UnsupportedError(f"module '{path}' (RLeaky): beta=1 with a recurrent bias has no NIR "
                                           "equivalent; use recurrent bias=False or beta<1")
                v_leak = b / (1.0 - beta)
        if isinstance(m, snn.Synaptic):
            alpha32 = m.alpha.detach().clamp(0, 1)
            alpha = per_neuron(alpha32, "alpha")
            if np.any(alpha >= 1) or np.any(beta >= 1):
                raise UnsupportedError(f"module '{path}' (Synaptic): alpha=1 or beta=1 (no decay) has no "
                                       "CubaLIF equivalent (tau would be infinite); use values below 1")
            meta["alpha"] = alpha.astype(np.float32)
            params = {"tau_syn": dt / (1 - alpha), "tau_mem": dt / (1 - beta), "r": 1 / (1 - beta),
                      "v_leak": v_leak, "w_in": 1 / (1 - alpha), "v_threshold": thr, "v_reset": np.zeros(shape)}
            op = "CubaLIF"
        elif np.all(beta == 1.0):
            params = {"r": np.full(shape, 1.0 / dt), "v_threshold": thr, "v_reset": np.zeros(shape)}
            op = "IF"
        elif np.any(beta == 1.0):
            raise UnsupportedError(f"module '{path}' ({kind}): some neurons have beta=1 (no leak) and others "
                                   "beta<1; NIR has no per-neuron LIF/IF mix; split the layer or use beta<1")
        else:
            params = {"tau": dt / (1 - beta), "r": 1 / (1 - beta), "v_leak": v_leak, "v_threshold": thr,
                      "v_reset": np.zeros(shape)}
            op = "LIF"
            back = (1.0 - dt / params["tau"]).astype(np.float32)
            if not np.array_equal(back, meta["beta"]):
                bad = int((back != meta["beta"]).sum())
                self.plan.deviations.append(f"'{path}': beta -> tau -> beta changes {bad} float32 values")
        name = self.new(path, op, params, x)
        self.g.nodes[name].meta.update(meta)
        if rec is not None:
            self._recurrent(name, path, rec, shape)
        self.plan.spikes[name] = n.name
        self.plan.membranes[name] = path
        self.vals[n.name] = Val("tuple", [name], fx_name=n.name)
        has_tuple_users = any(u.op == "call_function" and u.target is operator.getitem for u in n.users)
        if not has_tuple_users:
            self.vals[n.name] = Val("sig", [name], fx_name=n.name)

    def _sj_neuron(self, n: fx.Node, m, path: str) -> None:
        """spikingjelly LIFNode / IFNode onto NIR LIF / IF, exactly (dt = the graph's dt):

        LIFNode decay_input=True:  v += (x − (v − v_reset))/tau  ->  LIF(tau=tau·dt, r=1,   v_leak=v_reset)
        LIFNode decay_input=False: v += −(v − v_reset)/tau + x   ->  LIF(tau=tau·dt, r=tau, v_leak=v_reset)
        IFNode:                    v += x                        ->  IF(r=1/dt)
        since LIF's v += dt/tau_nir · (v_leak − v + r·x). v_reset=None (soft reset) means subtract v_threshold,
        and the leak then pulls towards 0 (spikingjelly's neuronal_charge with v_reset=None). Every node fires
        at v >= v_threshold (heaviside(0) = 1), recorded as meta "fire_at_equal".
        """
        kind = type(m).__name__
        x = self.sig(n.args[0], n)
        if type(m) not in (sj_neuron.LIFNode, sj_neuron.IFNode):
            self.refuse(n, f"spikingjelly neuron {kind} is not supported", "use neuron.LIFNode or neuron.IFNode")
            self._host_node(n, "HostOp", self.tensor_args(n)[:1])
            return
        shape = self.shape(n)
        vr = m.v_reset
        th = float(m.v_threshold)
        full = lambda v: np.full(shape, float(v))  # noqa: E731
        meta = {"source_module": f"spikingjelly.{kind}", "reset": "subtract" if vr is None else "zero",
                "reset_delay": False, "fire_at_equal": True, "v_reset_source": "None" if vr is None else float(vr)}
        v0 = 0.0 if vr is None else float(vr)
        if isinstance(m, sj_neuron.LIFNode):
            tau = float(m.tau)
            meta.update(tau_steps=tau, decay_input=bool(m.decay_input))
            params = {"tau": full(tau * self.dt), "r": full(1.0 if m.decay_input else tau), "v_leak": full(v0),
                      "v_threshold": full(th), "v_reset": full(v0)}
            op = "LIF"
        else:
            params = {"r": full(1.0 / self.dt), "v_threshold": full(th), "v_reset": full(v0)}
            op = "IF"
        self.resets.add((meta["reset"], False))
        name = self.new(path, op, params, x)
        self.g.nodes[name].meta.update(meta)
        self.plan.spikes[name] = n.name
        self.plan.membranes[name] = path
        self.vals[n.name] = Val("sig", [name], fx_name=n.name)

    def _recurrent(self, lif: str, path: str, rec: nn.Module, shape) -> None:
        wname = f"{path}.w_rec"
        if isinstance(rec, nn.Linear):
            self.new(wname, "Linear", {"weight": _f64(rec.weight)}, [lif])
        elif isinstance(rec, nn.Conv2d):
            self.new(wname, "Conv2d", {"weight": _f64(rec.weight), "bias": None,
                                       "stride": np.asarray(rec.stride), "padding": np.asarray(rec.padding),
                                       "dilation": np.asarray(rec.dilation), "groups": int(rec.groups),
                                       "input_shape": np.asarray(shape[1:])}, [lif])
        elif isinstance(rec, RecurrentOneToOne):
            v = _f64(rec.V)
            self.new(wname, "Scale", {"scale": np.broadcast_to(v, shape).copy() if v.size > 1 else v.reshape(())},
                     [lif])
        else:
            raise UnsupportedError(f"module '{path}' (RLeaky): recurrent module {type(rec).__name__} unknown")
        self.g.connect(wname, lif)

    # -- functions and methods -------------------------------------------------------------------
    def _function(self, n: fx.Node, host_glue: set[str]) -> None:
        tgt = n.target
        ins = self.tensor_args(n)
        vals = [self.vals[a.name] for a in ins]
        if not ins:  # constant folding: sizes, parameters, python arithmetic
            self.vals[n.name] = Val("const")
            return
        if n.op == "call_function" and tgt is operator.getitem and vals[0].kind == "tuple":
            idx = n.args[1]
            src = vals[0].srcs[0]
            if idx == 0 and vals[0].parts:  # spikes of a neuron layer split over a concatenation
                self.vals[n.name] = Val("cat", parts=vals[0].parts, base=vals[0].base, fx_name=n.name)
            elif idx == 0:
                self.vals[n.name] = self._like(vals[0], [src], n.name)
            else:
                self.vals[n.name] = Val("mem", [src], fx_name=n.name)
            return
        any_host = any(v.host for v in vals)
        if self._layout(n, ins, vals, host_glue):
            return
        if n.op == "call_function" and tgt in ADD and len(ins) == 2 and not any_host \
                and all(v.kind == "view" for v in vals) and _same_view(*vals):
            if len(vals[0].base) != len(vals[1].base):  # same element order, other ranks: both flat
                flat = []
                for v in vals:
                    flat.append(Val("view", self._per_source(n, f"{n.name}.flat", Val("sig", list(v.srcs)), lambda first, b=v.base: (
                        "Flatten", {"start_dim": 0, "end_dim": -1, "input_shape": np.asarray(b)})) if len(v.base) > 1
                        else list(v.srcs), idx=v.idx, base=(int(np.prod(v.base)),), fx_name=v.fx_name))
                vals = flat
            self.vals[n.name] = self._like(vals[0], vals[0].srcs + vals[1].srcs, n.name)
            return
        if (n.op == "call_method" and tgt in ("mean", "sum") or n.op == "call_function" and tgt in (torch.mean, torch.sum)) \
                and len(ins) == 1 and not any_host and n.name not in host_glue and vals[0].kind in ("sig", "view") \
                and self._mean(n, ins[0], vals[0], average=tgt in ("mean", torch.mean)):
            return
        if n.op == "call_function" and tgt in ADD and len(ins) == 2 and not any_host:
            a, b = (self.sig(x, n) for x in ins)
            if self.shape(ins[0]) != self.shape(ins[1]):
                self.refuse(n, f"adds shapes {self.shape(ins[0])} and {self.shape(ins[1])} (broadcast)",
                            "add signals of equal shape")
            self.vals[n.name] = Val("sig", a.srcs + b.srcs, fx_name=n.name)
            return
        if n.op == "call_function" and tgt in ADD + (operator.sub, torch.sub) and len(ins) == 1 and not any_host:
            self.refuse(n, "adds a constant to a signal", "use the bias of the preceding Linear/Conv")
        if (n.op == "call_function" and tgt in MUL + DIV or n.op == "call_method" and tgt in ("mul", "div")) \
                and len(ins) == 1 and not any_host and n.name not in host_glue:
            v0 = self.vals[ins[0].name]
            view = v0 if v0.kind == "view" else None  # a constant scale is elementwise: any layout passes
            x = Val("sig", list(v0.srcs), fx_name=v0.fx_name) if view else self.sig(ins[0], n)
            other = [a for a in n.args if a is not ins[0]][0]
            c = self._const_value(other)
            if c is None or (tgt in DIV or tgt == "div") and n.args[0] is not ins[0]:
                self.refuse(n, "scales a signal by a non-constant", "use a constant scale")
                c = 1.0
            c = np.asarray(c, dtype=np.float64)
            if tgt in DIV or tgt == "div":
                c = 1.0 / c
            if view is not None and c.size != 1:
                self.refuse(n, "scales a permuted token view by a non-scalar", "scale by a scalar")
            names = self._per_source(n, n.name, x, lambda first: ("Scale", {"scale": c}))
            self.vals[n.name] = self._like(view, names, n.name) if view else Val("sig", names, fx_name=n.name)
            return
        if n.op == "call_function" and tgt in CAT:
            self._cat(n, ins)
            return
        is_flat = (n.op == "call_function" and tgt is torch.flatten) or (n.op == "call_method" and tgt == "flatten")
        if is_flat and not any_host and n.name not in host_glue:
            sd = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
            ed = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
            self._flatten(n, n.name, int(sd), int(ed))
            return
        if n.op == "call_method" and tgt in ("view", "reshape") and not any_host and n.name not in host_glue:
            out = self.shape(n)
            if len(out) == 1:
                self._flatten(n, n.name, 1, -1)
                return
        if n.op == "call_function" and tgt in MUL and len(ins) == 2 and self._lower_and(n, ins):
            return
        if n.op == "call_function" and tgt is F.max_pool2d and self._lower_or(n, ins[0], _maxpool_args(n)):
            return
        if self._is_host_op(n):
            op = "Mul" if tgt in MUL else HOST_FUNCTIONS.get(tgt) or HOST_METHODS.get(tgt)
            self._host_node(n, op, ins)
            return
        if any_host or n.name in host_glue:
            srcs = [s for a, v in zip(ins, vals, strict=True) for s in (self.sig(a, n).srcs if v.kind != "mem" else [])]
            self.vals[n.name] = Val("sig", srcs, host=any_host, fx_name=n.name)
            self._glue(n, ins)
            return
        self._host_node(n, "HostOp", ins, reason="no chip equivalent (on chip: `+` fan-in, torch.cat, constant "
                        "scales, shape changes before a Linear)")

    def _glue(self, n: fx.Node, ins: list[fx.Node]) -> None:
        self.plan.host_fx.append(n.name)
        v = self.vals[n.name]
        if v.host and len(v.srcs) == 1:
            node = self.g.nodes[v.srcs[0]]
            if node.spec.family == "host":
                shp = self.rec.get(n.name)
                if isinstance(shp, torch.Tensor) and shp.dim() >= 1:
                    node.params["out_shape"] = np.asarray(self.shape(n))

    def _const_value(self, a):
        if isinstance(a, int | float):
            return a
        if isinstance(a, fx.Node):
            v = self.rec.get(a.name)
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                return float(v)
            if isinstance(v, int | float):
                return v
        return None

    def _cat(self, n: fx.Node, ins: list[fx.Node]) -> None:
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
        parts_fx = list(n.args[0])
        vals = [self._plain(self.vals[a.name], n, k) for k, a in enumerate(parts_fx)]
        flat = all(len(self.shape(a)) == 1 for a in parts_fx) and dim in (1, -1)
        if flat and not any(v.host or v.kind != "sig" for v in vals):
            self.vals[n.name] = Val("cat", parts=[(v, self.shape(a)[0]) for v, a in zip(vals, parts_fx, strict=True)],
                                    fx_name=n.name)
            if all(u.op == "call_module" and (isinstance(self.gm.get_submodule(u.target), nn.Linear)
                                              or self._splittable_neuron(u)) for u in n.users):
                return
        rank = len(self.shape(parts_fx[0])) + 1
        channel = all(len(self.shape(a)) >= 2 for a in parts_fx) and dim in (1, 1 - rank)
        if channel and not any(v.host or v.kind != "sig" for v in vals) and all(self._reads_channel_cat(u) for u in n.users):
            # concatenation over channels: kept as parts (an index mapping, no node) for convs and flattens to split
            self.vals[n.name] = Val("cat", parts=[(Val("sig", list(v.srcs), fx_name=v.fx_name, base=self.shape(a)),
                                                   self.shape(a)[0]) for v, a in zip(vals, parts_fx, strict=True)],
                                    fx_name=n.name, base=("channel",))
            return
        self.vals[n.name] = Val("cat", parts=[(self.sig(a, n), 0) for a in parts_fx], fx_name=n.name)
        self.materialize_cat(n)
        self.g.nodes[self.vals[n.name].srcs[0]].meta["dim"] = int(dim)

    def _plain(self, v: Val, n: fx.Node, k: int) -> Val:
        """A view in identity order is a plain signal (flattened when its chip layout has more dims), so that a
        concatenation of token means splits into the Linear that reads it."""
        if v.kind != "view" or not _identity(v.idx):
            return v
        if len(v.base) == len(v.idx.shape) and tuple(v.base) == tuple(v.idx.shape):
            return Val("sig", list(v.srcs), fx_name=v.fx_name)
        srcs = self._per_source(n, f"{n.name}.part{k}.flat", Val("sig", list(v.srcs)), lambda first: (
            "Flatten", {"start_dim": 0, "end_dim": -1, "input_shape": np.asarray(v.base)})) if len(v.base) > 1 \
            else list(v.srcs)
        return Val("sig", srcs, fx_name=v.fx_name)

    def _splittable_neuron(self, u: fx.Node) -> bool:
        if u.op != "call_module":
            return False
        m = self.gm.get_submodule(u.target)
        return is_neuron(m) and not (snn is not None and isinstance(m, snn.RLeaky))

    def _reads_channel_cat(self, u: fx.Node) -> bool:
        """A user that can take a channel concatenation part by part: a Conv (groups 1), a flatten from dim 1,
        a neuron layer (split per part)."""
        if self._splittable_neuron(u):
            return True
        if u.op == "call_module":
            m = self.gm.get_submodule(u.target)
            return isinstance(m, nn.Conv1d | nn.Conv2d) and m.groups == 1 or \
                isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
        if u.target in ("flatten", torch.flatten):
            sd = u.args[1] if len(u.args) > 1 else u.kwargs.get("start_dim", 0)
            ed = u.args[2] if len(u.args) > 2 else u.kwargs.get("end_dim", -1)
            return sd == 1 and ed == -1
        return False

    def _split_conv(self, n: fx.Node, m, path: str, x: Val) -> None:
        """Conv over a channel concatenation: one Conv per part with its slice of input channels, summed into
        the same target (exact: the conv is linear in its input channels; the concatenation stays on chip)."""
        nd = 1 if isinstance(m, nn.Conv1d) else 2
        w = _f64(m.weight)
        names, off = [], 0
        for i, (part, c) in enumerate(x.parts):
            params = {"weight": w[:, off:off + c], "bias": None if m.bias is None or i else _f64(m.bias),
                      "stride": np.asarray(m.stride), "dilation": np.asarray(m.dilation), "groups": 1,
                      "padding": m.padding if isinstance(m.padding, str) else np.asarray(m.padding),
                      "input_shape": np.asarray(part.base[1:])}
            off += c
            names += self._per_source(n, f"{path}.part{i}", part, lambda first, p=params: (
                f"Conv{nd}d", p if first else {**p, "bias": None}))
        self.plan.rewrites.append(f"torch.cat '{x.fx_name}' (channels) into Conv '{path}': split into {len(names)} Conv "
                                  f"nodes ({', '.join(names)}) summed into the same target (exact; no concat node)")
        self.vals[n.name] = Val("sig", names, fx_name=n.name)

    def _host_node(self, n: fx.Node, op: str, ins: list[fx.Node], reason: str = "") -> None:
        srcs = []
        operands = []
        for a in ins:
            v = self.sig(a, n)
            operands.append(list(v.srcs))
            srcs += [s for s in v.srcs if s not in srcs]
        name = n.target if n.op == "call_module" else n.name
        shp = self.shape(n) if isinstance(self.rec.get(n.name), torch.Tensor | tuple) else ()
        name = self.new(str(name), op, {"out_shape": np.asarray(shp, dtype=np.int64)}, srcs)
        node = self.g.nodes[name]
        node.meta["operands"] = operands
        node.meta["torch"] = _where(self.gm, n)
        node.meta["host_reason"] = reason or f"{op}: no exact chip mapping"
        self.plan.host_fx.append(n.name)
        self.vals[n.name] = Val("sig", [name], host=True, fx_name=n.name)

    # -- outputs and the host boundary -----------------------------------------------------------
    def _outputs(self, n: fx.Node) -> None:
        res = n.args[0]
        if isinstance(res, dict):
            items = list(res.items())
        elif isinstance(res, tuple | list):
            names = self.t.output_names or [f"output_{i}" for i in range(len(res))]
            items = list(zip(names, res, strict=False))
        else:
            items = [("output", res)]
        for oname, a in items:
            if not isinstance(a, fx.Node):
                continue
            v = self.vals[a.name]
            if v.kind == "tuple":
                v = Val("sig", v.srcs[:1], fx_name=a.name)
            if v.kind in ("mem", "const"):
                self.plan.dropped_outputs.append(f"{oname} ({'membrane' if v.kind == 'mem' else 'constant'})")
                continue
            if v.kind == "cat":
                v = self.materialize_cat(a)
            name = self.new(str(oname), "Output", {}, v, placement="host" if v.host else "chip")
            self.plan.outputs[name] = a.name
            if v.kind == "view" and not _identity(v.idx):  # the chip holds it permuted: runs give it back in
                self.g.nodes[name].meta["model_index"] = v.idx.copy()  # the model's order (run.model_layout)

    def _mark_boundaries(self) -> None:
        g = self.g
        for name, node in g.nodes.items():
            if node.placement != "host" or node.op == "Output":
                continue
            for s in g.successors(name):
                if g.nodes[s].placement == "chip" and g.nodes[s].op != "Output":
                    self.plan.from_host[name] = self._fx_feeding(name, s)


    def _fx_feeding(self, host: str, chip: str) -> str:
        """The fx value a chip node reads from a host node (after any shape glue)."""
        best = None
        for fxn, v in self.vals.items():
            if v.kind == "sig" and v.host and v.srcs == [host]:
                best = fxn  # the last one in program order is what chip layers consume
        return best


def _bn_affine(m) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in eval mode as y = scale·x + shift per channel."""
    mean, var = _f64(m.running_mean), _f64(m.running_var)
    gamma = _f64(m.weight) if m.affine else np.ones_like(mean)
    beta = _f64(m.bias) if m.affine else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + float(m.eps))
    return scale, beta - mean * scale


def build_graph(traced: Traced, rec0: dict[str, Any], *, dt: float, allow_approximate: bool = False,
                host_modules=()):
    """Graph and Plan from a traced step function and one recorded step (for shapes); modules whose path is
    in `host_modules` (or below one) run on the host."""
    b = _Builder(traced, rec0, dt, allow_approximate, host_modules)
    g, plan = b.build()
    if b.resets - {("zero", False)}:
        # each neuron node carries its rule in node.meta (exact in spikedeploy's backends); the graph-wide
        # default follows when all agree, for readers of graph.reset. Other NIR readers reset to zero.
        if len(b.resets) == 1:
            g.reset, g.reset_delay = next(iter(b.resets))
        plan.rewrites.append(f"reset rules {sorted(f'{r}' + (' delayed' if d else '') for r, d in b.resets)} kept "
                             "per neuron node in node.meta['reset'/'reset_delay'] (NIR has no field for them: "
                             "readers other than spikedeploy reset to zero in the step of the spike)")
        g.meta["rewrites"] = list(plan.rewrites)
    return g, plan


def forward_signature(model: nn.Module) -> list[str]:
    try:
        return [p for p in inspect.signature(model.forward).parameters]
    except (TypeError, ValueError):
        return []
