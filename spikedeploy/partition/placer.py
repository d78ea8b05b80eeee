"""Place a Graph's chip neurons onto cores and chips of a target.

`partition(graph, target)` splits every layer (a chip neuron node plus the synapse nodes feeding it, see
resources.py for the resource model) into contiguous neuron groups that each fit one core, packs
groups of different layers onto shared cores, and assigns cores to chips:

1. Split, destinations first (reverse topological order), so a source layer knows how many output axons
   each of its neurons needs (one per projection and destination core). Each group is the longest
   contiguous range from its start that fits every per-core limit (neurons, synapse memory, input axons,
   output axons); a neuron that fits no core alone raises TargetLimitError naming layer, resource, need,
   limit and a fix. Recurrent layers are re-split until their output axons fit. Conv layers are ordered
   in spatial tiles (partition_model.choose_tile), so a group is a compact patch with a small halo.
   When the first packing is far from the bound, `_search` re-splits with derated limits, notably
   pairing output-axon-bound groups with input-axon-bound ones.
2. Pack groups in topological order into the open core (among the last `WINDOW`) that fits and is most
   strongly connected to it (spike traffic from a Run when given, else neuron counts), first-fit on ties.
   Two groups of one layer never share a core, which keeps the axon counts exact under the model.
3. Rebalance (graphs where the search runs): each layer's cut points move so its earlier cores fill up,
   then the least used cores are emptied by moving their groups, whole or cut in two, onto others. A
   change is kept only if every core still fits once the output axons it alters are recounted.
4. Chips: "greedy" fills chips in core order (neighbouring layers share a chip); "roundrobin" deals cores
   to chips in turn (nengo-loihi's RoundRobin, useful to see inter-chip traffic at its worst).

The lower bound (partition_bound.py) holds for any placement under the resource model.

Layers equal up to their names (columns of one network) are split, measured and linked once per call
(partition_memo.py), so a graph of thousands of copies costs its distinct layers plus work linear in
cores (benchmarks/bench_partition_scale.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikedeploy.errors import FileFormatError, SpikeDeployError, TargetLimitError, UnsupportedError
from spikedeploy.partition.bound import lower_bound
from spikedeploy.partition.memo import active, current, proj_key
from spikedeploy.partition.resources import RESOURCES, Layer, Model, build_model, check_single, index_bits

WINDOW = 64
# Splitting with a derated per-core limit leaves room on each core for groups of other layers whose
# binding resource differs (a memory-bound layer next to an axon-bound one). Searched coordinate-wise
# over these factors, for graphs up to SEARCH_MAX_NEURONS (deterministic: no time-based cut-off).
DERATE = (0.9, 0.75, 0.6, 0.5)
SEARCH_MAX_NEURONS = 300_000
SEARCH_WORK = 3_000_000  # trials x (neurons + synapses / 64)
SEARCH_GOOD_ENOUGH = 1.02  # no search when the first packing is within 2% of the lower bound
# complementary derating (see _search): layers using at most COMPLEMENT_MAX of their binding axon resource
# on the other axon resource are paired; PAIR_MARGIN scales the computed cut (halo grows as groups shrink)
COMPLEMENT_MAX = 0.75
COMPLEMENT_STRICT = 0.25  # ...and with at most this, also packed side by side (the only search on large graphs)
PAIR_MARGIN = (1.0, 0.95, 0.9, 0.85)
ALLOCATORS = ("greedy", "roundrobin")
REBALANCE_PASSES = 3
# core elimination (_Cores.eliminate): least used cores tried, and cores tried for each half of a group
ELIMINATE_TRIES = 4
RELOCATE_CANDIDATES = 6


@dataclass
class CoreUse:
    core: int
    chip: int = 0
    neurons: int = 0
    synapse_memory_bits: int = 0
    input_axons: int = 0
    output_axons: int = 0
    synapses: int = 0
    groups: list[tuple[str, int, int]] = field(default_factory=list)  # (layer, start, stop)

    def as_dict(self) -> dict:
        return {
            "core": self.core, "chip": self.chip, "neurons": self.neurons,
            "synapse_memory_bits": self.synapse_memory_bits, "input_axons": self.input_axons,
            "output_axons": self.output_axons, "synapses": self.synapses,
            "groups": [[g[0], g[1], g[2]] for g in self.groups],
        }


@dataclass
class Placement:
    """Where every chip neuron lives, what each core uses, and how far that is from the lower bound."""

    target: str
    limits: dict[str, int]
    cores_per_chip: int
    groups: dict[str, list[tuple[int, int, int]]]  # layer -> [(core, start, stop)], neuron ranges [start, stop)
    cores: list[CoreUse]
    chips: int
    lower_bound: int
    lower_bound_by_resource: dict[str, int]
    totals: dict[str, int]  # minimum total need per resource (the lower bound's numerators)
    layers: dict[str, dict[str, Any]]  # layer -> op, neurons, spiking, synapse_nodes, accumulator
    sources: dict[str, int]  # off-chip source populations (Input, host nodes) -> neurons
    host_nodes: list[str]
    allocator: str
    violations: list[str] = field(default_factory=list)
    # links[i] = (source population, source core or -1 for off-chip, destination core, source neurons):
    # one axon / one message per spike for each such neuron.
    links: list[tuple[str, int, int, int]] = field(default_factory=list)
    # per core: source population -> synapses on this core fed by it (synops = spikes x this / n_source)
    core_synapses: list[dict[str, int]] = field(default_factory=list)
    model: Model | None = field(default=None, repr=False, compare=False)

    @property
    def cores_used(self) -> int:
        return len(self.cores)

    @property
    def ratio_to_lower_bound(self) -> float:
        return self.cores_used / max(1, self.lower_bound)

    def node_cores(self, node: str) -> list[int]:
        """Cores holding a layer, or the layer a synapse node belongs to."""
        if node in self.groups:
            return sorted({c for c, _, _ in self.groups[node]})
        for lname, info in self.layers.items():
            if node in info["synapse_nodes"]:
                return sorted({c for c, _, _ in self.groups[lname]})
        return []

    def utilisation(self) -> dict[str, dict[str, float]]:
        """Per resource: mean and max fraction of the per-core limit over used cores."""
        out = {}
        for r in RESOURCES:
            v = np.array([getattr(c, r) for c in self.cores], dtype=float) / max(1, self.limits[r])
            out[r] = {"mean": float(v.mean()) if v.size else 0.0, "max": float(v.max()) if v.size else 0.0}
        return out

    def as_dict(self) -> dict:
        return {
            "target": self.target,
            "cores_used": self.cores_used,
            "cores_lower_bound": self.lower_bound,
            "lower_bound_by_resource": dict(self.lower_bound_by_resource),
            "chips": self.chips,
            "cores_per_chip": self.cores_per_chip,
            "allocator": self.allocator,
            "limits": dict(self.limits),
            "totals": dict(self.totals),
            "utilisation": self.utilisation(),
            "layers": {k: {**v, "groups": [list(g) for g in self.groups[k]]} for k, v in self.layers.items()},
            "cores": [c.as_dict() for c in self.cores],
            "host_nodes": list(self.host_nodes),
            "violations": list(self.violations),
        }


def _limits(target) -> dict[str, int]:
    return {r: int(getattr(target.core, r)) for r in RESOURCES}


def load_placement(path, graph, target, *, qgraph=None) -> Placement:
    """The placement `spikedeploy partition -o` wrote for `graph` on `target`, loaded, not recomputed.

    Its neuron groups are read back as they are; every core's use, the chips, the links and the limit
    breaches are recomputed from them under the target's limits, so a file that does not describe this
    graph on this target is refused in one line."""
    import json
    from pathlib import Path

    from spikedeploy.targets.capabilities import capability_breaches
    from spikedeploy.targets.spec import get_target

    target = get_target(target)
    try:
        saved = json.loads(Path(path).read_text())
        core_groups = [[(str(g[0]), int(g[1]), int(g[2])) for g in c["groups"]] for c in saved["cores"]]
        opts = saved.get("options") or {}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise FileFormatError(f"{path}: not a placement file from `spikedeploy partition -o` ({e})") from e
    if saved.get("target") != target.name:
        raise FileFormatError(f"{path}: a placement on '{saved.get('target')}', not on '{target.name}'; "
                              f"run `spikedeploy partition --target {target.name}`")
    model = build_model(graph, target, qgraph)
    splits: dict[str, list[tuple[int, int]]] = {k: [] for k in model.layers}
    for members in core_groups:
        for lname, a, b in members:
            if lname not in splits:
                raise FileFormatError(f"{path}: layer '{lname}' is not a chip layer of this graph; run partition "
                                      "on this graph")
            splits[lname].append((a, b))
    for lname, layer in model.layers.items():
        splits[lname].sort()
        pos = 0
        for a, b in splits[lname] + [(layer.n, layer.n + 1)]:
            if a != pos or b <= a:
                raise FileFormatError(f"{path}: layer '{lname}': the neuron groups do not cover neurons 0..{layer.n} "
                                      f"exactly once (gap or overlap at neuron {pos}); run partition again")
            pos = b
    idx, sharing = index_bits(target), bool(getattr(target.core, "conv_weight_sharing", True))
    lim = _limits(target)
    with active():
        return _assemble(model, target, lim, idx, sharing, splits, core_groups,
                         capability_breaches(graph, target), strict=False,
                         avail_chips=int(opts.get("chips") or target.max_chips), max_cores=opts.get("max_cores"),
                         allocator=str(saved.get("allocator", "greedy")), bound=lower_bound(model, lim, idx, sharing))


def spike_rates(model: Model, run) -> dict[str, float]:
    """Mean spikes per neuron per step for every population the Run counted."""
    rates: dict[str, float] = {}
    if run is None:
        return rates
    sizes = {**model.sources, **{k: v.n for k, v in model.layers.items()}}
    for name, c in run.counts.items():
        if name in sizes and np.size(c):
            rates[name] = float(np.mean(c)) / sizes[name]
    return rates


def partition(graph, target, *, run=None, qgraph=None, chips: int | None = None, max_cores: int | None = None,
              allocator: str = "greedy", strict: bool = True) -> Placement:
    """Place `graph`'s chip layers onto `target` cores and chips (see module docstring).

    `target` is a TargetSpec or a name for `get_target`. `run` (a Run) weights traffic by measured spike
    rates; `qgraph` gives weight bits per synapse node. `chips` caps the chips available (default: the
    target's `max_chips`), `max_cores` the cores. With `strict=False` limit breaches are recorded in
    `Placement.violations` instead of raised (an oversize neuron gets a core of its own).
    """
    if isinstance(target, str):
        from spikedeploy.targets.spec import get_target

        target = get_target(target)
    with active():  # layers equal up to their names are worked out once (partition_memo.py)
        return _partition(graph, target, run, qgraph, chips, max_cores, allocator, strict)


def _partition(graph, target, run, qgraph, chips, max_cores, allocator, strict) -> Placement:
    if allocator not in ALLOCATORS:
        raise SpikeDeployError(f"unknown allocator '{allocator}'; available: {', '.join(ALLOCATORS)}")
    from spikedeploy.targets.capabilities import capability_breaches

    violations: list[str] = capability_breaches(graph, target)
    if violations and strict:
        raise UnsupportedError(violations[0])
    model = build_model(graph, target, qgraph)
    lim = _limits(target)
    idx = index_bits(target)
    sharing = bool(getattr(target.core, "conv_weight_sharing", True))

    totals, lb_by, lower = lower_bound(model, lim, idx, sharing)
    avail_chips = int(chips) if chips is not None else int(target.max_chips)
    cap = avail_chips * int(target.cores_per_chip)
    if max_cores is not None:
        cap = min(cap, int(max_cores))
    if lower > cap:
        r = max(lb_by, key=lb_by.get)
        msg = (f"{target.name}: the network needs at least {lower} cores ({r}: {totals[r]} in total, "
               f"{lim[r]} per core) but only {cap} are available ({avail_chips} chip(s) x {target.cores_per_chip} cores"
               f"{'' if max_cores is None else f', max_cores={max_cores}'}). Fix: allow more chips/cores, "
               "quantize to fewer weight bits, or shrink the network")
        if strict:
            raise TargetLimitError(msg)
        violations.append(msg)

    rates = spike_rates(model, run)
    splits = _split_all(model, lim, idx, sharing, target, strict, violations)
    core_groups = _pack(model, splits, lim, idx, sharing, rates)
    if len(core_groups) > SEARCH_GOOD_ENOUGH * lower and not violations:
        small = totals["neurons"] <= SEARCH_MAX_NEURONS
        splits, core_groups = _search(model, lim, idx, sharing, target, rates, splits, core_groups, lower,
                                      only_pairs=not small)
        if small and len(core_groups) > lower:
            splits, core_groups = _rebalance(model, splits, core_groups, lim, idx, sharing)

    return _assemble(model, target, lim, idx, sharing, splits, core_groups, violations, strict=strict,
                     avail_chips=avail_chips, max_cores=max_cores, allocator=allocator, bound=(totals, lb_by, lower))


def _assemble(model: Model, target, lim, idx, sharing, splits, core_groups, violations, *, strict: bool,
              avail_chips: int, max_cores: int | None, allocator: str, bound) -> Placement:
    """The Placement of `core_groups` (per core: [(layer, start, stop)]): every core's use, the chips, the
    links, and each breach of the target's limits (raised when strict, else recorded)."""
    totals, lb_by, lower = bound
    # resources per core, recomputed from final groups
    out_need = _out_need_all(model, splits)
    cores: list[CoreUse] = []
    core_syn: list[dict[str, int]] = []
    groups: dict[str, list[tuple[int, int, int]]] = {k: [] for k in model.layers}
    for ci, members in enumerate(core_groups):
        cu = CoreUse(core=ci)
        syn: dict[str, int] = {}
        for lname, a, b in members:
            layer = model.layers[lname]
            u = _usage(layer, a, b, out_need[lname], idx, sharing)
            cu.neurons += u["neurons"]
            cu.synapse_memory_bits += u["synapse_memory_bits"]
            cu.input_axons += u["input_axons"]
            cu.output_axons += u["output_axons"]
            for p in layer.incoming:
                s = p.synapses(a, b)
                cu.synapses += s
                syn[p.src] = syn.get(p.src, 0) + s
            cu.groups.append((lname, a, b))
            groups[lname].append((ci, a, b))
        cores.append(cu)
        core_syn.append(syn)
    for cu in cores:
        for r in RESOURCES:
            if getattr(cu, r) > lim[r]:
                msg = (f"core {cu.core} ({', '.join(g[0] for g in cu.groups)}): {r.replace('_', ' ')} "
                       f"{getattr(cu, r)} exceeds the {target.name} limit {lim[r]}")
                if strict and not violations:
                    raise TargetLimitError(msg + ". Fix: report this as a bug (the packer should not do this)")
                violations.append(msg)

    n_cores = len(cores)
    n_chips = max(1, math.ceil(n_cores / target.cores_per_chip)) if n_cores else 0
    if allocator == "roundrobin" and n_chips:
        for cu in cores:
            cu.chip = cu.core % n_chips
    else:
        for cu in cores:
            cu.chip = cu.core // target.cores_per_chip
    if n_chips > avail_chips or (max_cores is not None and n_cores > max_cores):
        msg = (f"{target.name}: placement uses {n_cores} cores on {n_chips} chip(s) "
               f"({target.cores_per_chip} cores per chip) but only {avail_chips} chip(s)"
               f"{'' if max_cores is None else f' / {max_cores} cores'} are available (lower bound {lower} cores). "
               "Fix: allow more chips (chips=...), quantize to fewer weight bits, or shrink the network")
        if strict:
            raise TargetLimitError(msg)
        violations.append(msg)

    core_of = {}
    for lname, gl in groups.items():
        core_of[lname] = (np.array([g[1] for g in gl]), np.array([g[2] for g in gl]), np.array([g[0] for g in gl]))
    links = _links(model, groups, core_of)

    return Placement(
        target=target.name, limits=lim, cores_per_chip=int(target.cores_per_chip), groups=groups, cores=cores,
        chips=n_chips, lower_bound=int(lower), lower_bound_by_resource=lb_by, totals=totals,
        layers={k: {"op": v.op, "neurons": v.n, "shape": list(v.shape), "order": v.order, "spiking": v.spiking,
                    "synapse_nodes": list(v.synapse_nodes), "accumulator": v.accumulator}
                for k, v in model.layers.items()},
        sources=dict(model.sources), host_nodes=list(model.host_nodes), allocator=allocator,
        violations=violations, links=links, core_synapses=core_syn, model=model,
    )


# ---- splitting ------------------------------------------------------------------------------------
def _usage(layer: Layer, a: int, b: int, out_cum: np.ndarray | None, idx: int, sharing: bool) -> dict[str, int]:
    memo = current()
    if memo is None or not memo.shareable(layer):
        return _usage_of(layer, a, b, out_cum, idx, sharing)
    key = (memo.layer_key(layer), a, b, None if out_cum is None else memo.keep(out_cum), idx, sharing)
    t = memo.table("usage")
    u = t.get(key)
    if u is None:
        u = t[key] = _usage_of(layer, a, b, out_cum, idx, sharing)
    return dict(u)


def _usage_rows(layer: Layer, groups, out_cum, idx: int, sharing: bool) -> np.ndarray:
    """The use of each group of `groups` as rows (RESOURCES order), shared by equal layers cut alike."""
    memo = current()
    key = None
    if memo is not None and memo.shareable(layer):
        key = (memo.layer_key(layer), memo.keep(out_cum), tuple(groups), idx, sharing)
        hit = memo.table("usage_rows").get(key)
        if hit is not None:
            return hit
    rows = np.array([[u[r] for r in RESOURCES] for u in (_usage(layer, a, b, out_cum, idx, sharing)
                                                           for a, b in groups)], dtype=np.int64)
    if key is not None:
        memo.table("usage_rows")[key] = rows
    return rows.reshape(len(groups), len(RESOURCES))


def _usage_of(layer: Layer, a: int, b: int, out_cum: np.ndarray | None, idx: int, sharing: bool) -> dict[str, int]:
    mem = 0
    ins = 0
    for p in layer.incoming:
        ns = p.n_sources(a, b)
        ins += ns
        mem += p.memory_bits(a, b, ns, idx, sharing)
    out = int(out_cum[b] - out_cum[a]) if out_cum is not None else 0
    return {"neurons": b - a, "synapse_memory_bits": int(mem), "input_axons": int(ins), "output_axons": out}


def _over(u, lim) -> str | None:
    for r in RESOURCES:
        if u[r] > lim[r]:
            return r
    return None


def _longest_fit(layer: Layer, a: int, lim, out_cum, idx, sharing, prev: int) -> int:
    """The largest b such that neurons [a, b) fit `lim` (a where not even one does); tries a + prev first
    because layers are usually uniform. Every resource grows with b, so bisection finds it."""
    def fits(b):
        return _over(_usage(layer, a, b, out_cum, idx, sharing), lim) is None

    hi = min(layer.n, a + lim["neurons"])
    if hi <= a or fits(hi):
        return max(a, hi)
    if not fits(a + 1):
        return a
    lo = a + 1
    guess = a + prev
    if lo < guess < hi:
        if fits(guess):
            lo = guess
            if guess + 1 < hi and not fits(guess + 1):
                hi = guess + 1
        else:
            hi = guess
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _split_layer(layer: Layer, out_cum, lim, idx, sharing, target, strict, violations,
                 first: tuple[dict, int] | None = None) -> list[tuple[int, int]]:
    """Consecutive longest ranges that fit `lim`; with `first=(lim_a, k)` the first k ranges fit lim_a."""
    n = layer.n
    groups = []
    a = 0
    base = lim
    prev = lim["neurons"]
    while a < n:
        lim = first[0] if first is not None and len(groups) < first[1] else base
        b = _longest_fit(layer, a, lim, out_cum, idx, sharing, prev)
        if b == a:
            u1 = _usage(layer, a, a + 1, out_cum, idx, sharing)
            r = _over(u1, lim)
            src = ", ".join(sorted({p.src for p in layer.incoming})) or "-"
            err = check_single(layer, r, u1[r], lim[r], target, f" (neuron {a}; sources: {src})")
            if strict:
                raise err
            violations.append(str(err))
            b = a + 1
        else:
            prev = b - a
        groups.append((a, b))
        a = b
    return groups


def _out_need(model: Model, lname: str, splits: dict[str, list[tuple[int, int]]]) -> np.ndarray:
    """Prefix sums over a layer's neurons of the output axons each needs (one per projection x dst group)."""
    memo = current()
    if memo is None:
        return _out_need_of(model, lname, splits)
    key = memo.out_key(model, lname, splits)
    t = memo.table("out_need")
    if key not in t:
        t[key] = _out_need_of(model, lname, splits)
        t[key].flags.writeable = False
    return t[key]


def _out_need_of(model: Model, lname: str, splits: dict[str, list[tuple[int, int]]]) -> np.ndarray:
    layer = model.layers[lname]
    need = np.zeros(layer.n, np.int64)
    for p in layer.outgoing:
        for a, b in splits.get(p.dst, [(0, p.n_dst)]):
            need += p.needed_mask(a, b)
    return np.concatenate([[0], np.cumsum(layer.to_order(need))])


def _out_need_all(model, splits):
    return {k: _out_need(model, k, splits) for k in model.layers}


def _split_all(model: Model, lim, idx, sharing, target, strict, violations, per_layer=None):
    """Split every layer; `per_layer` maps a layer to the limits its groups are cut to (default `lim`)."""
    per_layer = per_layer or {}

    memo = current()

    def split(lname, oc):
        # no sharing without a memo, when breaches are recorded per layer, or for a layer no other can equal
        if memo is None or not strict or not memo.shareable(model.layers[lname]):
            return split_of(lname, oc)
        pl = per_layer.get(lname, lim)
        lims = tuple((pl[0], pl[1]) if isinstance(pl, tuple) else (pl,))
        key = (memo.layer_key(model.layers[lname]), memo.keep(oc),
               tuple(tuple(sorted(x.items())) if isinstance(x, dict) else x for x in lims), idx, sharing)
        t = memo.table("split")
        if key not in t:
            t[key] = tuple(split_of(lname, oc))
        return list(t[key])

    def split_of(lname, oc):
        pl = per_layer.get(lname, lim)
        if isinstance(pl, tuple):  # (limits of the first k groups, k): the rest get `lim`
            return _split_layer(model.layers[lname], oc, lim, idx, sharing, target, strict, violations, first=pl)
        return _split_layer(model.layers[lname], oc, pl, idx, sharing, target, strict, violations)

    splits: dict[str, list[tuple[int, int]]] = {}
    for lname in reversed(model.order):
        splits[lname] = split(lname, _out_need(model, lname, splits))
    # recurrent layers saw a guess of their destinations' split; re-split until output axons fit
    for _ in range(4):
        changed = False
        for lname in model.order:
            layer = model.layers[lname]
            if not layer.outgoing:
                continue
            lim_l = per_layer.get(lname, lim)
            lim_l = lim if isinstance(lim_l, tuple) else lim_l
            oc = _out_need(model, lname, splits)
            if any(int(oc[b] - oc[a]) > lim_l["output_axons"] for a, b in splits[lname]):
                splits[lname] = split(lname, oc)
                changed = True
        if not changed:
            break
    return splits


def _binding(model, splits, lim, idx, sharing):
    """Per layer: (resource its groups fill most, use of the other axon resource relative to it)."""
    out_need = _out_need_all(model, splits)
    res = {}
    for lname, gl in splits.items():
        layer = model.layers[lname]
        tot = {r: 0 for r in RESOURCES}
        for a, b in gl:
            u = _usage(layer, a, b, out_need[lname], idx, sharing)
            for r in RESOURCES:
                tot[r] += u[r]
        frac = {r: tot[r] / lim[r] for r in RESOURCES}
        r = max(frac, key=frac.get)
        other = {"input_axons": "output_axons", "output_axons": "input_axons"}.get(r)
        res[lname] = (r, frac[other] / frac[r] if other and frac[r] else 1.0, frac[r], len(gl))
    return res


def _search(model, lim, idx, sharing, target, rates, splits, core_groups, lower, only_pairs=False):
    """Try derated split limits and keep the packing with fewest cores.

    First, complementary derating: layers whose groups fill their input axons but use few output axons
    (or the reverse) are cut smaller on that resource, so the packer can pair an input-bound group with an
    output-bound one on a core (a conv layer feeding a wider conv is output-bound, its destination is
    input-bound); then the same for strongly complementary layers packed side by side. Then every layer
    derated on single resources, then on pairs (with `only_pairs`, for graphs over SEARCH_MAX_NEURONS, only
    the side-by-side trials run: a few packings, each linear in the cores). The number of
    trials shrinks with the graph size so large graphs stay fast; it depends only on the graph, so results
    are deterministic."""
    import itertools

    best = (len(core_groups), splits, core_groups)
    bind = _binding(model, splits, lim, idx, sharing)
    n_of = {k: v.n for k, v in model.layers.items()}
    axon = ("input_axons", "output_axons")
    comp = [k for k, (r, other, _, _) in bind.items() if r in axon and other < COMPLEMENT_MAX]
    trials = [] if only_pairs else [(t, None) for t in _pair_trials(bind, comp, lim, n_of)]
    # strongly complementary layers only, each input-bound layer packed right after an output-bound one so
    # that its groups find that layer's cores inside the packing window (layers far apart in topological
    # order, e.g. a conv front end and a pooling layer behind several convs, never meet otherwise)
    strict = [k for k in comp if bind[k][1] < COMPLEMENT_STRICT]
    outs = [k for k in model.order if k in strict and bind[k][0] == "output_axons"]
    ins = [k for k in model.order if k in strict and bind[k][0] == "input_axons"]
    partner = dict(zip(outs, ins, strict=False))
    if partner:
        after = set(partner.values())
        order = [x for k in model.order if k not in after for x in ((k, partner[k]) if k in partner else (k,))]
        trials += [(t, order) for t in _pair_trials(bind, strict, lim, n_of, whole=True)]
    if only_pairs:
        return _best_trial(model, lim, idx, sharing, target, rates, trials, len(trials), best, lower,
                           stop_when_worse=True)
    singles = [{r: f} for r in RESOURCES for f in DERATE]
    # milder derating first, every resource pair at each level, so a small budget still sees every pair
    pairs = [{r1: f1, r2: f2} for f1, f2 in itertools.product(DERATE, DERATE)
             for r1, r2 in itertools.combinations(RESOURCES, 2)]
    for t in singles + pairs:
        lim_s = {k: max(1, int(lim[k] * t.get(k, 1.0))) for k in RESOURCES}
        trials.append(({k: lim_s for k in model.layers}, None))
    work = sum(layer.n + sum(p.total_synapses for p in layer.incoming) // 64 for layer in model.layers.values())
    budget = min(len(trials), max(8 + len(trials) - len(singles) - len(pairs), SEARCH_WORK // max(1, work)))
    return _best_trial(model, lim, idx, sharing, target, rates, trials, budget, best, lower)


def _best_trial(model, lim, idx, sharing, target, rates, trials, budget, best, lower, stop_when_worse=False):
    """The fewest-core packing among `best` and the first `budget` trials (per-layer limits, pack order).
    `stop_when_worse`: trials are margins in falling order; stop at the first that does worse than the one
    before it once one has improved on `best` (large graphs, where each trial is a packing of every core)."""
    memo = current()
    prev, improved = None, False
    for per_layer, order in trials[:budget]:
        if memo is not None:
            memo.clear()
        try:
            sp = _split_all(model, lim, idx, sharing, target, True, [], per_layer)
        except TargetLimitError:
            continue
        cg = _pack(model, sp, lim, idx, sharing, rates, order)
        if stop_when_worse and improved and prev is not None and len(cg) > prev:
            break
        prev = len(cg)
        if len(cg) < best[0]:
            best, improved = (len(cg), sp, cg), True
            if best[0] <= lower:
                break
    return best[1], best[2]


def _pair_trials(bind, comp, lim, n_of, whole=False) -> list[dict]:
    """Per-layer limits pairing output-bound with input-bound layers of `comp` (see _search)."""
    trials: list[dict] = []
    if {bind[k][0] for k in comp} == {"input_axons", "output_axons"}:
        # pairs: an output-bound group cut to x of the output axons (using rho_a x input axons) beside an
        # input-bound group cut to y (using rho_b y output axons) fill a core when rho_a x + y = 1 and
        # x + rho_b y = 1. Only as many input-bound groups as there are output-bound ones are cut small.
        outs = [k for k in comp if bind[k][0] == "output_axons"]
        ins = [k for k in comp if bind[k][0] == "input_axons"]
        rho_a = sum(bind[k][1] * bind[k][2] for k in outs) / sum(bind[k][2] for k in outs)
        rho_b = sum(bind[k][1] * bind[k][2] for k in ins) / sum(bind[k][2] for k in ins)
        x0 = (1 - rho_b) / (1 - rho_a * rho_b)
        y0 = (1 - rho_a) / (1 - rho_a * rho_b)
        units = sum(bind[k][2] for k in outs)  # output-axon cores' worth in the output-bound layers
        ins.sort(key=lambda k: -bind[k][2])
        for margin in PAIR_MARGIN:
            x, y = x0 * margin, y0 * margin
            k_pairs = math.ceil(units / x)
            per_layer = {k: {**lim, "output_axons": max(1, int(lim["output_axons"] * x))} for k in outs}
            left = k_pairs
            for k in ins:
                if left <= 0:
                    break
                lim_y = {**lim, "input_axons": max(1, int(lim["input_axons"] * y))}
                # a layer cut small throughout gets plain limits, so equal layers share their cut; `whole`
                # counts "throughout" by the estimate of its groups rather than its neurons
                per_layer[k] = lim_y if left >= (math.ceil(bind[k][2] / y) if whole else n_of[k]) else (lim_y, left)
                left -= math.ceil(bind[k][2] / y)
            trials.append(per_layer)
    return trials


# ---- rebalancing ----------------------------------------------------------------------------------
def _vec(u: dict[str, int]) -> np.ndarray:
    return np.array([u[r] for r in RESOURCES], dtype=np.int64)


class _Cores:
    """A packing being edited: per layer its cores in neuron order, per core the use of each group."""

    def __init__(self, model, splits, core_groups, lim, idx, sharing):
        self.model, self.idx, self.sharing = model, idx, sharing
        self.limv = _vec(lim)
        self.splits = dict(splits)
        self.out_need = _out_need_all(model, splits)
        self.use = np.zeros((len(core_groups), len(RESOURCES)), np.int64)
        self.group_use: dict[tuple[str, int], np.ndarray] = {}
        where: dict[str, list[tuple[int, int]]] = {}
        for ci, members in enumerate(core_groups):
            for lname, a, b in members:
                where.setdefault(lname, []).append((a, ci))
                self._set(lname, ci, a, b)
        self.cores_of = {k: [c for _, c in sorted(v)] for k, v in where.items()}

    def _set(self, lname, ci, a, b):
        old = self.group_use.pop((lname, ci), None)
        if old is not None:
            self.use[ci] -= old
        if b > a:
            u = _vec(_usage(self.model.layers[lname], a, b, self.out_need[lname], self.idx, self.sharing))
            self.group_use[(lname, ci)] = u
            self.use[ci] += u

    def _apply(self, lname, groups, cores):
        for ci, (a, b) in zip(cores, groups + [(0, 0)] * (len(cores) - len(groups)), strict=True):
            self._set(lname, ci, a, b)

    def refill(self, lname: str, depth: int = 1, force: bool = False) -> bool:
        """Re-cut `lname` so each of its cores, in order, takes the longest range that fits beside the
        other groups there; cores it no longer needs lose its group. Kept only if every core still fits
        once the source layers' output axons (which depend on this cut) are recounted."""
        layer, cores = self.model.layers[lname], self.cores_of[lname]
        old = self.splits[lname]
        groups, a = [], 0
        for ci in cores:
            if a >= layer.n:
                break
            b = _longest_fit(layer, a, self._room(ci, lname), self.out_need[lname], self.idx, self.sharing,
                             max(1, old[0][1] - old[0][0]))
            if b == a:
                return False
            groups.append((a, b))
            a = b
        if a < layer.n or (groups == old and not force):
            return False
        saved = self._state()
        self.splits[lname] = groups
        self._apply(lname, groups, cores)
        self.cores_of[lname] = cores[: len(groups)]
        self._recount_sources(lname, depth)
        return self._keep_if_fits(saved)

    def _room(self, ci: int, lname: str | None = None) -> dict[str, int]:
        """What core ci has left, counting `lname`'s group there as free."""
        room = self.limv - self.use[ci] + (self.group_use.get((lname, ci), 0) if lname else 0)
        return dict(zip(RESOURCES, (int(x) for x in room), strict=True))

    def _recount_sources(self, lname: str, depth: int) -> None:
        """Source layers' output axons after `lname` was re-cut; a source whose cores overflow is re-cut
        too (its own cut points may absorb the change), `depth` levels deep."""
        srcs = sorted({p.src for p in self.model.layers[lname].incoming if p.src in self.model.layers})
        for src in srcs:
            self.out_need[src] = _out_need(self.model, src, self.splits)
            self._apply(src, self.splits[src], self.cores_of[src])
        for src in srcs:
            if depth > 0 and src != lname and np.any(self.use[self.cores_of[src]] > self.limv[None, :]):
                self.refill(src, depth - 1, force=True)

    def _keep_if_fits(self, saved) -> bool:
        if np.any(self.use > self.limv[None, :]):
            self.splits, self.cores_of, self.out_need, self.group_use, self.use = saved
            return False
        return True

    def _state(self):
        return (dict(self.splits), dict(self.cores_of), dict(self.out_need), dict(self.group_use),
                self.use.copy())

    def _replace(self, lname: str, i: int, parts: list[tuple[int, int, int]]) -> None:
        """Group i of `lname` becomes the consecutive parts [(core, start, stop), ...]."""
        self._set(lname, self.cores_of[lname][i], 0, 0)
        sp, co = self.splits[lname], self.cores_of[lname]
        self.splits[lname] = sp[:i] + [(a, b) for _, a, b in parts] + sp[i + 1:]
        self.cores_of[lname] = co[:i] + [c for c, _, _ in parts] + co[i + 1:]
        for c, a, b in parts:
            self._set(lname, c, a, b)

    def _relocate(self, lname: str, victim: int) -> bool:
        """Move `lname`'s group off core `victim`: whole onto the core it fits best, else cut in two onto
        the pair of cores with most room for it."""
        layer = self.model.layers[lname]
        i = self.cores_of[lname].index(victim)
        a, b = self.splits[lname][i]
        u = self.group_use[(lname, victim)]
        others = [c for c in range(len(self.use)) if c != victim and self.use[c].any()
                  and c not in self.cores_of[lname]]
        whole = [c for c in others if np.all(self.use[c] + u <= self.limv)]
        if whole:  # ranges unchanged, so no axon count changes
            c = min(whole, key=lambda c: (float(np.min((self.limv - self.use[c] - u) / self.limv)), c))
            self._replace(lname, i, [(c, a, b)])
            return True
        # rank by the room left on the group's scarcest resource
        fill = lambda c: float(np.min((self.limv - self.use[c]) / np.maximum(u, 1)))  # noqa: E731
        best = sorted(others, key=lambda c: (-fill(c), c))[:RELOCATE_CANDIDATES]
        for cj in best:
            m = _longest_fit(layer, a, self._room(cj), self.out_need[lname], self.idx, self.sharing,
                             (b - a) // 2)
            if not a < m < b:
                continue
            rest = _vec(_usage(layer, m, b, self.out_need[lname], self.idx, self.sharing))
            for ck in best:
                if ck == cj or np.any(self.use[ck] + rest > self.limv):
                    continue
                saved = self._state()
                self._replace(lname, i, [(cj, a, m), (ck, m, b)])
                self._recount_sources(lname, 1)
                if self._keep_if_fits(saved):
                    return True
        return False

    def empty(self, victim: int) -> bool:
        """Move every group off core `victim` (largest first), or change nothing."""
        saved = self._state()
        members = sorted((lname for lname, c in self.group_use if c == victim),
                         key=lambda k: (-int(self.group_use[(k, victim)][0]), k))
        for lname in members:
            if not self._relocate(lname, victim):
                self.splits, self.cores_of, self.out_need, self.group_use, self.use = saved
                return False
        return True

    def eliminate(self, tries: int) -> bool:
        """Empty one of the `tries` least used cores."""
        load = (self.use / self.limv[None, :]).max(axis=1)
        live = [c for c in np.argsort(load, kind="stable") if self.use[c].any()]
        return any(self.empty(int(c)) for c in live[:tries])

    def result(self):
        """(splits, core groups) without the cores left empty."""
        members: dict[int, list[tuple[str, int, int]]] = {}
        for lname, cores in self.cores_of.items():
            for ci, (a, b) in zip(cores, self.splits[lname], strict=True):
                members.setdefault(ci, []).append((lname, a, b))
        return self.splits, [members[ci] for ci in sorted(members)]


def _rebalance(model, splits, core_groups, lim, idx, sharing, passes: int = REBALANCE_PASSES):
    """Move cut points so earlier cores of each layer fill up and its last ones empty, then try to empty
    the least used cores by moving (or cutting in two) their groups onto others; cores that lose every
    group are dropped. Every change is kept only if all cores still fit after the axon counts it
    affects are redone."""
    cores = _Cores(model, splits, core_groups, lim, idx, sharing)
    for _ in range(passes):
        changed = False
        for lname in model.order:
            if len(cores.cores_of.get(lname, ())) > 1:
                changed |= cores.refill(lname)
        changed |= cores.eliminate(ELIMINATE_TRIES)
        if not changed:
            break
    return cores.result()


# ---- packing --------------------------------------------------------------------------------------
def _pack(model: Model, splits, lim, idx, sharing, rates, order=None) -> list[list[tuple[str, int, int]]]:
    out_need = _out_need_all(model, splits)
    # layer-level affinity: expected messages per step between two layers (or neuron counts without a Run)
    aff: dict[str, dict[str, float]] = {k: {} for k in model.layers}
    for p in model.projections:
        if p.src in model.layers:
            w = rates.get(p.src, 1.0) * p.n_src if rates else float(p.n_src)
            aff[p.dst][p.src] = aff[p.dst].get(p.src, 0.0) + w
            aff[p.src][p.dst] = aff[p.src].get(p.dst, 0.0) + w
    cores: list[list[tuple[str, int, int]]] = []
    use = np.zeros((64, len(RESOURCES)), np.int64)  # rows: open cores (grown by doubling)
    present: list[set[str]] = []
    limv = np.array([lim[r] for r in RESOURCES], dtype=np.int64)
    for lname in order or model.order:
        layer = model.layers[lname]
        a_l = aff[lname]
        uvs = _usage_rows(layer, splits[lname], out_need[lname], idx, sharing)
        for (a, b), uv in zip(splits[lname], uvs, strict=True):
            best, best_score = -1, -1.0
            lo = max(0, len(cores) - WINDOW)
            # the window's cores with room, in core order (one array test instead of one per core)
            for ci in (lo + ((use[lo : len(cores)] + uv <= limv).all(axis=1)).nonzero()[0]).tolist():
                pres = present[ci]
                if lname in pres:
                    continue
                score = sum(a_l[m] for m in pres if m in a_l) if a_l else 0.0
                if score > best_score:
                    best, best_score = ci, score
            if best < 0:
                if len(cores) == use.shape[0]:
                    use = np.concatenate([use, np.zeros_like(use)])
                cores.append([])
                present.append(set())
                best = len(cores) - 1
            cores[best].append((lname, a, b))
            use[best] += uv
            present[best].add(lname)
    return cores


# ---- links ----------------------------------------------------------------------------------------
def _links(model: Model, groups, core_of) -> list[tuple[str, int, int, int]]:
    """(source population, source core or -1, destination core, source neurons needed) for every pair."""
    acc: dict[tuple[str, int, int], int] = {}
    memo = current()
    for p in model.projections:
        dst = groups[p.dst]
        on_chip = p.src in model.layers
        src = groups[p.src] if on_chip else [(-1, 0, p.n_src)]
        rel = None
        if memo is not None:  # (source group, destination group, sources) depends on structure only
            lk = (proj_key(p), memo.layer_key(model.layers[p.src])[3] if on_chip else None,
                  tuple((a, b) for _, a, b in src), tuple((a, b) for _, a, b in dst))
            t = memo.table("links")
            rel = t.get(lk)
        if rel is None:
            if on_chip:
                rel = _group_links(model, p, core_of[p.src], dst)
            else:  # off-chip: one source "group"
                rel = [(0, j, p.n_sources(a, b)) for j, (_, a, b) in enumerate(dst)]
            if memo is not None:
                t[lk] = rel
        for i, j, c in rel:
            key = (p.src, src[i][0], dst[j][0])
            acc[key] = acc.get(key, 0) + c
    return [(k[0], k[1], k[2], v) for k, v in acc.items()]


def _group_links(model: Model, p, src_ranges, dst) -> list[tuple[int, int, int]]:
    """(index in groups[p.src], index in groups[p.dst], source neurons) for every linked pair of groups."""
    starts, stops, _ = src_ranges
    out = []
    for j, (_, a, b) in enumerate(dst):
        m = model.layers[p.src].to_order(p.needed_mask(a, b))
        cum = np.concatenate([[0], np.cumsum(m, dtype=np.int64)])
        cnt = cum[stops] - cum[starts]
        out.extend((int(i), j, int(cnt[i])) for i in np.flatnonzero(cnt > 0))
    return out
