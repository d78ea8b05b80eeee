"""Graphs with host nodes, run by any backend: chip stages on the backend, host nodes in onnxruntime.

A host node carries its own program (converters/host_programs.py): an ONNX model computing its value for one
time step from chip spikes and Inputs. The graph is cut into stages: a chip stage is every chip node not
downstream of a host node still to run; it runs on the backend over all time steps, with the values it
reads from outside (Inputs, host nodes, chip nodes of earlier stages) fed as Inputs, and Outputs on the
values later stages read. Then the host nodes whose inputs are known run, over all steps at once (host ops
hold no state across steps, so the time axis folds into the batch). This repeats until every node ran.

Timing is the chip's: a value a stage hands over at step t enters the next stage at step t, and the
synapse reading it adds its usual step. The host's own round trip is not simulated; the report prices it.

Fixed-point backends get host values as integer payloads, round(value / scale), with the scale in
node.meta["payload"]; the quantizer folds the same scale into the weights that read them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from spikedeploy.errors import GraphError, UnsupportedError
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.graph.ops import IO
from spikedeploy.simulate.inputs import time_major_inputs
from spikedeploy.simulate.result import Run

PROGRAM_KEY = "program"
_SESSIONS: dict[int, object] = {}
EXACT_SHIFT_MAX = 8  # payload scales 2**-k tried for an exact integer encoding (k = 0..8)
PAYLOAD_BITS = 8  # approximate graded payloads: signed 8-bit, scale max|v| / 127 (Loihi 2 graded spikes)
PAYLOAD_LIMIT = 2**23  # Loihi 2 graded spike payloads are 24-bit signed (lava-fixed-point.md)
EXACT_BITS = 16  # exact payloads: room for counts well beyond those seen in the export check


def payload_encoding(values: np.ndarray) -> dict[str, Any]:
    """How float values cross onto the chip as integer payloads: value ≈ scale · round(value / scale).

    Exact when every value is an integer multiple of 2**-k for a small k (spike counts, their products, and
    constant power-of-two scales of them); otherwise an 8-bit grid over the largest magnitude seen."""
    v = np.asarray(values, dtype=np.float64).ravel()
    vmax = float(np.abs(v).max(initial=0.0))
    for k in range(EXACT_SHIFT_MAX + 1):
        m = v * 2.0**k
        if np.array_equal(m, np.round(m)) and vmax * 2.0**k < PAYLOAD_LIMIT:
            return {"scale": 2.0**-k, "exact": True, "bits": max(EXACT_BITS, math.ceil(math.log2(vmax * 2.0**k + 1)) + 1),
                    "max_abs": vmax, "source": "values seen in the export check"}
    lim = 2 ** (PAYLOAD_BITS - 1) - 1
    return {"scale": vmax / lim if vmax > 0 else 1.0, "exact": False, "bits": PAYLOAD_BITS, "max_abs": vmax,
            "source": "values seen in the export check; values beyond max_abs saturate"}


def calibrate_payloads(graph: Graph, calibration: Mapping[str, np.ndarray]) -> list[str]:
    """Payload scales of the host values the chip reads, from a float run on calibration data (in place);
    an exact grid found at export stays exact if the calibration values fit it too."""
    from spikedeploy.simulate.float_ref import simulate_float

    nodes = [n for n in host_nodes(graph) if "payload" in graph.nodes[n].meta and "program" in graph.nodes[n].meta]
    if not nodes:
        return []
    run = simulate_float(graph, calibration, probes=nodes)
    done = []
    for n in nodes:
        old = graph.nodes[n].meta["payload"]
        v = np.asarray(run.traces[n]["out"])
        new = payload_encoding(np.concatenate([v.ravel(), [float(old["max_abs"])]]))
        if old["exact"] and new["exact"]:
            new["scale"] = min(float(old["scale"]), float(new["scale"]))
        new["source"] = f"calibration data ({run.batch} samples) and the export check"
        graph.nodes[n].meta["payload"] = new
        grid = "exact" if new["exact"] else f"{new['bits']}-bit grid"
        done.append(f"host node '{n}': payload scale {float(new['scale']):.6g} from calibration ({grid})")
    return done


def host_nodes(graph: Graph) -> list[str]:
    """Nodes the host computes (host ops, and chip-type nodes placed on the host), Outputs excluded."""
    return [n for n, v in graph.nodes.items() if v.placement == "host" and v.op != "Output"]


def has_host_part(graph: Graph) -> bool:
    return bool(host_nodes(graph))


def _session(node: Node):
    blob = node.params.get(PROGRAM_KEY)
    if blob is None:
        raise UnsupportedError(
            f"node '{node.name}' ({node.op}) runs on the host but carries no program; graphs exported by "
            "spikedeploy carry one per host node. Fix: re-export the model with `spikedeploy export`, or run the "
            "chip part alone and feed the host's values as Inputs")
    key = id(blob)
    if key not in _SESSIONS:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        _SESSIONS[key] = (blob, ort.InferenceSession(np.asarray(blob, dtype=np.uint8).tobytes(), opts,
                                                     providers=["CPUExecutionProvider"]))
    return _SESSIONS[key][1]


def run_program(node: Node, values: list[np.ndarray]) -> np.ndarray:
    """The host node's value for every step: inputs and result time-major `[T, B, ...]`."""
    info = node.meta.get("program", {})
    sess = _session(node)
    T, B = values[0].shape[:2]
    names = [i.name for i in sess.get_inputs()]
    feeds = {n: np.ascontiguousarray(x, dtype=np.float32).reshape(T * B, *shp)
             for n, x, shp in zip(names, values, info.get("input_shapes", []), strict=True)}
    (y,) = sess.run(None, feeds)
    return y.astype(np.float64).reshape(T, B, *node.out_shape)


def encode_payload(node: Node, x: np.ndarray) -> np.ndarray:
    """Host values as the integer payloads a fixed-point chip receives."""
    p = node.meta.get("payload")
    if p is None:
        return x
    lim = 2 ** (int(p["bits"]) - 1) - 1
    return np.clip(np.rint(x / float(p["scale"])), -lim - 1, lim)


def run_hybrid(model, inputs: Mapping[str, np.ndarray], runner: Callable, *, steps: int | None = None,
               probes=(), fixed_point: bool = False, progress=None, backend: str = "") -> Run:
    """Run `model` (Graph or QGraph) stage by stage; `runner(sub_model, inputs, steps=, probes=)` runs one
    chip stage on the backend. Returns one Run as if the backend had run the whole graph."""
    from spikedeploy.graph.qgraph import QGraph

    qg = model if isinstance(model, QGraph) else None
    g = (qg.graph if qg else model).copy()
    g.infer_shapes()
    feeds, t_in, B = time_major_inputs(g, inputs)
    T = int(t_in if steps is None else steps)
    values: dict[str, np.ndarray] = {}
    for n, x in feeds.items():
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] < T:
            x = np.concatenate([x, np.zeros((T - x.shape[0], *x.shape[1:]))])
        values[n] = x[:T]
    _, back = g.order()
    host = host_nodes(g)
    for h in host:
        if any(b == h or a == h for a, b in back):
            raise GraphError(f"node '{h}' ({g.nodes[h].op}) is on the host inside a recurrent loop; a host op cannot "
                             "take part in the chip's time loop. Fix: move the loop onto the chip or off it")
    programs = [h for h in host if "program" in g.nodes[h].meta or PROGRAM_KEY in g.nodes[h].params]
    inner = set(host) - set(programs)
    pending_chip = [n for n, v in g.nodes.items() if v.placement == "chip" and v.op not in IO]
    pending_host = list(programs)
    for h in inner:  # host nodes without a program must only feed programs that recompute them
        users = [s for s in g.successors(h) if s not in inner]
        if any(s not in programs for s in users):
            _session(g.nodes[h])  # raises the one-line refusal
    want = set(probes if probes != "*" else g.nodes)
    outputs: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    traces: dict[str, dict[str, np.ndarray]] = {}
    stages = 0
    while pending_chip or pending_host:
        blocked = _downstream(g, set(pending_host), back)
        ready = [n for n in pending_chip if n not in blocked]
        if ready:
            run = _chip_stage(g, qg, ready, values, runner, T, want, fixed_point)
            stages += 1
            for n in ready:
                if n in run.outputs:
                    values[n] = run.outputs[n]
            counts.update({k: v for k, v in run.counts.items() if k in ready})
            traces.update({k: v for k, v in run.traces.items() if k in ready})
            pending_chip = [n for n in pending_chip if n not in ready]
        ran = False
        for h in list(pending_host):
            ins = g.nodes[h].meta["program"]["inputs"]
            if all(i in values for i in ins):
                values[h] = run_program(g.nodes[h], [values[i] for i in ins])
                pending_host.remove(h)
                if h in want:
                    traces[h] = {"out": values[h]}
                ran = True
        if not ready and not ran:
            raise GraphError(f"graph cannot be cut into chip and host stages (nodes {pending_chip + pending_host} "
                             "wait on each other)")
        if progress:
            done = len(g.nodes) - len(pending_chip) - len(pending_host)
            progress(min(1.0, done / max(1, len(g.nodes))))
    for o in g.outputs:
        parts = [values[p].reshape(T, B, -1) for p in g.predecessors(o)]
        outputs[o] = sum(parts[1:], parts[0]).reshape(T, B, *g.nodes[o].out_shape)
    for n in g.inputs:
        counts[n] = (values[n] != 0).reshape(T, B, -1).sum(axis=2).astype(np.int64)
    return Run(backend=backend, steps=T, batch=B, outputs=outputs, counts=counts, traces=traces,
               meta={"dt": g.dt, "chip_stages": stages, "host_nodes": programs,
                     "notes": [f"{len(programs)} host node(s) ran in onnxruntime between {stages} chip stage(s); "
                               "host values enter the next stage in the step they were computed"
                               + ("; as integer payloads (node.meta['payload'])" if fixed_point else "")]})


def _downstream(g: Graph, roots: set[str], back) -> set[str]:
    backset = set(back)
    seen = set(roots)
    todo = list(roots)
    while todo:
        n = todo.pop()
        for s in g.successors(n):
            if (n, s) not in backset and s not in seen:
                seen.add(s)
                todo.append(s)
    return seen


def _chip_stage(g: Graph, qg, names: list[str], values: dict, runner, T: int, want: set, fixed_point: bool) -> Run:
    """One chip stage as its own (Q)Graph: outside values in as Inputs, values needed later out as Outputs."""
    from spikedeploy.graph.qgraph import QGraph

    keep = set(names)
    sub = Graph(dt=g.dt, reset=g.reset, reset_delay=g.reset_delay, meta=copy.deepcopy(g.meta))
    for n in names:
        sub.nodes[n] = copy.deepcopy(g.nodes[n])
    feeds: dict[str, np.ndarray] = {}
    for a, b in g.edges:
        if b not in keep:
            continue
        if a not in keep:
            if a not in sub.nodes:
                src = g.nodes[a]
                sub.nodes[a] = Node(a, "Input", {"shape": np.asarray(src.out_shape, dtype=np.int64)},
                                    meta={"from": src.op})
                x = values[a]
                feeds[a] = encode_payload(src, x) if fixed_point and src.placement == "host" else x
            sub.edges.append((a, b))
        else:
            sub.edges.append((a, b))
    for n in names:
        later = [s for s in g.successors(n) if s not in keep]
        if later:
            o = f"{n}->stage"
            sub.nodes[o] = Node(o, "Output", {})
            sub.edges.append((n, o))
    if not sub.inputs:
        raise GraphError(f"chip nodes {names[:3]} read no input; connect them to an Input")
    sub.infer_shapes()
    model = QGraph(sub, qg.target, q={k: v for k, v in qg.q.items() if k in keep},
                   scale={k: v for k, v in qg.scale.items() if k in keep}, deviations=list(qg.deviations),
                   meta=dict(qg.meta)) if qg is not None else sub
    run = runner(model, feeds, steps=T, probes=sorted(want & keep))
    for n in names:
        o = f"{n}->stage"
        if o in run.outputs:
            run.outputs[n] = run.outputs.pop(o)
    return run


def host_boundary(graph: Graph) -> dict:
    """What crosses between chip and host each time step, per sample: chip spikes the host programs read
    (one bit per neuron), host values the chip reads (payload bits per element), and why each host node is
    on the host. A host node read by the chip and reading chip spikes sits inside the time loop: each step
    waits for a chip → host → chip round trip (priced in energy.estimate with the target's estimate)."""
    ops, to_host, from_host, in_loop = [], 0, 0, 0
    read = set()
    for name in host_nodes(graph):
        node = graph.nodes[name]
        prog = node.meta.get("program")
        ops.append({"node": name, "op": node.op, "torch": node.meta.get("torch"),
                    "why": node.meta.get("host_reason", "host op"), "macs_per_step": node.meta.get("macs"),
                    "payload": node.meta.get("payload")})
        if prog:
            read.update(i for i in prog["inputs"] if graph.nodes[i].placement == "chip" and graph.nodes[i].op != "Input")
        if "payload" in node.meta and node.out_shape:
            from_host += int(np.prod(node.out_shape)) * int(node.meta["payload"]["bits"])
            if prog and any(graph.nodes[i].op != "Input" for i in prog["inputs"]):
                in_loop += 1
    for n in sorted(read):
        to_host += int(np.prod(graph.nodes[n].out_shape or (1,)))
    return {"operations": ops, "chip_to_host_bits_per_step": to_host, "host_to_chip_bits_per_step": from_host,
            "round_trips_per_step": in_loop,
            "round_trip_note": "each round trip adds the host link's latency to every step; no published figure "
                               "exists, so latency uses the target's estimate t_host_round_trip (see assumptions)"}
