"""Ray as an executor: the pieces of a sharded run or of a sweep as Ray tasks, on one machine or many.

`get_executor("ray", address=None)` joins the Ray cluster at `address` ("auto", "ray://head:10001", or
"HOST:PORT"), or starts a local one when no address is given. Each piece is one task; a task whose
worker dies (killed, out of memory, a lost node) is run again by Ray, up to `max_retries` times, and as
every piece is a pure function of its inputs the result is the same. Pieces write their own results
(shards are written atomically where the driver will read them), so on several machines the run directory
and the input files must be on a filesystem every node mounts under the same path.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from spikedeploy.errors import SpikeDeployError


def _call(fn, item):
    return fn(item)


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """Refuse a HOST:PORT (or ray://HOST:PORT) nobody listens on: Ray itself would retry it without end."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SpikeDeployError(f"executor 'ray': address '{address}' is not HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise SpikeDeployError(f"executor 'ray': cannot start or join a Ray cluster at '{address}' (nothing "
                               f"answers there: {e.strerror or e}); check --address, or run `ray start --head` "
                               "on the head node") from e


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3, num_cpus: int | None = None):
        try:
            import ray
        except ImportError as e:
            raise SpikeDeployError("executor 'ray' needs the ray package (pip install 'ray[default]'); "
                                   "or use --executor local") from e
        self.ray = ray
        self.max_retries = int(max_retries)
        if not ray.is_initialized():
            _probe(address)
            try:
                ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"at '{address}'" if address else "locally"
                raise SpikeDeployError(f"executor 'ray': cannot start or join a Ray cluster {where} ({e}); "
                                       "check --address, or run `ray start --head` on the head node") from e

    def map_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        task = ray.remote(max_retries=self.max_retries)(_call)
        fn_ref = ray.put(fn)
        pending = {task.remote(fn_ref, item): i for i, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the piece itself raised: re-raise its error
                        raise e.as_instanceof_cause() from None
                    except ray.exceptions.RayError as e:  # retries exhausted: the piece could not be computed
                        raise SpikeDeployError(f"executor 'ray': piece {i} failed after {self.max_retries} "
                                               f"retries ({type(e).__name__}); rerun with --resume") from e
                    yield i, result
        finally:
            for ref in pending:  # interrupted: cancel what has not finished; done pieces are on disk
                ray.cancel(ref, force=True)
