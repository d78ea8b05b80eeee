"""Float reference simulator: a Graph run step by step in torch (float64 by default), forward Euler.

Semantics (NIR, with the metadata NIR lacks taken from the Graph):

- Time is discrete with step `graph.dt`; arrays are time-major `[T, B, ...]`.
- Several edges into one node are summed. A back edge (closing a cycle, see `Graph.order`) carries the
  value its source produced in the previous step; at step 0 that value is zero.
- LIF:      v += dt/tau · (v_leak − v + r·x);  s = v > v_th;  reset.
- CubaLIF:  u += dt/tau_syn · (−u + w_in·x);  v += dt/tau_mem · (v_leak − v + r·u);  s = v > v_th; reset.
  (v uses the new u, as Lava's CUBA neuron does.)
- IF:       v += dt · r·x;  I: v += dt · r·x (output v);  LI / CubaLI: as LIF / CubaLIF without spikes.
- Threshold: s = x > threshold. Spikes fire on strictly greater, as snnTorch (`mem > threshold`) and
  Lava (`v > vth << 6`) do; a neuron node with meta "fire_at_equal" fires at v >= v_th (spikingjelly's
  heaviside(v - v_th) is 1 at 0).
- Reset, per node (`graph.neuron_rule`: node.meta, default graph.reset / graph.reset_delay): "zero" sets v
  to v_reset on a spike, "subtract" subtracts v_th. With reset_delay (snnTorch's default) the reset is
  decided from the previous step's membrane, which kept its above-threshold value, and applied in this
  step, exactly as snnTorch's `mem_reset(mem)` before `state_function`: subtract gives
  v[t] = update(v[t-1]) − v_th, zero gives v[t] = update(v_reset). snnTorch's subtraction without the
  delay (meta "pending_reset") also subtracts that pending reset before the spike test and then corrects
  by (pending − s)·v_th (its `do_reset = spk − reset`).
- Delay: y[t] = x[t − delay/dt] (NIR gives the delay in the same time unit as tau and dt).

`synapse_delay=True` reproduces the one step of latency that every synapse process (Dense, Conv,
DelayDense) adds in Lava/Loihi: the value a chain of synapse ops (Affine, Linear, Conv, Scale, pooling,
Delay, with Flatten passing through) delivers to a neuron, Output or host node at step t is the one it
computed at step t−1. A recurrent loop through a synapse then has exactly that one step, as on chip.
This is the float reference a fixed-point run is compared with bin for bin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from spikedeploy.errors import GraphError, ParameterError, UnsupportedError
from spikedeploy.graph.ir import Graph, neuron_rule
from spikedeploy.graph.ops import (
    CONV,
    CUBA_SPIKING,
    CURRENT_BASED,
    DENSE,
    LEAKY,
    MEMBRANE_ONLY,
    OPS,
    POOL,
    RESETTING,
    conv_params,
    pool_params,
)
from spikedeploy.simulate.inputs import time_major_inputs
from spikedeploy.simulate.result import Run, model_layout

_NEEDS_DT = ("LIF", "IF", "CubaLIF", "LI", "CubaLI", "I", "Delay")
_CHAIN_FAMILIES = ("synapse", "shape")


def simulate_float(
    graph: Graph,
    inputs: Mapping[str, np.ndarray | torch.Tensor],
    *,
    steps: int | None = None,
    probes: Iterable[str] | str = (),
    synapse_delay: bool = False,
    bias_onset: bool | Mapping[str, int] = False,
    dtype: torch.dtype = torch.float64,
    progress=None,
) -> Run:
    """Run `graph` on `inputs` (name of each Input node -> array `[T, B, *shape]`).

    steps: number of steps (default: the inputs' T); inputs are zero-padded past their end, so a
        delayed run can be given T + L steps to let the last inputs through.
    probes: node names whose full state is recorded in `run.traces` (`"*"` for every node): neurons
        give `v` (and `u` for Cuba nodes) and `s` for spiking ones; other nodes give `out`.
    bias_onset: with synapse_delay, every neuron layer rests (no input, no bias, no leak) until its synapse
        depth, the step its first input arrives, as a chip quantized with bias_onset="depth" runs it
        ({node: step} gives the steps explicitly).
    Returns a Run with `outputs` for every Output node and per-step spike `counts` for every spiking and
    Input node (Input counts are non-zero entries: events, binary or graded). progress(fraction done) is
    called after every step.
    """
    from spikedeploy.simulate.hybrid import has_host_part, run_hybrid

    if has_host_part(graph):
        # a stage's own depths restart at the host values it reads: the whole graph's depths decide
        onsets = rest_steps(graph) if synapse_delay and bias_onset else {}

        def stage(sub, xs, steps, probes):
            return simulate_float(sub, xs, steps=steps, probes=probes, synapse_delay=synapse_delay,
                                  bias_onset={n: d for n, d in onsets.items() if n in sub.nodes}, dtype=dtype)

        run = run_hybrid(graph, inputs, stage, steps=steps, probes=probes, progress=progress, backend="float")
        run.meta.update({"synapse_delay": bool(synapse_delay), "reset": graph.reset})
        return model_layout(graph, run)
    g = graph.copy()
    g.infer_shapes()
    feeds, T, B = _check_inputs(g, inputs, steps)
    for name, node in g.nodes.items():
        if node.spec.family == "host":
            raise UnsupportedError(
                f"node '{name}' ({node.op}): the float backend does not run host-side ops; "
                "run the host part separately (ONNX export) and feed its output as an Input"
            )
        if node.op == "RF":  # its two input ports are named in the QGraph only (targets/emulator/rf.py)
            raise UnsupportedError(f"node '{name}' (RF): the float backend has no resonate-and-fire model; "
                                   "use --backend emulator or lava")
        if node.op in _NEEDS_DT and g.dt is None:
            raise ParameterError(
                f"node '{name}' ({node.op}) needs the time step, but graph.dt is None (NIR files do not record it); "
                "pass --dt SECONDS (snnTorch exports assume dt=1e-4)"
            )
    order, delayed = _schedule(g, synapse_delay)
    rest = dict(bias_onset) if isinstance(bias_onset, Mapping) else (
        rest_steps(g) if synapse_delay and bias_onset else {})
    probe_set = set(g.nodes) if probes == "*" else set([probes] if isinstance(probes, str) else probes)
    unknown = probe_set - set(g.nodes)
    if unknown:
        raise GraphError(f"probe(s) {sorted(unknown)} name no node of the graph")

    layers = {n: _Layer(g, n, dtype, B) for n in order}
    zero = {n: torch.zeros((B, *g.nodes[n].out_shape), dtype=dtype) for n in order}
    preds = {n: [(p, (p, n) in delayed) for p, q in g.edges if q == n] for n in order}
    prev: dict[str, torch.Tensor] = dict(zero)
    outputs = {n: [] for n in g.outputs}
    counts = {n: [] for n in order if g.nodes[n].op in CUBA_SPIKING or g.nodes[n].op == "Input"}
    traces: dict[str, dict[str, list]] = {n: {} for n in probe_set}
    feeds_t = {k: torch.as_tensor(v, dtype=dtype) for k, v in feeds.items()}

    for t in range(T):
        cur: dict[str, torch.Tensor] = {}
        for n in order:
            node = g.nodes[n]
            if node.op == "Input":
                x = feeds_t[n][t] if t < feeds_t[n].shape[0] else zero[n]
                y = x
            else:
                x = None
                in_shape = (B, *node.in_shape)
                for p, late in preds[n]:
                    v = (prev[p] if late else cur[p]).reshape(in_shape)
                    x = v if x is None else x + v
                y = layers[n].rest(zero[n]) if t < rest.get(n, 0) else layers[n].step(x)
            cur[n] = y
            if n in counts:
                c = (y != 0).sum(dim=tuple(range(1, y.dim()))) if node.op == "Input" else y.sum(
                    dim=tuple(range(1, y.dim())))
                counts[n].append(c)
            if n in outputs:
                outputs[n].append(y)
            if n in traces:
                for k, v in layers[n].probe(y).items():
                    traces[n].setdefault(k, []).append(v.clone())
        prev = cur
        if progress:
            progress((t + 1) / T)

    def stack(xs, shape):
        return torch.stack(xs).numpy() if xs else np.zeros((0, B, *shape))

    return model_layout(g, Run(
        backend="float",
        steps=T,
        batch=B,
        outputs={n: stack(v, g.nodes[n].out_shape) for n, v in outputs.items()},
        counts={n: stack(v, ()).astype(np.int64) for n, v in counts.items()},
        traces={n: {k: torch.stack(v).numpy() for k, v in d.items()} for n, d in traces.items()},
        meta={"dt": g.dt, "dtype": str(dtype).replace("torch.", ""), "synapse_delay": bool(synapse_delay),
              "bias_onset": bool(rest), "reset": g.reset, "order": order},
    ))


def synaptic_nodes(graph: Graph) -> set[str]:
    """Nodes that belong to a chain of synapse ops: synapse nodes, and shape nodes fed by one.

    On chip such a chain becomes one synapse process (Dense, Conv, DelayDense), which adds one step. A synapse
    op placed on the host computes within its step (host_exec), so it is not one.
    """
    syn: set[str] = set()
    changed = True
    while changed:
        changed = False
        for n, node in graph.nodes.items():
            if n in syn or node.placement == "host":
                continue
            fam = node.spec.family
            if fam == "synapse" or (fam == "shape" and any(p in syn for p in graph.predecessors(n))):
                syn.add(n)
                changed = True
    return syn


def synapse_depth(graph: Graph) -> dict[str, int]:
    """For every node, the most synapse delays on any path from an Input to it (one per chain of synapse
    ops, as `synapse_delay=True` and the chip count them); edges that close a cycle are not followed.

    A node at depth d answers an input at step t at step t + d, so a run of T input steps shows the
    node's whole response to them only when it lasts T + d steps.
    """
    syn = synaptic_nodes(graph)
    order, _ = graph.order()
    pos = {n: i for i, n in enumerate(order)}
    depth: dict[str, int] = {}
    for n in order:
        depth[n] = max((depth[p] + (p in syn and graph.nodes[n].spec.family not in _CHAIN_FAMILIES)
                        for p in graph.predecessors(n) if pos[p] < pos[n]), default=0)
    return depth


def rest_steps(graph: Graph) -> dict[str, int]:
    """{neuron layer: its synapse depth}, for the layers that rest before their first input (bias_onset)."""
    return {n: d for n, d in synapse_depth(graph).items() if d > 0 and graph.nodes[n].spec.family == "neuron"}


def _schedule(g: Graph, synapse_delay: bool) -> tuple[list[str], set[tuple[str, str]]]:
    """Evaluation order and the edges that deliver the previous step's value."""
    if not synapse_delay:
        order, back = g.order()
        return order, set(back)
    syn = synaptic_nodes(g)
    late = {(a, b) for a, b in g.edges if a in syn and g.nodes[b].spec.family not in _CHAIN_FAMILIES}
    same_step = Graph(nodes=g.nodes, edges=[e for e in g.edges if e not in late])
    order, back = same_step.order()
    return order, late | set(back)


def _check_inputs(g: Graph, inputs, steps):
    feeds, t_in, B = time_major_inputs(g, inputs)
    T = t_in if steps is None else steps
    if T < 0:
        raise GraphError(f"steps must be >= 0, got {T}")
    return feeds, int(T), int(B)


class _Layer:
    """Per-node parameters as broadcastable tensors, and its state."""

    def __init__(self, g: Graph, name: str, dtype, B: int):
        self.node = node = g.nodes[name]
        self.op = node.op
        self.dt = g.dt
        rule = neuron_rule(g, node)
        self.subtract = rule["reset"] == "subtract"
        self.reset_delay = rule["reset_delay"]
        self.fire_at_equal = rule["fire_at_equal"]
        self.pending_reset = rule["pending_reset"] and self.subtract and not self.reset_delay
        self.dtype = dtype
        self.out_shape = tuple(node.out_shape)
        p = node.params

        def param(key, default=None):
            v = p.get(key, default)
            if v is None:
                return None
            a = np.asarray(v, dtype=np.float64)
            if a.size == int(np.prod(self.out_shape)) and a.size > 1:
                a = a.reshape(self.out_shape)
            elif a.size == 1:
                a = a.reshape(())
            else:
                raise ParameterError(
                    f"node '{name}' ({node.op}): parameter '{key}' has {a.size} values for {list(self.out_shape)} neurons"
                )
            return torch.as_tensor(a, dtype=dtype)

        self.v = self.u = None
        op = self.op
        if op in DENSE:
            self.w = torch.as_tensor(np.asarray(p["weight"], dtype=np.float64), dtype=dtype)
            b = p.get("bias")
            self.b = torch.as_tensor(np.asarray(b, dtype=np.float64), dtype=dtype) if op == "Affine" and b is not None else None
        elif op in CONV:
            nd = 1 if op == "Conv1d" else 2
            self.w = torch.as_tensor(np.asarray(p["weight"], dtype=np.float64), dtype=dtype)
            b = p.get("bias")
            self.b = None if b is None else torch.as_tensor(np.asarray(b, dtype=np.float64).ravel(), dtype=dtype)
            pad = p.get("padding", 0)
            if isinstance(pad, str) or (isinstance(pad, np.ndarray) and pad.dtype.kind in "US"):
                stride, _, dilation = conv_params({**p, "padding": 0}, nd)
                padding = str(pad)  # 'same' / 'valid', as torch takes them
            else:
                stride, padding, dilation = conv_params(p, nd)
            self.conv_kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": int(p.get("groups", 1))}
            self.conv = F.conv1d if nd == 1 else F.conv2d
        elif op in POOL:
            k, stride, padding = pool_params(p)
            self.pool_kw = {"kernel_size": k, "stride": stride, "padding": padding, "count_include_pad": True,
                            "divisor_override": 1 if op == "SumPool2d" else None}
        elif op == "Scale":
            self.scale = param("scale")
        elif op == "Delay":
            d = np.asarray(p["delay"], dtype=np.float64) / self.dt
            steps = np.rint(d)
            if np.any(np.abs(d - steps) > 1e-6 * np.maximum(1, np.abs(d))) or np.any(steps < 0):
                raise ParameterError(
                    f"node '{name}' (Delay): delays must be non-negative multiples of dt={self.dt:g}; "
                    f"got delay/dt = {d.ravel()[:4].tolist()}...; round them or change dt"
                )
            steps = steps.astype(np.int64)
            self.delay_steps = steps.reshape(self.out_shape) if steps.size > 1 else steps.reshape(())
            D = int(steps.max(initial=0))
            self.hist = torch.zeros((D + 1, B, *self.out_shape), dtype=dtype)
            self.hist_t = 0
        elif op == "Threshold":
            self.vth = param("threshold")
        elif op == "SigmaDelta":  # the integer rule without its floors (targets/emulator/sdnn.py)
            self.vth, self.sd_bias = param("v_threshold"), param("bias", 0.0)
            self.sd = {k: float(np.asarray(p.get(k, OPS[op].optional[k])).ravel()[0])
                       for k in ("relu", "sigma", "delta", "in_scale", "out_scale")}
            self.u, self.v, self.residue = (torch.zeros((B, *self.out_shape), dtype=dtype) for _ in range(3))
        elif op in OPS and OPS[op].family == "neuron":
            self.r = param("r")
            self.v = torch.zeros((B, *self.out_shape), dtype=dtype)
            if op in LEAKY:
                self.v_leak = param("v_leak")
            if op in MEMBRANE_ONLY:
                self.k = self.dt / param("tau")
            if op in CURRENT_BASED:
                self.k = self.dt / param("tau_mem")
                self.k_syn = self.dt / param("tau_syn")
                self.w_in = param("w_in", 1.0)
                self.u = torch.zeros((B, *self.out_shape), dtype=dtype)
            if op in RESETTING:
                self.vth = param("v_threshold")
                self.v_reset = param("v_reset", 0.0)
            if op in ("IF", "I"):
                self.r_dt = self.r * self.dt

    def step(self, x: torch.Tensor) -> torch.Tensor:
        op = self.op
        B = x.shape[0]
        if op in ("Output", "Flatten"):
            return x.reshape(B, *self.out_shape)
        if op in DENSE:
            y = x.reshape(B, -1) @ self.w.T
            return y + self.b if self.b is not None else y
        if op in CONV:
            return self.conv(x, self.w, self.b, **self.conv_kw)
        if op in POOL:
            return F.avg_pool2d(x, **self.pool_kw)
        if op == "Scale":
            return x * self.scale
        if op == "Delay":
            D1 = self.hist.shape[0]
            self.hist[self.hist_t % D1] = x
            if self.delay_steps.ndim == 0:
                y = self.hist[(self.hist_t - int(self.delay_steps)) % D1].clone()
            else:
                idx = torch.as_tensor((self.hist_t - self.delay_steps) % D1)
                y = torch.gather(self.hist, 0, idx.expand(B, *self.out_shape).unsqueeze(0))[0]
            self.hist_t += 1
            return y
        if op == "Threshold":
            self.v = x  # no state: what it compares this step (a neuron with full decay)
            return (x > self.vth).to(self.dtype)
        if op == "SigmaDelta":
            return self._sigma_delta(x.reshape(B, *self.out_shape) * self.sd["in_scale"])
        # neurons
        pending = None
        if (self.reset_delay or self.pending_reset) and op in CUBA_SPIKING:  # decided from the previous membrane
            pending = self._fires(self.v)
            if not self.subtract:
                self.v = torch.where(pending, self.v_reset.expand_as(self.v), self.v)
        if op in ("IF", "I"):
            self.v = self.v + self.r_dt * x
        elif op in MEMBRANE_ONLY:
            self.v = self.v + self.k * (self.v_leak - self.v + self.r * x)
        else:  # CubaLIF, CubaLI
            self.u = self.u + self.k_syn * (-self.u + self.w_in * x)
            self.v = self.v + self.k * (self.v_leak - self.v + self.r * self.u)
        if op in ("I", "LI", "CubaLI"):
            return self.v
        if pending is not None:
            if self.subtract:
                self.v = self.v - pending * self.vth
            s = self._fires(self.v)
            if self.pending_reset:  # snnTorch reset_delay=False: mem -= (spk - reset)·threshold
                self.v = self.v + (pending.to(self.dtype) - s.to(self.dtype)) * self.vth
            return s.to(self.dtype)
        s = self._fires(self.v)
        if self.subtract:
            self.v = self.v - s * self.vth
        else:
            self.v = torch.where(s, self.v_reset.expand_as(self.v), self.v)
        return s.to(self.dtype)

    def _sigma_delta(self, x: torch.Tensor) -> torch.Tensor:
        sd = self.sd
        if sd["sigma"]:
            self.u = self.u + x
            x = self.u
        if not sd["delta"]:
            return x * sd["out_scale"]
        act = x + self.sd_bias
        if sd["relu"]:
            act = torch.relu(act)
        d = act - self.v + self.residue
        s = torch.where(d.abs() >= self.vth, d, torch.zeros_like(d))
        self.residue, self.v = d - s, act
        return s * sd["out_scale"]

    def rest(self, zero: torch.Tensor) -> torch.Tensor:
        """A step before the layer's first input arrives (bias_onset): its state stays as it started, at 0."""
        if self.op == "Threshold":
            self.v = zero
        return zero

    def _fires(self, v: torch.Tensor) -> torch.Tensor:
        return v >= self.vth if self.fire_at_equal else v > self.vth

    def probe(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.v is None:
            return {"out": y}
        d = {"v": self.v}
        if self.u is not None:
            d["u"] = self.u
        if self.op in CUBA_SPIKING:
            d["s"] = y
        return d
