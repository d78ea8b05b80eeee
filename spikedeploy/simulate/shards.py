"""Resumable sharded simulation: a run cut into shards of samples, each written atomically as it finishes.

`simulate ... -o RUN.npz --shard-size N` keeps its shards in `RUN.shards/`: `manifest.json` records the
command's options, a fingerprint of the graph and of every input, and the shards done; `shard-00000.npz`
... are Run files of N samples each (the last one shorter). Killed at any moment (kill -9 included), the same
command with `--resume` validates what is on disk, computes only the shards that are missing and merges
them into RUN.npz, which is then the same as an uninterrupted run's (samples are independent). A run
directory that does not match the command (other options, other inputs), or a shard that the manifest
records but that is missing, truncated or from another run, is refused in one line naming it: results of
two different runs are never mixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikedeploy.errors import FileFormatError, InputError, SpikeDeployError
from spikedeploy.simulate.result import Run

MANIFEST = "manifest.json"
FORMAT = "spikedeploy-shards"
VERSION = 1


class ShardError(SpikeDeployError):
    """A run directory cannot be resumed: other options or inputs, or a missing, truncated or foreign shard."""


def shard_dir(out_path: str | os.PathLike) -> Path:
    """RUN.npz -> RUN.shards (beside it)."""
    p = Path(out_path)
    return p.with_name((p.stem if p.suffix == ".npz" else p.name) + ".shards")


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.npz"


def file_digest(path: str | os.PathLike) -> str:
    from spikedeploy.simulate.input_stream import _sampled_digest

    return _sampled_digest(Path(path)).hex()[:32]


@dataclass
class ShardJob:
    """What every shard of one run computes; picklable, so that an executor may send it to another process
    or machine (the input files must then be readable there under the same paths)."""

    model: Any  # Graph or QGraph, ready to simulate
    specs: dict[str, str]  # input name -> spec (input_stream.open_source)
    key: str  # the run's fingerprint, stamped into every shard
    directory: str
    backend: str = "emulator"
    target: str | None = None
    steps: int | None = None
    probes: tuple[str, ...] = ()

    def __call__(self, shard: tuple[int, int, int]) -> int:
        """Simulate shard (index, b0, b1) and write it; returns its number of samples."""
        from spikedeploy.simulate.input_stream import open_sources, simulate_chunks
        from spikedeploy.simulate.result import save_run

        index, b0, b1 = shard
        sources = open_sources(self.specs)
        try:
            run = simulate_chunks(self.model, sources, b0=b0, b1=b1, backend=self.backend, target=self.target,
                                  steps=self.steps, probes=self.probes)
        finally:
            for s in sources.values():
                s.close()
        run.meta["shard"] = {"index": index, "b0": b0, "b1": b1, "key": self.key}
        save_run(run, shard_path(Path(self.directory), index))
        return b1 - b0


@dataclass
class ShardPlan:
    directory: Path
    manifest: dict
    shards: list[tuple[int, int, int]]
    todo: list[tuple[int, int, int]] = field(default_factory=list)


def plan(out_path: str | os.PathLike, *, batch: int, shard_size: int, options: Mapping[str, Any],
         inputs: Mapping[str, str], resume: bool) -> ShardPlan:
    """The run directory of `out_path`, created, or validated for --resume; and the shards still to compute.

    options: everything that decides the results (backend, target, steps, graph digest, ...); inputs:
    {name: fingerprint}."""
    import hashlib

    if shard_size < 1:
        raise InputError(f"--shard-size {shard_size}: must be at least 1 sample")
    d = shard_dir(out_path)
    shards = [(i, b0, min(batch, b0 + shard_size)) for i, b0 in enumerate(range(0, batch, shard_size))]
    manifest = {"format": FORMAT, "version": VERSION, "options": {**options, "shard_size": shard_size, "batch": batch},
                "inputs": dict(inputs)}
    manifest["key"] = hashlib.sha256(json.dumps([manifest["options"], manifest["inputs"]], sort_keys=True,
                                                default=str).encode()).hexdigest()[:16]
    manifest["done"] = []
    if d.exists() and not resume:
        raise ShardError(f"{d}: a run directory is already there; add --resume to finish that run, or delete "
                         f"{d} to start over")
    if not d.exists():
        d.mkdir()
        write_manifest(d, manifest)
        return ShardPlan(d, manifest, shards, list(shards))
    old = read_manifest(d)
    if old.get("key") != manifest["key"]:
        raise ShardError(f"{d}: the run on disk was made with other options or inputs ({_differences(old, manifest)}); "
                         f"rerun the same command, or delete {d} to start over")
    manifest["done"] = sorted(int(i) for i in old.get("done", []))
    todo = []
    for shard in shards:
        p = shard_path(d, shard[0])
        if p.exists():
            check_shard(p, shard, manifest["key"])
        elif shard[0] in manifest["done"]:
            raise ShardError(f"{p}: shard {shard[0]} is missing, though {d / MANIFEST} records it done; "
                             f"delete {d} to start over")
        else:
            todo.append(shard)
    return ShardPlan(d, manifest, shards, todo)


def check_shard(path: Path, shard: tuple[int, int, int], key: str) -> Run:
    """The shard file at `path`, refused in one line if unreadable (truncated) or not shard `shard` of run `key`."""
    from spikedeploy.simulate.result import load_run

    index, b0, b1 = shard
    try:
        run = load_run(path)
    except FileFormatError as e:
        raise ShardError(f"{path}: shard {index} is truncated or unreadable ({_short(e)}); delete "
                         f"{path.parent} to start over") from None
    info = run.meta.get("shard") if isinstance(run.meta, dict) else None
    want = {"index": index, "b0": b0, "b1": b1, "key": key}
    if not isinstance(info, dict) or {k: info.get(k) for k in want} != want or run.batch != b1 - b0:
        raise ShardError(f"{path}: shard {index} does not belong to this run (it records {info}; expected "
                         f"samples {b0}-{b1 - 1} of run {key}); delete {path.parent} to start over")
    return run


def read_manifest(d: Path) -> dict:
    p = d / MANIFEST
    try:
        m = json.loads(p.read_text())
    except FileNotFoundError:
        raise ShardError(f"{p}: missing, so {d} cannot be resumed; delete {d} to start over") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"{p}: unreadable ({_short(e)}); delete {d} to start over") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ShardError(f"{p}: not a spikedeploy shard manifest; delete {d} to start over")
    return m


def write_manifest(d: Path, manifest: dict) -> None:
    from spikedeploy.io.atomic import atomic_write

    with atomic_write(d / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, default=str)


def execute(job: ShardJob, p: ShardPlan, *, executor=None, progress: Callable[[int, int], None] | None = None) -> None:
    """Compute the shards still to do, recording each in the manifest as it lands."""
    from spikedeploy.simulate.executors import get_executor

    executor = executor or get_executor("local")
    total = sum(b1 - b0 for _, b0, b1 in p.shards)
    done = total - sum(b1 - b0 for _, b0, b1 in p.todo)
    if progress:
        progress(done, total)
    for pos, n in executor.map_unordered(job, p.todo):
        p.manifest["done"] = sorted({*p.manifest["done"], p.todo[pos][0]})
        write_manifest(p.directory, p.manifest)
        done += n
        if progress:
            progress(done, total)


def merge(p: ShardPlan, out_path: str | os.PathLike, notes: list[str] | None = None) -> Run:
    """The whole run, from its shards in order (each checked again), written to `out_path` a shard at a time;
    the Run returned maps that file. notes: put before the run's own in meta["notes"]."""
    from spikedeploy.simulate.input_stream import RunAssembler
    from spikedeploy.simulate.result import writing_run

    batch = sum(b1 - b0 for _, b0, b1 in p.shards)
    with writing_run(out_path, batch) as w:
        acc = RunAssembler(batch, into=w)
        for shard in p.shards:
            path = shard_path(p.directory, shard[0])
            if not path.exists():
                raise ShardError(f"{path}: shard {shard[0]} is missing; rerun the command with --resume")
            acc.add(shard[1], check_shard(path, shard, p.manifest["key"]))
        run = acc.run()
        run.meta["shards"] = {"directory": str(p.directory), "count": len(p.shards),
                              "size": p.manifest["options"]["shard_size"]}
        if notes is not None:
            run.meta["notes"] = [*notes, *run.meta.get("notes", [])]
        w.finish(run)
    return w.mapped()


def _differences(old: dict, new: dict) -> str:
    diffs = []
    for part in ("options", "inputs"):
        a, b = old.get(part) or {}, new.get(part) or {}
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                diffs.append(f"{k}: {_show(a.get(k))} on disk, {_show(b.get(k))} now")
    return "; ".join(diffs[:4]) or "another format version"


def _show(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= 40 else s[:37] + "..."


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:160]


def simulate_specs(model, graph_file: str, specs: Mapping[str, str], *, backend: str = "emulator",
                   target: str | None = None, steps: int | None = None, batch: int | None = None,
                   out_path: str | None = None, shard_size: int | None = None, resume: bool = False,
                   executor: str = "local", address: str | None = None, options: Mapping[str, Any] | None = None,
                   progress: Callable[[int, int], None] | None = None, notes: list[str] | None = None) -> Run:
    """The command line's run on input files: streamed a chunk at a time, and with shard_size, in resumable
    shards beside `out_path`, computed by `executor` ("ray": Ray tasks on the cluster at `address`, or a local
    one). The run goes to `out_path` as it is computed (the Run returned then maps that file). batch: the
    first samples only. notes: put before the run's own in meta["notes"]."""
    from spikedeploy.simulate.dispatch import as_fixed_point
    from spikedeploy.simulate.input_stream import batch_of, open_sources, simulate_chunks

    sources = open_sources(specs)
    try:
        n = batch_of(sources)
        if batch is not None:
            n = min(n, batch)
        if shard_size is None:
            return simulate_chunks(model, sources, b1=n, backend=backend, target=target, steps=steps,
                                   progress=progress, out=out_path or None, notes=notes)
        if not out_path:
            raise InputError("a sharded run needs an output path (-o RUN.npz): its shards go beside it")
        fingerprints = {name: s.fingerprint() for name, s in sources.items()}
    finally:
        for s in sources.values():
            s.close()
    from spikedeploy.simulate.executors import get_executor

    ex = get_executor(executor, address)  # refused before any write
    opts = {"graph": file_digest(graph_file), "backend": backend, "target": target, "steps": steps,
            **(options or {})}
    p = plan(out_path, batch=n, shard_size=shard_size, options=opts, inputs=fingerprints, resume=resume)
    fixed, note = as_fixed_point(model, target, backend)
    job = ShardJob(fixed, dict(specs), p.manifest["key"], str(p.directory), backend, target, steps)
    execute(job, p, executor=ex, progress=progress)
    if note:
        notes = [*(notes or []), note]
    return merge(p, out_path, notes)
