"""simulate_lava: a QGraph run by Lava 0.10 under Loihi2SimCfg(select_tag="fixed_pt").

The graph becomes Lava processes: Input -> RingBuffer, Affine/Linear -> Dense (Sparse when the QGraph asks
for it or the weights are mostly zero, DelayDense when it has per-synapse delays), Conv2d/Conv1d/SumPool2d
-> Conv, neuron nodes -> LIF (spikedeploy's programmable ProgLIF, targets/lava/neurons.py, for a QGraph
neuron with a reset rule, v >= vth or a current bias), Flatten -> a port transform (CHW order, as netx does). N samples run on one
compiled network: the RingBuffer holds all samples back to back, and u, v and the synapse buffers are zeroed
with Var.set between samples (lava-fixed-point.md §4). Monitors record spikes for counts and outputs and
u/v for probed nodes; reading a Monitor moves one value per message, so only what is asked is probed.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterable, Mapping

import numpy as np

from spikedeploy.errors import BackendError, SpikeDeployError, UnsupportedError
from spikedeploy.graph.ops import MATRIX, OPS, conv_params, pool_params
from spikedeploy.graph.qgraph import QGraph
from spikedeploy.graph.qparams import CubaParams, RFParams, SigmaDeltaParams, SynapseParams
from spikedeploy.simulate.result import Run
from spikedeploy.targets.emulator.engine import is_binary, prepare_inputs
from spikedeploy.targets.loihi_arith import expand_param, sign_mode_of, wrap_int

SPARSE_DENSITY = 0.1  # below this fraction of nonzero weights, a dense layer becomes a Sparse process
MESSAGE_BITS = 24  # graded payloads (Input values, synapse to synapse)


def lava_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava's shape for a graph shape: (C,H,W) -> (W,H,C); (C,L) -> (L,1,C); 1-D unchanged."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape[::-1]
    if len(shape) == 2:
        return (shape[1], 1, shape[0])
    return (int(np.prod(shape)),) if shape else (1,)


def to_lava(x: np.ndarray, shape) -> np.ndarray:
    """Per-neuron values in graph order (flat CHW) to Lava's layout."""
    shape = tuple(shape)
    a = np.asarray(x).reshape(shape if shape else (1,))
    if len(shape) == 3:
        return a.transpose(2, 1, 0)
    if len(shape) == 2:
        return a.T[:, None, :]
    return a.reshape(-1)


def from_lava(x: np.ndarray, shape) -> np.ndarray:
    """[T, *lava_shape] recorded by a Monitor to [T, *graph_shape]."""
    shape = tuple(shape)
    t = x.shape[0]
    if len(shape) == 3:
        return x.transpose(0, 3, 2, 1)
    if len(shape) == 2:
        return x[:, :, 0, :].transpose(0, 2, 1)
    return x.reshape(t, *shape)


def _adapt(port, src_shape, dst_shape):
    """Re-lay a port carrying `src_shape` values (Lava layout) as `dst_shape` values (Lava layout)."""
    ls, ld = lava_layout(src_shape), lava_layout(dst_shape)
    if len(port.shape) == 1:  # a Dense/Sparse output (Scale included) is flat in graph order whatever its shape
        ls = tuple(port.shape)
    if tuple(port.shape) == ld and (len(src_shape) == len(dst_shape) or len(ls) == 1 and len(ld) == 1):
        return port
    p = port
    if len(ls) == 3:  # to graph (C,H,W) order
        p = p.transpose([2, 1, 0])
    gshape = tuple(int(s) for s in dst_shape) or (1,)
    if len(ld) == 3:
        c_h_w = gshape if len(gshape) == 3 else (gshape[0], 1, gshape[1])
        p = p.reshape(c_h_w).transpose([2, 1, 0])
    else:
        p = p.flatten() if len(p.shape) > 1 else p.reshape(ld)
    return p


def _par(value, key, shp, name):
    """A decay or threshold as Lava's LIF takes it: a Python int, or per-neuron values in Lava layout."""
    v = expand_param(value, shp, f"node '{name}' {key}").astype(np.int64)
    n = int(np.prod(shp)) if shp else 1
    return int(v[0]) if v.size == 1 else to_lava(np.broadcast_to(v, (n,)), shp)


_NEURON_PARAMS = {"rf": RFParams, "sdnn": SigmaDeltaParams}  # by lowering; every other chip neuron is CUBA


def _weight_bits(q: SynapseParams) -> int:
    return 8 if q.num_weight_bits is None else int(q.num_weight_bits)  # Lava's default


class _Net:
    def __init__(self, qg: QGraph, xs, steps: int, batch: int, graded: dict[str, float], probes, counts: bool,
                 sparse: bool | None):
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import DelayDense, Dense
        from lava.proc.io.source import RingBuffer
        from lava.proc.lif.process import LIF, LIFReset
        from lava.proc.monitor.process import Monitor
        from lava.proc.sparse.process import Sparse
        from lava.utils.weightutils import SignMode
        from scipy.sparse import csr_matrix

        g = qg.graph
        self.g = g
        order, back = g.order()
        self.order = order
        self.out_port: dict[str, object] = {}
        self.flat_src: dict[str, str] = {}  # flatten node -> the node whose values it re-reads
        self.in_port: dict[str, object] = {}
        self.procs: dict[str, object] = {}
        self.resets: list[tuple[object, np.ndarray]] = []
        # step -> the bias Vars set then (a layer's bias waits for its first input; bias_onset in spikedeploy/quantize/quantizer.py)
        self.onsets: dict[int, list[tuple[object, np.ndarray]]] = {}
        self.monitors: list[tuple[str, str, object, object, tuple]] = []
        self.models: dict[object, type] = {}  # ProgLIF process -> its model (no directory scan by Lava)
        self.rf_ports: dict[str, tuple] = {}
        total = steps * batch
        self.total = total
        sm_enum = {"mixed": SignMode.MIXED, "exc": SignMode.EXCITATORY, "inh": SignMode.INHIBITORY}
        is_graded: dict[str, bool] = {}
        kinds = self.kinds = qg.chip_kinds(order, "Lava")

        def graded_of(n):
            if n not in is_graded:
                k = kinds[n]
                if k == "input":
                    is_graded[n] = n in graded
                elif k == "neuron":
                    is_graded[n] = OPS[g.nodes[n].op].graded
                elif k == "synapse":
                    is_graded[n] = True
                else:
                    is_graded[n] = False
                    is_graded[n] = any(graded_of(p) for p in g.predecessors(n))
            return is_graded[n]

        for name in order:
            node = g.nodes[name]
            k = kinds[name]
            want = {"synapse": SynapseParams, "neuron": _NEURON_PARAMS.get(OPS[node.op].lowering, CubaParams)}.get(k)
            q = qg.params(name, want) if want is not None else None
            preds = g.predecessors(name)
            nmb = MESSAGE_BITS if any(graded_of(p) for p in preds) else 0
            if k == "input":
                x = xs[name]
                data = np.zeros((total, *node.out_shape), np.int64)
                tt = min(steps, x.shape[0])
                for b in range(batch):
                    data[b * steps : b * steps + tt] = x[:tt, b]
                data = np.moveaxis(np.stack([to_lava(d, node.out_shape) for d in data]), 0, -1)
                p = RingBuffer(data=data.astype(np.int32))
                self.procs[name] = p
                self.out_port[name] = p.s_out
            elif k == "synapse":
                if node.op in MATRIX:
                    w = np.asarray(q.weight)
                    if node.op == "Scale":
                        w = np.diag(w.reshape(-1))
                    w = np.trunc(w).astype(np.int64) if w.dtype.kind == "f" else w.astype(np.int64)
                    kw = {"weight_exp": int(q.weight_exp), "num_weight_bits": _weight_bits(q), "num_message_bits": nmb}
                    if q.sign_mode is not None:
                        kw["sign_mode"] = sm_enum[sign_mode_of(w, q.sign_mode)]
                    if q.delay is not None:
                        d = np.broadcast_to(np.asarray(q.delay, dtype=int), w.shape).copy()
                        p = DelayDense(weights=w, delays=d, max_delay=int(d.max()), **kw)
                        self.resets.append((p.a_buff, np.zeros((w.shape[0], int(d.max()) + 1))))
                    else:
                        use_sparse = q.sparse
                        if use_sparse is None:
                            use_sparse = (sparse if sparse is not None
                                          else np.count_nonzero(w) < SPARSE_DENSITY * w.size)
                        if use_sparse or node.op == "Scale":
                            p = Sparse(weights=csr_matrix(w), **kw)
                        else:
                            p = Dense(weights=w, **kw)
                        self.resets.append((p.a_buff, np.zeros(w.shape[0])))
                    self.in_port[name] = (p.s_in, (w.shape[1],))
                    self.out_port[name] = p.a_out
                elif node.op in ("Conv2d", "Conv1d", "SumPool2d"):
                    if node.op == "SumPool2d":
                        c = node.in_shape[0]
                        kk, st, pad = pool_params(node.params)
                        wt = np.asarray(q.weight)
                        dil, groups = (1, 1), c
                    else:
                        wt = np.asarray(q.weight)
                        nd = 2 if node.op == "Conv2d" else 1
                        st, pad, dil = conv_params(node.params, nd)
                        groups = int(node.params.get("groups", 1))
                        if nd == 1:
                            wt = wt[:, :, None, :]
                            st, pad, dil = (1, *st), (0, *pad), (1, *dil)
                    wt = np.trunc(wt).astype(np.int64) if wt.dtype.kind == "f" else wt.astype(np.int64)
                    w_lava = np.ascontiguousarray(wt[:, :, ::-1, ::-1].transpose(0, 3, 2, 1)).astype(np.int32)
                    ishape = lava_layout(node.in_shape)
                    p = Conv(weight=w_lava, input_shape=ishape, stride=(st[1], st[0]), padding=(pad[1], pad[0]),
                             dilation=(dil[1], dil[0]), groups=groups, num_message_bits=nmb,
                             weight_exp=int(q.weight_exp), num_weight_bits=_weight_bits(q))
                    self.resets.append((p.a_buf, np.zeros(lava_layout(node.out_shape))))
                    self.in_port[name] = (p.s_in, tuple(node.in_shape))
                    self.out_port[name] = p.a_out
                else:
                    raise UnsupportedError(f"node '{name}' ({node.op}): no Lava process for this op")
                self.procs[name] = p
            elif k == "neuron":
                shp = tuple(node.out_shape)
                ls = lava_layout(shp)
                n = int(np.prod(shp)) if shp else 1
                if node.op == "RF":
                    from spikedeploy.targets.lava.rf import rf_process

                    p = rf_process(q, ls)
                    self.resets += [(p.real, np.zeros(ls)), (p.imag, np.zeros(ls))]
                    self.procs[name] = p
                    # two input ports: each edge goes to the port(s) q names it for (connections below)
                    self.rf_ports[name] = ((p.a_real_in, q.real_inputs), (p.a_imag_in, q.imag_inputs))
                    self.in_port[name] = (None, shp)
                    self.out_port[name] = p.s_out
                    continue
                if OPS[node.op].graded:
                    from spikedeploy.targets.lava.sdnn import sdnn_process

                    if q.mode == "delta":
                        from spikedeploy.targets.emulator.sdnn import check_delta_input

                        check_delta_input(name, preds, sum(np.abs(xs[p_]).astype(np.int64) for p_ in preds if p_ in xs),
                                          int(q.spike_exp) + int(q.state_exp))
                    b = expand_param(q.bias, shp, f"node '{name}' bias")
                    p, state = sdnn_process(name, q, ls, to_lava(np.broadcast_to(b, (n,)), shp))
                    self.resets += [(v, np.zeros(ls)) for v in state]
                    self.procs[name] = p
                    self.in_port[name] = (p.a_in, shp)
                    self.out_port[name] = p.s_out
                    continue

                bm = expand_param(q.bias_mant, shp, f"node '{name}' bias_mant")
                be = expand_param(q.bias_exp, shp, f"node '{name}' bias_exp")
                bm = to_lava(np.broadcast_to(wrap_int(bm, 16), (n,)), shp).astype(np.int16)
                be = to_lava(np.broadcast_to(be, (n,)), shp).astype(np.int16)
                onset = int(q.bias_onset)
                late = onset > 0 and bool(np.any(bm))
                kw = {"shape": ls, "du": _par(q.du, "du", shp, name), "dv": _par(q.dv, "dv", shp, name),
                      "vth": _par(q.vth, "vth", shp, name), "bias_mant": np.zeros_like(bm) if late else bm,
                      "bias_exp": be}
                if q.reset_interval and batch > 1 and steps % int(q.reset_interval):
                    raise UnsupportedError(
                        f"node '{name}': with reset_interval={int(q.reset_interval)}, Lava's samples run back to "
                        f"back and only stay aligned when steps ({steps}) is a multiple of it; run one sample at a time"
                    )
                custom = q.programmable
                if custom and q.reset_interval:
                    raise UnsupportedError(f"node '{name}': reset_interval (LIFReset) with a programmable neuron "
                                           "rule is not modelled; fix: run samples without reset_interval")
                if custom:
                    from spikedeploy.targets.lava.neurons import ProgLIF, PyProgLifModelFixed

                    ub = expand_param(0 if q.u_bias is None else q.u_bias, shp, f"node '{name}' u_bias")
                    ub = to_lava(np.broadcast_to(ub, (n,)), shp).astype(np.int32)
                    late_u = onset > 0 and bool(np.any(ub))
                    p = ProgLIF(u_bias=np.zeros_like(ub) if late_u else ub,
                                reset="zero" if q.reset is None else str(q.reset), reset_delay=bool(q.reset_delay),
                                fire_at_equal=bool(q.fire_at_equal), pending_reset=bool(q.pending_reset), **kw)
                    self.models[p] = PyProgLifModelFixed
                elif q.reset_interval:
                    # the RingBuffer plays all samples back to back, so the reset phase runs on
                    p = LIFReset(reset_interval=int(q.reset_interval),
                                 reset_offset=int(q.reset_offset) % int(q.reset_interval), **kw)
                else:
                    p = LIF(**kw)
                self.procs[name] = p
                if late:
                    self.onsets.setdefault(onset, []).append((p.bias_mant, bm))
                    self.resets.append((p.bias_mant, np.zeros(ls, np.int16)))
                if custom and late_u:
                    self.onsets.setdefault(onset, []).append((p.u_bias, ub))
                    self.resets.append((p.u_bias, np.zeros(ls, np.int32)))
                self.resets.append((p.u, np.zeros(ls)))
                self.resets.append((p.v, np.zeros(ls)))
                if q.v_init is not None:  # v_reset != 0: the shifted start, written in its step
                    vi = expand_param(q.v_init, shp, f"node '{name}' v_init")
                    vi = to_lava(np.broadcast_to(vi, (n,)), shp).astype(np.int32)
                    self.onsets.setdefault(int(q.v_init_step), []).append((p.v, vi))
                self.in_port[name] = (p.a_in, shp)
                self.out_port[name] = p.s_out
            elif k == "flatten":
                if len(preds) != 1:
                    raise UnsupportedError(f"node '{name}' ({node.op}): Lava needs exactly one input, got {preds}")
                # a flatten only re-reads its source in another shape: readers adapt the source's own port
                # (a reshaped port nothing connects to breaks Lava's compiler)
                self.flat_src[name] = self.flat_src.get(preds[0], preds[0])
        # connections
        for a, b in g.edges:
            if kinds[b] in ("synapse", "neuron"):
                port, shp = self.in_port[b]
                orig, a = a, self.flat_src.get(a, a)
                src = _adapt(self.out_port[a], g.nodes[a].out_shape, shp if shp else g.nodes[b].in_shape)
                for p_, names in self.rf_ports.get(b, ((port, [orig]),)):
                    if orig in names:
                        src.connect(p_)
        # monitors
        want: dict[tuple[str, str], object] = {}
        src_of: dict[str, str] = {}  # a flatten passes values through: Lava monitors its source's own port
        for name in g.outputs:
            for p in g.predecessors(name):
                q = src_of[p] = self.flat_src.get(p, p)
                if kinds[q] == "neuron" and not (OPS[g.nodes[q].op].spiking or OPS[g.nodes[q].op].graded):
                    want[(p, "v")] = self.procs[q].v
                else:
                    want[(p, "s")] = self.out_port[q]
        if counts:
            for name in order:
                if kinds[name] == "neuron" and (OPS[g.nodes[name].op].spiking or OPS[g.nodes[name].op].graded):
                    want[(name, "s")] = self.out_port[name]
        for name in probes:
            if kinds.get(name) == "neuron" and OPS[g.nodes[name].op].graded:
                # sigma and act, as the emulator's u and v (Sigma has no act, Delta's sigma stays 0)
                pr = self.procs[name]
                want[(name, "u")] = pr.sigma
                if hasattr(pr, "act"):
                    want[(name, "v")] = pr.act
                want[(name, "s")] = self.out_port[name]
            elif kinds.get(name) == "neuron" and name in self.rf_ports:
                want[(name, "u")] = self.procs[name].real
                want[(name, "v")] = self.procs[name].imag
                want[(name, "s")] = self.out_port[name]
            elif kinds.get(name) == "neuron":
                want[(name, "u")] = self.procs[name].u
                want[(name, "v")] = self.procs[name].v
                want[(name, "s")] = self.out_port[name]
            elif name in self.out_port or name in self.flat_src:
                q = src_of[name] = self.flat_src.get(name, name)
                want[(name, "s")] = self.out_port[q]
            else:
                raise BackendError(f"probe '{name}' names no node the Lava network has")
        for (name, what), target in want.items():
            m = Monitor()
            m.probe(target, total)
            src = src_of.get(name, name)
            self.monitors.append((name, what, m, target, tuple(g.nodes[src].out_shape), tuple(g.nodes[name].out_shape)))
        self.root = next(iter(self.procs.values()))

    def read(self):
        res = {}
        for name, what, m, target, src_shp, shp in self.monitors:
            data = m.get_data()
            pname = target.process.name
            rec = data[pname][target.name]
            x = from_lava(np.asarray(rec).reshape(rec.shape[0], *target.shape), src_shp)
            res[(name, what)] = x.reshape(x.shape[0], *shp)
        return res


def _end_workers(grace: float = 5.0) -> None:
    """End the worker processes Lava started (multiprocessing children of this process) that its runtime's
    stop() left behind: an interrupt during start-up or a step can leave the runtime unable to stop them."""
    import multiprocessing

    kids = multiprocessing.active_children()
    for k in kids:
        with contextlib.suppress(Exception):
            k.terminate()
    deadline = time.time() + grace
    for k in kids:
        with contextlib.suppress(Exception):
            k.join(max(0.0, deadline - time.time()))
            if k.is_alive():
                k.kill()
                k.join(1.0)


def simulate_lava(qg: QGraph, inputs: Mapping[str, np.ndarray], *, steps: int | None = None,
                  probes: Iterable[str] = (), counts: bool = True, sparse: bool | None = None,
                  quiet: bool = True, progress=None) -> Run:
    """Run `qg` in Lava's bit-accurate Loihi 2 model; same contract as simulate_emulator.

    counts=False skips the per-layer spike monitors (Monitor reads are slow for large layers); outputs
    and probes are recorded regardless. sparse=True/False forces Sparse/Dense for every dense layer.
    progress(fraction done) is called after every sample.
    """
    from spikedeploy.targets.lava.compat import lava_ready

    lava_ready()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    g = qg.graph
    if any(n.out_shape is None for n in g.nodes.values()):
        g.infer_shapes()
    comps = g.components()
    if len(comps) > 1:
        # Lava compiles only the processes connected to the one it runs (the rest would stay silent), so
        # independent parts (one encoder per modality) run as separate Lava networks, records merged
        probes = tuple(probes)
        def part_progress(i):
            return None if progress is None else (lambda f: progress((i + f) / len(comps)))

        parts = [simulate_lava(qg.subgraph(names), {k: v for k, v in inputs.items() if k in names}, steps=steps,
                               probes=[p for p in probes if p in names], counts=counts, sparse=sparse, quiet=quiet,
                               progress=part_progress(i))
                 for i, names in enumerate(comps)]
        run = parts[0]
        for r in parts[1:]:
            run.outputs.update(r.outputs)
            run.counts.update(r.counts)
            run.traces.update(r.traces)
        run.meta["lava_networks"] = len(comps)
        return run
    xs, t_in, batch = prepare_inputs(g, inputs)
    steps = t_in if steps is None else int(steps)
    graded = {n: float(np.abs(x).max(initial=0)) for n, x in xs.items() if not is_binary(x)}
    probes = tuple(probes)
    sink = io.StringIO()
    net = None
    interrupted = False
    seconds: list[float] = []  # per sample; the first includes compiling
    try:
        net = _Net(qg, xs, steps, batch, graded, probes, counts, sparse)
        cfg = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map=net.models)
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            for b in range(batch):
                t = time.perf_counter()
                if b:
                    for var, zeros in net.resets:
                        var.set(zeros.astype(np.int32) if zeros.ndim and zeros.dtype.kind == "f" else zeros)
                done = 0
                for at in [*sorted(k for k in net.onsets if k < steps), steps]:
                    if at > done:
                        net.root.run(condition=RunSteps(num_steps=at - done), run_cfg=cfg)
                        done = at
                    for var, value in net.onsets.get(at, ()):
                        var.set(value)
                seconds.append(time.perf_counter() - t)
                if progress:
                    progress((b + 1) / batch)
            rec = net.read()
    except SpikeDeployError:
        raise
    except Exception as e:  # Lava raises bare Exceptions and RuntimeErrors from its runtime
        raise BackendError(f"Lava simulation failed: {type(e).__name__}: {e}") from e
    except BaseException:  # Ctrl-C or SIGTERM (spikedeploy.io.interrupts), possibly while the runtime starts
        interrupted = True
        raise
    finally:
        if net is not None:
            with contextlib.suppress(Exception):
                net.root.stop()
        if interrupted:
            _end_workers()
    run = Run(backend="lava", steps=steps, batch=batch)

    def per_sample(a):  # [N*steps, *shape] -> [steps, N, *shape]
        a = a.reshape(batch, steps, *a.shape[1:])
        return np.swapaxes(a, 0, 1)

    for name in g.inputs:
        x = xs[name]
        c = np.zeros((steps, batch), np.int32)
        tt = min(steps, x.shape[0])
        c[:tt] = np.count_nonzero(x[:tt].reshape(tt, batch, -1), axis=2)
        run.counts[name] = c
    for (name, what), a in rec.items():
        a = per_sample(a)
        if what == "s" and net.kinds[name] == "neuron":
            run.counts[name] = np.count_nonzero(a.reshape(steps, batch, -1), axis=2).astype(np.int32)
        if name in probes:
            run.traces.setdefault(name, {})[what] = a.astype(np.int32 if what in ("u", "v") else np.int64)
    for name in g.outputs:
        acc = None
        for p in g.predecessors(name):
            op = OPS[g.nodes[p].op]
            key = (p, "v") if (net.kinds[p] == "neuron" and not (op.spiking or op.graded)) else (p, "s")
            a = per_sample(rec[key]).reshape(steps, batch, *g.nodes[name].out_shape).astype(np.int64)
            acc = a if acc is None else acc + a
        spk = all(net.kinds[p] == "neuron" and OPS[g.nodes[p].op].spiking for p in g.predecessors(name))
        run.outputs[name] = acc.astype(np.int8) if spk else acc
    for name, tr in run.traces.items():
        if "s" in tr and net.kinds[name] == "neuron" and not OPS[g.nodes[name].op].graded:
            tr["s"] = tr["s"].astype(np.int8)
    run.meta["sample_reset"] = "Var.set of u, v and synapse buffers"
    run.meta["sample_seconds"] = seconds
    return run
