"""simulate_emulator: a QGraph run in fixed point, vectorised over the batch.

Feed-forward graphs run layer by layer over chunks of time steps, so each synapse is one large matrix
product over (steps x batch) rows; graphs with cycles run step by step. Both orders give the same
integers, because a synapse's output at step t only depends on its input before t.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from spikedeploy.errors import BackendError, GraphError, InputError
from spikedeploy.graph.ops import OPS
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, RFParams, SigmaDeltaParams, SynapseParams
from spikedeploy.simulate.inputs import time_major_inputs
from spikedeploy.simulate.result import Run
from spikedeploy.targets.emulator import kernels
from spikedeploy.targets.emulator.rf import RFStage
from spikedeploy.targets.emulator.sdnn import SigmaDeltaStage, message_bound
from spikedeploy.targets.emulator.stages import NeuronStage, Scratch, SynapseStage, prepare_synapse
from spikedeploy.targets.loihi_arith import Arith, arith_for

CHUNK_BYTES = 10 << 20  # per-node activations of one chunk of time steps; larger is faster, smaller leaner
MIN_SAMPLES_PER_THREAD = 8  # a batch smaller than twice this runs whole, its kernels split by rows


def prepare_inputs(g, inputs: Mapping[str, np.ndarray]):
    """Checked time-major inputs; fixed-point backends also need integer values."""
    from spikedeploy.checks.sim_inputs import blocks

    xs, steps, batch = time_major_inputs(g, inputs)
    for name, x in xs.items():
        if x.dtype.kind == "f" and not all(np.array_equal(np.trunc(b), b) for b in blocks(x)):
            raise InputError(
                f"input '{name}': values must be integers (spikes or graded integer payloads); "
                "scale and round them first"
            )
    return xs, steps, batch


def is_binary(x: np.ndarray) -> bool:
    """0/1 values (inputs are already checked to hold integers)."""
    return x.dtype == bool or x.size == 0 or (x.min() >= 0 and x.max() <= 1)


class Program:
    """A QGraph compiled into stages for one arithmetic and one input encoding."""

    def __init__(self, qg: QGraph, ar: Arith, graded_inputs: Mapping[str, float], probes: Iterable[str] = ()):
        g = qg.graph
        if any(n.in_shape is None and n.op != "Input" for n in g.nodes.values()):
            g.infer_shapes()
        self.g = g
        self.qg = qg
        self.ar = ar
        order, back = g.order()
        self.order = order
        self.back = set(back)
        self.step_mode = bool(back)
        self.probes = set(probes)
        unknown = self.probes - set(g.nodes)
        if unknown:
            raise BackendError(f"probe(s) {sorted(unknown)} name no node of the graph")
        self.preds = {n: g.predecessors(n) for n in g.nodes}
        self.kind: dict[str, str] = qg.chip_kinds(order, "the chip emulator")
        self.stages: dict = {}
        self.bound: dict[str, float] = {}
        self.graded: dict[str, bool] = {}
        # Bounds on |value| decide which exact arithmetic each synapse can use. Neurons emit 0/1, which
        # also ends the recursion through any cycle (every cycle passes through a neuron).
        for name in order:
            self._bound(name, graded_inputs)
        v_users = set()
        for name in order:
            if self.kind[name] == "output":
                v_users.update(p for p in self.preds[name] if self.kind.get(p) == "neuron")
        self.want_v = {n for n in v_users if not (OPS[g.nodes[n].op].spiking or OPS[g.nodes[n].op].graded)}
        for name in order:
            node = g.nodes[name]
            k = self.kind[name]
            if k == "neuron" and node.op == "RF":
                self.stages[name] = RFStage(name, qg.params(name, RFParams), node.out_shape, ar, self.preds[name],
                                            name in self.probes)
            elif k == "neuron" and OPS[node.op].graded:
                self.stages[name] = SigmaDeltaStage(name, qg.params(name, SigmaDeltaParams), node.out_shape, ar,
                                                    name in self.probes, self.preds[name])
            elif k == "neuron":
                q = qg.params(name, CubaParams)
                bin_ = sum(self.bound[p] for p in self.preds[name])
                self.stages[name] = NeuronStage(name, q, node.out_shape, ar, bin_, OPS[node.op].spiking,
                                                name in self.probes)
        self.synapses = [n for n in order if self.kind[n] == "synapse"]
        self.scratch = Scratch()
        self.consumers = {n: [b for a, b in g.edges if a == n] for n in g.nodes}

    def replicas(self, k: int) -> list[Program]:
        """k programs sharing this one's weights, each with its own state, buffers and event counters,
        so that slices of a batch can run at the same time (kept for the next call)."""
        reps = self.__dict__.setdefault("_replicas", [])
        while len(reps) < k:
            r = copy.copy(self)
            r.stages = {}
            for n, st in self.stages.items():
                r.stages[n] = copy.copy(st)
                if isinstance(st, NeuronStage):
                    r.stages[n].na = copy.copy(st.na)
            r.scratch = Scratch()
            r._replicas = []
            reps.append(r)
        return reps[:k]

    def input_bound(self, name: str) -> float:
        """The largest |value| the program was compiled to take on input `name` (1 for spikes)."""
        return self.bound[name]

    def _bound(self, name, graded_inputs):
        if name in self.bound:
            return self.bound[name]
        k = self.kind[name]
        if k == "neuron" and OPS[self.g.nodes[name].op].graded:
            self.bound[name], self.graded[name] = message_bound(self.qg.params(name, SigmaDeltaParams)), True
            return self.bound[name]
        if k == "neuron":
            self.bound[name], self.graded[name] = 1.0, False
            return 1.0
        if k == "input":
            gb = graded_inputs.get(name)
            self.bound[name] = 1.0 if gb is None else float(gb)
            self.graded[name] = gb is not None
            return self.bound[name]
        self.bound[name] = np.inf  # guards against a cycle without a neuron
        xb = sum(self._bound(p, graded_inputs) for p in self.preds[name])
        self.graded[name] = any(self.graded[p] for p in self.preds[name]) or k == "synapse"
        if k == "synapse":
            stage = prepare_synapse(name, self.g.nodes[name], self.qg.params(name, SynapseParams), self.ar, xb,
                                    any(self.graded[p] for p in self.preds[name]))
            self.stages[name] = stage
            self.bound[name] = stage.bound
        else:
            self.bound[name] = xb
        return self.bound[name]


def _shapes_known(g) -> None:
    if g.nodes and any(n.out_shape is None for n in g.nodes.values()):
        try:
            g.infer_shapes()
        except Exception as e:  # noqa: BLE001 - shape errors are already SpikeDeployErrors
            raise GraphError(f"cannot infer shapes before emulation: {e}") from e


def compile_emulator(qg: QGraph, *, mode=None, probes: Iterable[str] = (),
                     graded_inputs: Mapping[str, float] | None = None) -> Program:
    """Prepare `qg` once (weights as the target stores them, exactness bounds) for many simulate_emulator
    calls, as Lava compiles a network once and resets it between samples.

    mode: as simulate_emulator's (default: the arithmetic of qg's own target).
    graded_inputs: `{input_name: max |value|}` for inputs that carry integers other than 0/1 spikes. The
    program keeps state between calls only for the duration of one call; it is not thread-safe.
    """
    _shapes_known(qg.graph)
    return Program(qg, arith_for(qg if mode is None else mode), dict(graded_inputs or {}), probes)


def simulate_emulator(qg: QGraph | Program, inputs: Mapping[str, np.ndarray], *, steps: int | None = None,
                      probes: Iterable[str] = (), mode=None, chunk_bytes: int | None = None,
                      progress: Callable[[float], None] | None = None) -> Run:
    """Run `qg` on `inputs` (`{input_name: [T, B, *shape]}`) in fixed point.

    qg: a QGraph, or a Program from compile_emulator (then mode and probes are the program's).
    mode: default the arithmetic of the target qg was quantized for (`qgraph_arith`); "loihi2" reproduces
    Lava 0.10's Loihi2SimCfg(select_tag="fixed_pt") bit for bit; a NumericFormat, TargetSpec or target name
    selects a generic fixed-point core with those widths. Steps beyond the input length see zero input.
    Returns counts for every spiking node and Input, outputs for every Output node, and u/v/s traces
    (post-reset, as Lava's Monitor records them) for probed nodes.
    chunk_bytes bounds the activations kept per chunk of time steps (default: as large as the inputs
    given, at least CHUNK_BYTES), trading memory for fewer, larger kernel calls. progress(fraction done)
    is called after every chunk (from worker threads when the batch is split).
    """
    if isinstance(qg, Program):
        prog = qg
        xs, t_in, batch = prepare_inputs(prog.g, inputs)
        if mode is not None and arith_for(mode) != prog.ar:
            raise BackendError(f"the program was compiled for '{prog.ar.name}'; compile it again for {mode!r}")
        if set(probes) - prog.probes:
            raise BackendError(f"probe(s) {sorted(set(probes) - prog.probes)} were not compiled in; "
                               "pass them to compile_emulator(probes=...)")
        for n, x in xs.items():
            bound = prog.input_bound(n)
            if not is_binary(x) and float(np.abs(x).max(initial=0)) > bound:
                have = "0/1 spikes" if bound == 1.0 else f"|values| <= {bound:g}"
                raise InputError(
                    f"input '{n}' holds values up to {float(np.abs(x).max()):g} but the program was compiled "
                    f"for {have}; compile_emulator(..., graded_inputs={{'{n}': {float(np.abs(x).max()):g}}})"
                )
    else:
        _shapes_known(qg.graph)
        xs, t_in, batch = prepare_inputs(qg.graph, inputs)
        graded = {n: float(np.abs(x).max(initial=0)) for n, x in xs.items() if not is_binary(x)}
        prog = Program(qg, arith_for(qg if mode is None else mode), graded, probes)
    steps = t_in if steps is None else int(steps)
    if chunk_bytes is None:
        chunk_bytes = max(CHUNK_BYTES, sum(int(np.asarray(x).nbytes) for x in inputs.values()))
    return _execute_parallel(prog, xs, steps, batch, chunk_bytes, progress)


def _execute_parallel(prog: Program, xs, steps: int, batch: int, chunk_bytes: int, progress=None) -> Run:
    """The batch split into one slice per thread, each slice through the whole network in its own thread:
    samples are independent, and one hand-off per slice costs far less than one per kernel call."""
    parts = kernels.split_range(batch, MIN_SAMPLES_PER_THREAD)
    if len(parts) == 1:
        return _execute(prog, xs, steps, batch, chunk_bytes, progress)
    reps = prog.replicas(len(parts))
    done = [0.0] * len(parts)

    def part(i, b0, b1):
        def report(f):
            done[i] = f
            progress(sum(done) / len(done))

        return _execute(reps[i], {n: x[:, b0:b1] for n, x in xs.items()}, steps, b1 - b0, chunk_bytes // len(parts),
                        report if progress else None)

    runs = kernels.parallel_parts(part, parts)
    run = Run(backend="emulator", steps=steps, batch=batch, meta=dict(runs[0].meta))
    run.counts = {n: np.concatenate([r.counts[n] for r in runs], axis=1) for n in runs[0].counts}
    run.outputs = {n: np.concatenate([r.outputs[n] for r in runs], axis=1) for n in runs[0].outputs}
    run.traces = {n: {k: np.concatenate([r.traces[n][k] for r in runs], axis=1) for k in tr}
                  for n, tr in runs[0].traces.items()}
    for key in ("u_wraps", "v_saturations"):
        run.meta[key] = {n: sum(r.meta[key][n] for r in runs) for n in runs[0].meta[key]}
    run.meta["threads"] = len(parts)
    return run


def _execute(prog: Program, xs, steps: int, batch: int, chunk_bytes: int, progress=None) -> Run:
    g = prog.g
    for st in prog.stages.values():
        st.reset(batch)  # also zeroes the neurons' event counters: they count this call's events
    if prog.step_mode:
        tc = 1
    else:
        widest = max((int(np.prod(n.out_shape or (1,))) for n in g.nodes.values()), default=1)
        # synapse outputs are float32 and spikes uint8, so 4 bytes bound one value of the widest node
        tc = int(max(1, min(steps, chunk_bytes // max(1, 4 * batch * widest))))
    run = Run(backend="emulator", steps=steps, batch=batch)
    run.meta["arith"] = prog.ar.name
    run.meta["chunk_steps"] = tc
    spiking = [n for n in prog.order if prog.kind[n] == "neuron" and prog.stages[n].spiking]
    for n in list(g.inputs) + spiking:
        run.counts[n] = np.zeros((steps, batch), np.int32)
    outs = {}
    for n in g.outputs:
        shp = g.nodes[n].out_shape
        spk = all(prog.kind.get(p) == "neuron" and prog.stages[p].spiking and not getattr(prog.stages[p], "graded", False)
                  for p in prog.preds[n])
        outs[n] = np.zeros((steps, batch, *shp), np.int8 if spk else np.int64)
    traces = {}
    for n in prog.probes:
        shp = g.nodes[n].out_shape
        if prog.kind[n] == "neuron":
            s_dt = np.int64 if getattr(prog.stages[n], "graded", False) else np.int8
            traces[n] = {k: np.zeros((steps, batch, *shp), np.int32 if k != "s" else s_dt) for k in ("u", "v", "s")}
        else:
            traces[n] = {"s": np.zeros((steps, batch, *shp), np.int64)}
    prev: dict[str, np.ndarray] = {}
    pos = {n: i for i, n in enumerate(prog.order)}
    # where each node's values die: after its last user, and a flatten passes its input's array on (a
    # view), so that array lives as long as the flatten's users
    last_use: dict[int, list[str]] = {}
    if not prog.step_mode:
        free_pos: dict[str, int] = {}
        for n in reversed(prog.order):
            free_pos[n] = max((free_pos[c] if prog.kind[c] == "flatten" else pos[c] for c in prog.consumers[n]),
                              default=pos[n])
            last_use.setdefault(free_pos[n], []).append(n)
    scratch = prog.scratch
    for t0 in range(0, steps, tc):
        if prog.step_mode:
            scratch.flip()  # the previous step's values stay readable for the back edges
        t1 = min(steps, t0 + tc)
        n_t = t1 - t0
        vals: dict[str, np.ndarray] = {}
        vvals: dict[str, np.ndarray] = {}
        if prog.step_mode:
            for s in prog.synapses:
                prog.stages[s].begin(n_t, scratch)
                # a synapse's output this step is already fixed by earlier steps, so a back edge out of
                # a synapse reads the current value
                vals[s] = prog.stages[s].emitted()
        for name in prog.order:
            k = prog.kind[name]
            node = g.nodes[name]
            if k == "input":
                x = xs[name][t0 : min(t1, xs[name].shape[0])]
                if x.shape[0] < n_t:
                    pad = np.zeros((n_t - x.shape[0], *x.shape[1:]), x.dtype)
                    x = np.concatenate([x, pad])
                xb = scratch.get(name, "x", x.shape, np.float64 if prog.graded[name] else np.uint8)
                np.copyto(xb, x, casting="unsafe")
                x = vals[name] = xb
                run.counts[name][t0:t1] = kernels.count_nonzero_rows(x)
            elif k == "synapse":
                st: SynapseStage = prog.stages[name]
                if not prog.step_mode:
                    st.begin(n_t, scratch)
                    st.accumulate(_gather(prog, name, vals, prev, n_t, batch, node.in_shape))
                vals[name] = st.emitted()
            elif k == "flatten":
                vals[name] = _gather(prog, name, vals, prev, n_t, batch, node.out_shape)
            elif k == "neuron":
                st: NeuronStage = prog.stages[name]
                if getattr(st, "ports", None):  # a neuron with several input ports (RF: real, imaginary)
                    a = tuple(_gather(prog, name, vals, prev, n_t, batch, (st.n,), preds=p) for p in st.ports)
                else:
                    a = _gather(prog, name, vals, prev, n_t, batch, (st.n,)) if prog.preds[name] else None
                s_out, counts, v_out, u_out = st.run(a, n_t, name in prog.want_v, t0, scratch)
                shp = (n_t, batch, *node.out_shape)
                vals[name] = s_out.reshape(shp)
                if name in prog.want_v:
                    vvals[name] = v_out.reshape(shp)
                if st.spiking:
                    run.counts[name][t0:t1] = counts
                if name in prog.probes:
                    tr = traces[name]
                    tr["u"][t0:t1] = u_out.reshape(shp)
                    tr["v"][t0:t1] = v_out.reshape(shp)
                    tr["s"][t0:t1] = s_out.reshape(shp)
            elif k == "output":
                # summed straight into the output's rows, without an int64 copy of each chunk
                dst = outs[name][t0:t1]
                for i, p in enumerate(prog.preds[name]):
                    src = (vvals[p] if p in vvals else vals[p]).reshape(n_t, batch, *node.out_shape)
                    if i == 0:
                        np.copyto(dst, src, casting="unsafe")
                    else:
                        np.add(dst, src, out=dst, casting="unsafe")
            if name in prog.probes and prog.kind[name] != "neuron":
                traces[name]["s"][t0:t1] = vals[name].reshape(n_t, batch, *node.out_shape)
            for done in last_use.get(pos[name], ()):
                vals.pop(done, None)
                vvals.pop(done, None)
                if prog.kind[done] == "synapse":
                    prog.stages[done].end()  # keep only the pending outputs, free the chunk
                scratch.release(done)  # its buffers serve the nodes after it
        if prog.step_mode:
            for s in prog.synapses:
                st = prog.stages[s]
                st.accumulate(_gather(prog, s, vals, prev, n_t, batch, g.nodes[s].in_shape))
            prev = vals
            for s in prog.synapses:
                prog.stages[s].end()
        if progress:
            progress(t1 / steps)
    run.outputs = outs
    run.traces = traces
    neurons = [n for n in prog.order if prog.kind[n] == "neuron"]
    run.meta["u_wraps"] = {n: prog.stages[n].na.u_wraps for n in neurons}
    run.meta["v_saturations"] = {n: prog.stages[n].na.v_saturations for n in neurons}
    return run


def _gather(prog: Program, name, vals, prev, n_t, batch, shape, preds=None):
    """Sum of the values feeding `name` this chunk (or of `preds` among them); a back edge into a
    non-synapse reads the last step."""
    total = None
    preds = prog.preds[name] if preds is None else preds
    for p in preds:
        if p in vals:
            src = vals[p]
        elif (p, name) in prog.back and p in prev:
            src = prev[p]
        else:
            src = np.zeros((n_t, batch, *shape), np.float32)
        src = src.reshape(n_t, batch, *shape)
        if total is None:
            total = src
        else:
            if total.dtype != np.float64:
                total = total.astype(np.float64)
            total = total + src
    if total is None:
        total = np.zeros((n_t, batch, *shape), np.float32)
    return total
