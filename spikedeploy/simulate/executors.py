"""Where independent pieces of work (the shards of a run) are computed.

An executor maps a picklable function over picklable items and yields `(index, result)` as each piece
finishes, in any order; the caller records each result as it arrives, so an interrupted map loses only
the pieces in flight. `local` computes them one after another in this process (the emulator already uses
every core within a piece). Another executor (e.g. Ray, for several machines) registers itself in
EXECUTORS with the same one method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from spikedeploy.errors import SpikeDeployError


class Executor(Protocol):
    name: str

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """(position of the item in `items`, fn(item)) for every item, as each finishes."""
        ...


class LocalExecutor:
    name = "local"

    def __init__(self, address: str | None = None):
        if address:
            raise SpikeDeployError(f"--address {address}: a cluster address needs --executor ray; the local "
                                   "executor runs in this process")

    def map_unordered(self, fn, items):
        for i, item in enumerate(items):
            yield i, fn(item)


def _ray(address: str | None = None) -> Executor:
    from spikedeploy.simulate.ray_executor import RayExecutor  # imported only when asked for: Ray is large

    return RayExecutor(address=address)


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": _ray}


def get_executor(name: str = "local", address: str | None = None) -> Executor:
    """An executor by name; `address`: the cluster to join (ray)."""
    if name not in EXECUTORS:
        raise SpikeDeployError(f"unknown executor '{name}'; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](address=address)
