"""Structural memoisation for the partitioner: layers that are the same up to their names cost once.

A system the size of Hala Point holds thousands of layers, most of them copies of a few (columns of one
network, tiles of one sensor). The partitioner's per-layer work (which output axons every neuron needs,
the cut into core-sized groups, each group's use, the links between groups) depends only on a layer's
structure, its projections' geometry and the cuts of the layers it feeds; names never enter it. So each
result is stored under a *structural key* and a layer identical to one seen before reuses it (and shares
its arrays: memory grows with the number of distinct layers, not the number of layers).

Keys are conservative: a projection whose connectivity lives in a weight array (a Dense or composite
projection with real weights) is keyed by its own identity, so it is never shared with another layer. A
dense weight given as one broadcast constant (zero strides, see `is_constant`) is a full matrix of
known shape and is keyed by that shape. The memo lives for one partition() call (`active()`), so an
identity in a key always refers to an object it keeps alive.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

_ACTIVE: list[Memo] = []


def is_constant(w) -> bool:
    """A nonzero constant array that takes no memory per element (np.broadcast_to of a scalar)."""
    return isinstance(w, np.ndarray) and w.size > 0 and all(s == 0 for s in w.strides) and bool(w.flat[0] != 0)


def _perm_key(layer) -> tuple:
    return (layer.n, tuple(layer.shape), layer.tile, layer.perm is None)


def proj_key(p) -> tuple:
    """What a projection's range queries depend on (see module docstring)."""
    kind = p.kind
    if kind == "conv":
        return ("conv", p.cin, p.hin, p.win, p.cout, p.hout, p.wout, p.k, p.s, p.p, p.d, p.groups, p.hwc,
                None if p.pos_order is None else id(_shared(p.pos_order)), p.weight_bits, p.n_src, p.n_dst)
    if kind == "one_to_one":
        return ("one_to_one", p.n_src, p.n_dst, p.weight_bits,
                None if p.dst_perm is None else id(_shared(p.dst_perm)))
    if kind == "full":
        return ("full", p.n_src, p.n_dst, p.weight_bits)
    return ("own", id(p))


def _shared(arr):
    """Arrays built by the cached constructors below are the same object for equal arguments, so their
    identity is a valid key; anything else is kept alive by the memo so its identity stays unique."""
    m = current()
    if m is not None:
        m.alive[id(arr)] = arr
    return arr


class Memo:
    def __init__(self):
        self.alive: dict[int, object] = {}
        self.layer_keys: dict[int, tuple] = {}
        self.shared_ok: dict[int, bool] = {}
        self.tables: dict[str, dict] = {}

    def layer_key(self, layer) -> tuple:
        k = self.layer_keys.get(id(layer))
        if k is None:
            k = (layer.op, layer.spiking, layer.accumulator, _perm_key(layer),
                 tuple(proj_key(p) for p in layer.incoming))
            self.alive[id(layer)] = layer
            self.layer_keys[id(layer)] = k
        return k

    def shareable(self, layer) -> bool:
        """Whether another layer can have this layer's key (no projection keyed by its own identity);
        results of the others are not stored, since only that layer could reuse them."""
        ok = self.shared_ok.get(id(layer))
        if ok is None:
            ok = self.shared_ok[id(layer)] = all(k[0] != "own" for k in self.layer_key(layer)[4])
        return ok

    def out_key(self, model, lname: str, splits) -> tuple:
        """Key of a layer's output-axon need: its order and, per outgoing projection, the projection and
        the cut of the layer it feeds."""
        layer = model.layers[lname]
        return (_perm_key(layer), tuple((proj_key(p), tuple(splits.get(p.dst, ((0, p.n_dst),))))
                                        for p in layer.outgoing))

    def clear(self) -> None:
        """Forget every result (layer keys stay): between search trials, whose cuts are not reused."""
        self.tables.clear()
        self.alive = {k: v for k, v in self.alive.items() if k in self.layer_keys}

    def get_or(self, name: str, key, fn):
        """fn() stored under `key` in table `name` (computed once)."""
        t = self.tables.setdefault(name, {})
        if key not in t:
            t[key] = fn()
        return t[key]

    def table(self, name: str) -> dict:
        return self.tables.setdefault(name, {})

    def keep(self, arr):
        self.alive[id(arr)] = arr
        return id(arr)


def per_projection(name: str, p, fn, *extra):
    """fn() for projection p, shared by projections of equal structure while a memo is active."""
    m = current()
    k = proj_key(p)
    if m is None or k[0] == "own":
        return fn()
    return m.get_or(name, (k, *extra), fn)


def current() -> Memo | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def active():
    """A memo for the duration of one partition() (nested calls share the outer one)."""
    if _ACTIVE:
        yield _ACTIVE[-1]
        return
    _ACTIVE.append(Memo())
    try:
        yield _ACTIVE[-1]
    finally:
        _ACTIVE.pop()


@functools.lru_cache(maxsize=64)  # bounded: conv tables of a large plane hold a few arrays of its size
def cached(fn, *args):
    """fn(*args) once per distinct hashable arguments; the result is shared (treat it as read-only)."""
    out = fn(*args)
    if isinstance(out, np.ndarray):
        out.flags.writeable = False
    return out
