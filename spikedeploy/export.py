"""`spikedeploy export`: a trained torch/snnTorch model -> Graph (-> NIR file, + ONNX for the host part).

The export checks its own result before writing anything: the traced step function is run over T steps
on sample inputs, the chip part of the exported Graph is run by the float backend on the same inputs
(host-side values are fed from torch), and every spiking node must produce the same spikes. The float
backend computes in float64 while snnTorch computes in float32, so a membrane within rounding of its
threshold can fire on one side only; when float32 spikes differ, the model is re-run in float64 and
must then match exactly (the mapping is exact; the float32 divergence is recorded as rounding).
Anything else raises, naming the first mismatching node, and nothing is written.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spikedeploy.converters import torch_export as tx
from spikedeploy.errors import FileFormatError, SpikeDeployError, UnsupportedError
from spikedeploy.graph.ir import Graph, Node

DEFAULT_DT = 1e-3
DEFAULT_STEPS = 10


class ExportCheckError(SpikeDeployError):
    """The exported graph does not reproduce the torch model's spikes."""


@dataclass
class ExportResult:
    graph: Graph
    check: dict[str, Any]
    out_path: Path | None = None
    onnx_path: Path | None = None
    onnx_check: dict[str, Any] | None = None
    deviations: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        st = self.graph.stats()["total"]
        return {
            "nodes": st["nodes"], "host_nodes": st["host_nodes"], "neurons": st["neurons"],
            "inputs": self.graph.inputs, "outputs": self.graph.outputs, "dt": self.graph.dt,
            "check": self.check, "onnx_check": self.onnx_check, "deviations": self.deviations,
            "rewrites": self.rewrites, "out_path": str(self.out_path) if self.out_path else None,
            "onnx_path": str(self.onnx_path) if self.onnx_path else None,
        }


# ---- loading ---------------------------------------------------------------------------------------


def load_entrypoint(spec: str, checkpoint: str | Path | None = None) -> nn.Module:
    """`package.module:factory` -> model, with `checkpoint` loaded by torch.load(weights_only=True).

    A checkpoint is a state_dict, or a dict holding one under "state_dict" (and optionally the
    factory's "config", passed to the factory as its first argument)."""
    if ":" not in spec:
        raise UnsupportedError(f"entry point '{spec}' must look like 'package.module:factory'")
    mod_name, fn_name = spec.split(":", 1)
    try:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError:
            # as `python -m` does, let entry points name modules of the current directory
            if os.getcwd() in sys.path:
                raise
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
        fn = getattr(module, fn_name)
    except (ImportError, AttributeError) as e:
        raise UnsupportedError(f"entry point '{spec}': {type(e).__name__}: {e}; check the module path and name "
                               "(the package must be importable from the current directory)") from e
    ck = None
    if checkpoint is not None:
        try:
            ck = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
        except FileNotFoundError as e:
            raise FileFormatError(f"{checkpoint}: no such checkpoint file") from e
        except Exception as e:
            raise FileFormatError(f"{checkpoint}: cannot be loaded with torch.load(weights_only=True) "
                                  f"({type(e).__name__}: {e}); save a plain state_dict") from e
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if isinstance(ck, dict) and "config" in ck and params:
        model = fn(ck["config"])
    else:
        model = fn()
    if ck is not None:
        sd = ck.get("state_dict", ck) if isinstance(ck, dict) else None
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise FileFormatError(f"{checkpoint}: holds no state_dict (a dict of tensors, or one under "
                                  "'state_dict')")
        try:
            model.load_state_dict(sd)
        except RuntimeError as e:
            raise FileFormatError(f"{checkpoint}: does not fit {type(model).__name__}: {str(e).splitlines()[0]}") from e
    return model


def _sample_inputs(model: nn.Module, traced: tx.Traced, steps: int, batch: int, seed: int,
                   input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    shapes: dict[str, tuple[int, ...]] = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    given = getattr(model, "input_shapes", None)
    if isinstance(given, dict):
        for k, v in given.items():
            shapes.setdefault(k, tuple(v))
    if traced.mode == "chains":
        for child, name in zip(tx._chains(model), traced.inputs.values(), strict=True):
            shp = getattr(getattr(model, child), "input_shape", None)
            if shp is not None:
                shapes.setdefault(name, tuple(shp))
    missing = [n for n in traced.inputs.values() if n not in shapes]
    if missing:
        raise UnsupportedError(
            f"no example inputs for {missing}: pass example_inputs={{name: tensor [T, B, ...]}} or input_shapes= "
            "(CLI: --input NAME=X.npy or --input-shape NAME=D1,D2,...), or give the model an `input_shapes` dict")
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand((steps, batch, *shapes[n]), generator=gen) for n in traced.inputs.values()}


# ---- the check -------------------------------------------------------------------------------------


def chip_part(graph: Graph, plan: tx.Plan, fx_shapes: dict[str, tuple[int, ...]]) -> Graph:
    """The chip nodes of `graph`: host nodes that feed chip nodes become Inputs of the same name, chip
    nodes that feed host nodes get an Output '<src>->host'."""
    g = Graph(dt=graph.dt, reset=graph.reset, reset_delay=graph.reset_delay, meta={})
    chip = {n for n, v in graph.nodes.items() if v.placement == "chip"}
    for name, node in graph.nodes.items():
        if name in chip:
            g.add(copy.deepcopy(node))
        elif name in plan.from_host:
            shp = fx_shapes[plan.from_host[name]]
            if node.meta.get("channel_first"):
                shp = (*shp[:-2], shp[-1], shp[-2])
            g.add(Node(name, "Input", {"shape": np.asarray(shp, dtype=np.int64)},
                       meta={"from_host": True, "channel_first": bool(node.meta.get("channel_first"))}))
    for a, b in graph.edges:
        if a in g.nodes and b in chip:
            g.connect(a, b)
        elif a in chip and b not in chip:
            out = f"{a}->host"
            if out not in g.nodes:
                g.add(Node(out, "Output", {}))
                g.connect(a, out)
    return g


def _torch_spikes(records, plan: tx.Plan) -> dict[str, np.ndarray]:
    out = {}
    for node, fxn in plan.spikes.items():
        vals = []
        for r in records:
            v = r[fxn]
            vals.append((v[0] if isinstance(v, tuple) else v).detach().to(torch.float64).numpy())
        out[node] = np.stack(vals)
        if node in plan.slices:  # one part of a neuron layer split over a concatenation
            a, b = plan.slices[node]
            out[node] = out[node][:, :, a:b]
        idx = plan.layouts.get(node)
        if idx is not None:  # a neuron in a permuted token view: compare in the graph's (chip) order
            arr = out[node].reshape(*out[node].shape[:2], -1)
            g = np.empty_like(arr)
            g[..., idx.ravel()] = arr
            out[node] = g
    return out


def _feeds(sub: Graph, inputs: dict[str, torch.Tensor], records, plan: tx.Plan, steps: int) -> dict[str, np.ndarray]:
    feeds = {}
    for name in sub.inputs:
        if name in plan.from_host:
            fxn = plan.from_host[name]
            feeds[name] = np.stack([r[fxn].detach().to(torch.float64).numpy() for r in records])
            if sub.nodes[name].meta.get("channel_first"):
                feeds[name] = np.swapaxes(feeds[name], -1, -2)
        else:
            x = inputs[name].detach()
            if x.shape[0] == 1 and steps > 1:
                x = x.expand(steps, *x.shape[1:])
            feeds[name] = x[:steps].to(torch.float64).numpy()
    return feeds


def _compare(sub: Graph, spikes: dict[str, np.ndarray], run) -> tuple[dict | None, int, int]:
    """First mismatch in time (then evaluation order), number of mismatching entries, spikes compared."""
    order = run.meta.get("order", list(sub.nodes))
    first, bad, total = None, 0, 0
    for name in order:
        if name not in spikes:
            continue
        ref = spikes[name]
        got = run.traces[name]["s"].reshape(ref.shape)
        total += int(ref.sum())
        diff = ref != got
        n = int(diff.sum())
        if n:
            bad += n
            t, b, *idx = (int(i) for i in np.argwhere(diff)[0])
            if first is None or t < first["step"]:
                first = {"node": name, "step": t, "sample": b, "neuron": idx, "torch": float(ref[(t, b, *idx)]),
                         "graph": float(got[(t, b, *idx)]), "mismatches": n}
    return first, bad, total


def _check(graph: Graph, plan: tx.Plan, inputs, records, steps: int):
    from spikedeploy.simulate.float_ref import simulate_float

    fx_shapes = {k: tuple(v.shape[1:]) for k, v in records[0].items() if isinstance(v, torch.Tensor)}
    sub = chip_part(graph, plan, fx_shapes)
    spiking = [n for n in sub.nodes if n in plan.spikes]
    if not spiking:
        return sub, None, None, {"nodes": 0, "spikes": 0}
    run = simulate_float(sub, _feeds(sub, inputs, records, plan, steps), steps=steps, probes=spiking)
    first, bad, total = _compare(sub, _torch_spikes(records, plan), run)
    return sub, first, bad, {"nodes": len(spiking), "spikes": total, "run": run}


def _check_trace_against_model(model: nn.Module, traced: tx.Traced, inputs, records, steps: int) -> None:
    """The fx step function must be the model: run the real forward and compare neuron spikes."""
    if traced.mode != "forward" or traced.state:
        return
    seen: dict[str, list] = {}
    hooks = []
    for name, m in model.named_modules():
        if tx.is_neuron(m):
            hooks.append(m.register_forward_hook(
                lambda mod, a, out, _n=name: seen.setdefault(_n, []).append(out[0] if isinstance(out, tuple) else out)))
    tx.reset_neurons(model)
    names = list(traced.inputs.values())
    try:
        with torch.no_grad():
            for t in range(steps):
                model(*[inputs[n][min(t, inputs[n].shape[0] - 1)] for n in names])
    finally:
        for h in hooks:
            h.remove()
        tx.reset_neurons(model)
    mods = {n.target: n.name for n in traced.gm.graph.nodes if n.op == "call_module"}
    for path, outs in seen.items():
        fxn = mods.get(path)
        if fxn is None:
            continue
        for t, o in enumerate(outs):
            ref = records[t][fxn]
            ref = ref[0] if isinstance(ref, tuple) else ref
            if not torch.equal(o, ref):
                raise ExportCheckError(f"module '{path}': the traced step function differs from "
                                       f"{type(model).__name__}.forward at step {t}; the forward has behaviour "
                                       "torch.fx cannot see (state kept outside neurons?)")


# ---- the public function ---------------------------------------------------------------------------


def export_model(
    model_or_entrypoint: nn.Module | str,
    *,
    checkpoint: str | Path | None = None,
    example_inputs: dict[str, torch.Tensor | np.ndarray] | None = None,
    input_names: list[str] | None = None,
    dt: float | None = None,
    steps: int | None = None,
    allow_approximate: bool = False,
    out_path: str | Path | None = None,
    onnx_path: str | Path | None = None,
    batch: int = 2,
    seed: int = 0,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    host_modules: tuple[str, ...] | list[str] = (),
) -> ExportResult:
    """Export a torch/snnTorch model to a Graph, check it against torch, and write NIR (+ ONNX).

    model_or_entrypoint: an nn.Module, or "package.module:factory" (then `checkpoint` is loaded into it
        with torch.load(weights_only=True)).
    example_inputs: {input name: tensor [T, B, *shape]} time-major (T == 1: the frame is repeated every
        step, i.e. direct encoding). Default: uniform random inputs of the model's `input_shapes`.
    input_names: names for the Input nodes (one per forward argument or chain); default: argument names.
    dt: time step recorded in the graph (tau = dt/(1-beta)); default: the model's `dt` attribute or 1e-3.
    steps: how many steps the check runs (default: the inputs' T, at least 10).
    allow_approximate: export what cannot be represented exactly (recorded in graph.meta["deviations"];
        the spike check is then reported, not enforced).
    out_path: .nir file (host nodes are kept in its metadata; see converters/nir.py).
    onnx_path: ONNX file for the host-side part (needed when the graph has host nodes and out_path is set).
    input_shapes: {input name: shape without T and B} for random sample inputs when example_inputs is None.
    host_modules: module paths (e.g. "frontend", "encoder.norm") that run on the host, with everything below
        them, whatever the chip could run; every host node gets an ONNX program checked against torch.
    """
    source = model_or_entrypoint if isinstance(model_or_entrypoint, str) else None
    if source is not None:
        model = load_entrypoint(source, checkpoint)
    else:
        if checkpoint is not None:
            raise UnsupportedError("checkpoint= is only used with an entry point string; load_state_dict yourself")
        model = model_or_entrypoint
    model = copy.deepcopy(model).eval()  # never modify the caller's model (state buffers, train mode)
    dt_source = "argument"
    if dt is None:
        dt, dt_source = (float(model.dt), "model.dt") if isinstance(getattr(model, "dt", None), int | float) else (DEFAULT_DT, "default")
    traced = tx.trace_model(model, input_names)
    names = list(traced.inputs.values())
    if example_inputs is None:
        inputs = _sample_inputs(model, traced, steps or DEFAULT_STEPS, batch, seed, input_shapes)
    else:
        unknown = sorted(set(example_inputs) - set(names))
        missing = [n for n in names if n not in example_inputs]
        if unknown or missing:
            raise UnsupportedError(f"example_inputs names {sorted(example_inputs)} do not match the model's inputs "
                                   f"{names}; pass input_names= to rename them")
        inputs = {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v)
                  for k, v in example_inputs.items()}
        for k, v in inputs.items():
            if v.dim() < 2:
                raise UnsupportedError(f"example input '{k}' must be time-major [T, B, ...], got shape {list(v.shape)}")
            if torch.is_floating_point(v):
                inputs[k] = v.float()
    T = max(v.shape[0] for v in inputs.values())
    steps = int(steps or (T if T > 1 else DEFAULT_STEPS))
    for k, v in inputs.items():
        if v.shape[0] not in (1, steps) and v.shape[0] < steps:
            raise UnsupportedError(f"example input '{k}' has {v.shape[0]} steps, the check runs {steps}; give "
                                   "T == 1 (repeated), or at least `steps` steps")

    records = tx.run_steps(traced, inputs, steps)
    unknown = [p for p in host_modules if p not in dict(model.named_modules())]
    if unknown:
        raise UnsupportedError(f"host_modules {unknown} name no module of {type(model).__name__}; its modules are "
                               f"{[n for n, _ in model.named_children()]}")
    graph, plan = tx.build_graph(traced, records[0], dt=dt, allow_approximate=allow_approximate,
                                 host_modules=tuple(host_modules))
    host_info = None
    if any(n.placement == "host" for n in graph.nodes.values()):
        from spikedeploy.converters.host_programs import attach_host_programs

        host_info = attach_host_programs(traced, plan, graph, records)
    _annotate(graph, model, source, checkpoint, dt_source, steps, plan)
    graph.validate()
    _check_trace_against_model(model, traced, inputs, records, steps)

    sub, first, bad, info = _check(graph, plan, inputs, records, steps)
    check: dict[str, Any] = {"steps": steps, "batch": int(next(iter(inputs.values())).shape[1]),
                             "spiking_nodes": info["nodes"], "spikes": info["spikes"], "identical": first is None}
    if first is not None:
        check["float32"] = {"first_mismatch": first, "mismatches": bad}
        first64, bad64, info64 = _float64_check(model, traced, graph, plan, inputs, steps, input_names)
        check["float64"] = {"identical": first64 is None, "spikes": info64["spikes"], "mismatches": bad64}
        if first64 is None:
            check["identical"] = True
            check["note"] = ("float32 snnTorch and the float64 graph differ by rounding (first at node "
                             f"'{first['node']}' step {first['step']}); in float64 the spikes are identical")
        else:
            check["float64"]["first_mismatch"] = first64
            msg = (f"exported graph does not reproduce the model: first mismatch at node '{first64['node']}' step "
                   f"{first64['step']} sample {first64['sample']} neuron {first64['neuron']} (torch "
                   f"{first64['torch']:g}, graph {first64['graph']:g}); {bad64} mismatching spike entries")
            if not allow_approximate:
                raise ExportCheckError(msg + "; nothing was written")
            plan.deviations.append(msg)
    if host_info is not None:
        check["hybrid"] = _hybrid_check(graph, plan, inputs, records, steps, host_info)
    graph.meta["deviations"] = list(plan.deviations)
    graph.meta["export_check"] = {k: v for k, v in check.items() if k in ("steps", "batch", "spikes", "identical", "note")}

    result = ExportResult(graph, check, deviations=list(plan.deviations), rewrites=list(plan.rewrites))
    has_host = any(n.placement == "host" for n in graph.nodes.values())
    if has_host and (onnx_path is not None or out_path is not None):
        from spikedeploy.converters.onnx import export_host_onnx

        if onnx_path is None:
            onnx_path = Path(out_path).with_suffix(".host.onnx")
        result.onnx_check = export_host_onnx(traced, plan, records, onnx_path)
        result.onnx_path = Path(onnx_path)
        graph.meta["host_onnx"] = Path(onnx_path).name
    if out_path is not None:
        from spikedeploy.converters.nir import write_nir

        write_nir(graph, out_path)
        result.out_path = Path(out_path)
    return result


def _hybrid_check(graph: Graph, plan: tx.Plan, inputs, records, steps: int, host_info) -> dict[str, Any]:
    """The whole graph, host programs included (onnxruntime, float32), against the model's spikes."""
    from spikedeploy.simulate.float_ref import simulate_float

    feeds = {}
    for name in graph.inputs:
        x = inputs[name].detach()
        feeds[name] = (x.expand(steps, *x.shape[1:]) if x.shape[0] == 1 and steps > 1 else x[:steps]).double().numpy()
    spikes = _torch_spikes(records, plan)
    spikes = {k: v for k, v in spikes.items() if k in graph.nodes and graph.nodes[k].placement == "chip"}
    run = simulate_float(graph, feeds, steps=steps, probes=sorted(spikes))
    first, bad, total = _compare(graph, spikes, run)
    out = {"identical": first is None, "spikes": total, "mismatches": bad, "host_nodes": host_info["nodes"],
           "onnx_max_abs_diff": host_info["max_abs_diff"]}
    if first is not None:
        out["first_mismatch"] = first
    return out


def _float64_check(model, traced, graph, plan, inputs, steps, input_names):
    m64 = copy.deepcopy(model).double()
    t64 = tx.trace_model(m64, input_names)
    in64 = {k: v.double() if torch.is_floating_point(v) else v for k, v in inputs.items()}
    rec64 = tx.run_steps(t64, in64, steps)
    _, first, bad, info = _check(graph, plan, in64, rec64, steps)
    return first, bad, info


def _annotate(graph: Graph, model, source, checkpoint, dt_source, steps, plan: tx.Plan) -> None:
    prov = {"source": "torch", "torch_version": torch.__version__, "model_class": type(model).__qualname__,
            "model_module": type(model).__module__}
    if any(tx.is_sj_neuron(m) for m in model.modules()):
        from importlib.metadata import version

        prov.update(source="spikingjelly", spikingjelly_version=version("spikingjelly"))
    elif any(tx.is_neuron(m) for m in model.modules()):
        import snntorch

        prov.update(source="snntorch", snntorch_version=snntorch.__version__)
    if source:
        prov["entrypoint"] = source
    if checkpoint is not None:
        prov["checkpoint"] = str(checkpoint)
    graph.meta["provenance"] = prov
    graph.meta["dt"] = graph.dt
    graph.meta["dt_source"] = dt_source
    graph.meta["reset"] = graph.reset
    graph.meta["neuron_mapping"] = ("snnTorch Leaky beta -> LIF tau=dt/(1-beta), r=1/(1-beta), v_leak=0, "
                                    "v_reset=0 (beta=1 -> IF r=1/dt); Synaptic -> CubaLIF tau_syn=dt/(1-alpha), "
                                    "w_in=1/(1-alpha); node.meta['beta'/'alpha'] keeps snnTorch's float32 values; "
                                    "spikingjelly LIFNode -> LIF tau=tau*dt, r=1 (decay_input) or tau, IFNode -> IF "
                                    "r=1/dt; reset rules per node in node.meta (README 'Neuron models')")
    if plan.dropped_outputs:
        graph.meta["dropped_outputs"] = list(plan.dropped_outputs)
    graph.meta["placement"] = {n: v.placement for n, v in graph.nodes.items()}
    # modality of every node reached from exactly one Input; "fused" where modalities meet
    reach: dict[str, set[str]] = {}
    for inp in graph.inputs:
        todo, seen = [inp], {inp}
        while todo:
            n = todo.pop()
            reach.setdefault(n, set()).add(inp)
            for s in graph.successors(n):
                if s not in seen:
                    seen.add(s)
                    todo.append(s)
    for n, srcs in reach.items():
        node = graph.nodes[n]
        if node.modality is None:
            node.modality = graph.nodes[next(iter(srcs))].modality if len(srcs) == 1 else "fused"
