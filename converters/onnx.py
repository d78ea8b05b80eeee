"""ONNX out for the host-side part of an exported model.

The host part is the set of fx nodes of the model's step function that run on the host (see
torch_export.Plan.host_fx: LayerNorm, softmax, spike products, the cosine head, and the shape glue
around them). It is cut out into its own fx GraphModule whose inputs are the chip values it reads
(named after the chip node producing them) and whose outputs are the values chip nodes or the model's
outputs read from it (named after the host node or the Output node), then exported with
torch.onnx.export (dynamic batch dimension) and checked with onnxruntime against torch.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from spikedeploy.errors import UnsupportedError

MAX_ABS_DIFF = 1e-5


def host_module(traced, plan) -> tuple[fx.GraphModule, list[tuple[str, str]], list[tuple[str, str]]]:
    """The host part as a GraphModule, with (onnx name, fx value) for its inputs and outputs."""
    gm = traced.gm
    host = set(plan.host_fx)
    nodes = {n.name: n for n in gm.graph.nodes}
    new = fx.Graph()
    env: dict[str, fx.Node] = {}
    inputs: list[tuple[str, str]] = []
    used_names: set[str] = set()

    def uniq(name: str) -> str:
        base, k = name, 1
        while name in used_names:
            name, k = f"{base}_{k}", k + 1
        used_names.add(name)
        return name

    def bring(a: fx.Node) -> fx.Node:
        if a.name in env:
            return env[a.name]
        if a.name in plan.const_fx or a.op == "get_attr":
            env[a.name] = new.node_copy(a, lambda x: bring(x))
        else:
            srcs = plan.val_srcs.get(a.name, [])
            name = uniq(srcs[0] if len(srcs) == 1 else a.name)
            p = new.placeholder(_ident(name))
            inputs.append((name, a.name))
            env[a.name] = p
        return env[a.name]

    order = [n for n in gm.graph.nodes if n.name in host]
    for n in order:
        env[n.name] = new.node_copy(n, lambda x: bring(x))
    names_of = {fxn: name for name, fxn in plan.from_host.items()}
    names_of.update({fxn: name for name, fxn in plan.outputs.items() if fxn in host})
    outputs: list[tuple[str, str]] = []
    for n in order:
        if n.name in names_of or any(u.name not in host for u in n.users):
            outputs.append((uniq(names_of.get(n.name, n.name)), n.name))
    if not outputs:
        raise UnsupportedError("the host part has no outputs that the chip or the model reads")
    new.output(tuple(env[f] for _, f in outputs))
    private_names(new)
    del nodes
    return fx.GraphModule(gm, new), inputs, outputs


def private_names(graph: fx.Graph) -> None:
    """Prefix the inner nodes' names: ONNX names values after fx nodes, and an input or output named after a
    graph node ('matmul_1') must not clash with an inner value of the same name (ONNX needs SSA form)."""
    for n in graph.nodes:
        if n.op not in ("placeholder", "output"):
            n._rename(f"h_{n.name}")


def _ident(name: str) -> str:
    s = "".join(c if c.isalnum() else "_" for c in name)
    return s if s and not s[0].isdigit() else f"x_{s}"


def export_host_onnx(traced, plan, records: list[dict[str, Any]], path: str | Path, *,
                     dynamo: bool = False) -> dict[str, Any]:
    """Write the host part to `path` (atomically) and check it with onnxruntime on the recorded values.

    dynamo: use torch's dynamo exporter (maintained; ~10 s on first use) rather than the TorchScript one
    (deprecated, ~1 s); if the chosen one fails, the other is tried. The TorchScript one is the default: it
    names inner values by position, where dynamo names them after aten ops ('matmul_1'), which clashes with
    an output named after a graph node of the same name.
    Returns {"inputs", "outputs", "max_abs_diff", "batch_checked", "path"}; raises UnsupportedError if
    torch cannot export it or onnxruntime disagrees with torch by more than MAX_ABS_DIFF."""
    import onnx
    import onnxruntime as ort

    from spikedeploy.io.atomic import atomic_path

    hm, ins, outs = host_module(traced, plan)
    hm.eval()
    path = Path(path)
    example = tuple(_as_tensor(records[0][f]) for _, f in ins)
    in_names = [n for n, _ in ins]
    out_names = [n for n, _ in outs]
    try:
        with atomic_path(path) as tmp:
            _torch_export(hm, example, in_names, out_names, tmp, dynamo)
            onnx.checker.check_model(str(tmp))
            sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            worst, batches = _compare(sess, hm, records, ins, outs)
    except UnsupportedError:
        raise
    except Exception as e:
        raise UnsupportedError(f"host part cannot be exported to ONNX ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); nodes: {[f for _, f in outs]}") from e
    if worst > MAX_ABS_DIFF:
        raise UnsupportedError(f"{path}: onnxruntime differs from torch by {worst:.3g} (limit {MAX_ABS_DIFF:g}) on the "
                               "host part; nothing usable was written")
    return {"inputs": in_names, "outputs": out_names, "max_abs_diff": float(worst), "batch_checked": batches,
            "path": str(path)}


def _as_tensor(v) -> torch.Tensor:
    return v[0] if isinstance(v, tuple) else v


def _torch_export(hm, example, in_names, out_names, path, dynamo: bool) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "torch._dynamo"):
        warnings.simplefilter("ignore")
        _export(hm, example, in_names, out_names, path, batch, dynamo)


@contextlib.contextmanager
def _quiet(*loggers: str):
    """torch's exporters log warnings about optional packages (torchvision) that do not concern us."""
    saved = [(lg, logging.getLogger(lg).level) for lg in loggers]
    for lg, _ in saved:
        logging.getLogger(lg).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in saved:
            logging.getLogger(lg).setLevel(lvl)


def _export(hm, example, in_names, out_names, path, batch, dynamo: bool) -> None:
    if not dynamo:
        try:
            return _legacy(hm, example, in_names, out_names, path)
        except Exception:
            pass
    try:
        torch.onnx.export(hm, example, str(path), input_names=in_names, output_names=out_names, dynamo=True,
                          dynamic_shapes=tuple({0: batch} for _ in example), external_data=False,
                          optimize=True, verbose=False)
    except Exception:
        if not dynamo:
            raise
        # the dynamo exporter refuses some graphs the TorchScript one takes (and vice versa)
        _legacy(hm, example, in_names, out_names, path)


def _legacy(hm, example, in_names, out_names, path) -> None:
    torch.onnx.export(hm, example, str(path), input_names=in_names, output_names=out_names, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in in_names + out_names})


def _compare(sess, hm, records, ins, outs) -> tuple[float, list[int]]:
    worst = 0.0
    batches = set()
    steps = records[:3]
    for r in steps:
        feeds = [_as_tensor(r[f]) for _, f in ins]
        for rep in (1, 2):  # the recorded batch and a doubled one: the batch dimension must be dynamic
            x = [torch.cat([t] * rep) for t in feeds]
            with torch.no_grad():
                ref = hm(*x)
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = sess.run(None, {n: t.numpy() for (n, _), t in zip(ins, x, strict=True)})
            for a, b in zip(ref, got, strict=True):
                a = a.detach().numpy()
                if a.shape != b.shape:
                    raise UnsupportedError(f"onnxruntime output shape {list(b.shape)} differs from torch {list(a.shape)}")
                if a.size:
                    worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
            batches.add(int(x[0].shape[0]))
    return worst, sorted(batches)
