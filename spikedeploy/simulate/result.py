"""Run: what a simulation backend produced.

Arrays are time-major. `outputs[name]` is `[T, B, ...]` for each Output node; `counts[node]` is the
number of spikes per time step per sample, `[T, B]`, for every spiking node (and Input nodes);
`traces[node]` optionally holds full state (`v`, `u`, `s`) as `[T, B, ...]`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Run:
    backend: str
    steps: int
    batch: int
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def spikes_per_node(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.counts.items()}


RUN_FORMAT = "spikedeploy-run"
RUN_VERSION = 1


def save_run(run: Run, path) -> None:
    """RUN.npz: `out/<output>` [T,B,...], `counts/<node>` [T,B], `trace/<node>/<var>`, and a JSON header."""
    import json

    from spikedeploy.cli.jsonout import jsonable
    from spikedeploy.io.atomic import atomic_write

    arrays = {f"out/{k}": v for k, v in run.outputs.items()}
    arrays.update({f"counts/{k}": v for k, v in run.counts.items()})
    for node, tr in run.traces.items():
        arrays.update({f"trace/{node}/{var}": v for var, v in tr.items()})
    header = {"format": RUN_FORMAT, "version": RUN_VERSION, "backend": run.backend, "steps": run.steps,
              "batch": run.batch, "meta": jsonable(run.meta)}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    import zipfile

    # deflate level 1: a tenth of level 6's time (numpy.savez_compressed's) for files a third larger
    with atomic_write(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for key, a in arrays.items():
            with z.open(f"{key}.npy", "w", force_zip64=True) as m:
                np.lib.format.write_array(m, np.asanyarray(a), allow_pickle=False)


def load_run(path) -> Run:
    import json
    import zipfile

    from spikedeploy.checks.companion import validate_run
    from spikedeploy.checks.npz import check_npz_members
    from spikedeploy.errors import FileFormatError
    from spikedeploy.io.paths import check_input_file

    if not os.path.exists(path):
        raise FileFormatError(f"{path}: run file not found; create one with `spikedeploy simulate ... -o RUN.npz`")
    check_input_file(path, "run file")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        check_npz_members(z, path)
        header = json.loads(bytes(z["header"]).decode())
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        if header.get("format") != RUN_FORMAT:
            raise FileFormatError(f"{path}: not a spikedeploy run file (format {header.get('format')!r})")
        run = Run(header["backend"], _int(header["steps"]), _int(header["batch"]), meta=header.get("meta", {}))
        for key in z.files:
            parts = key.split("/")
            if parts[0] == "out":
                run.outputs["/".join(parts[1:])] = z[key]
            elif parts[0] == "counts":
                run.counts["/".join(parts[1:])] = z[key]
            elif parts[0] == "trace":
                run.traces.setdefault("/".join(parts[1:-1]), {})[parts[-1]] = z[key]
    except FileFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise FileFormatError(f"{path}: not a spikedeploy run file ({type(e).__name__}: {str(e)[:200]}); "
                              "create one with `spikedeploy simulate`") from e
    validate_run(run, path)
    return run


def _int(v) -> int:
    """An integer header field (JSON gives int, or float for a hand-edited file)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")) \
            or int(v) != v:
        raise ValueError(f"header value {v!r} is not an integer")
    return int(v)


def model_layout(graph, run: Run) -> Run:
    """Outputs the chip holds in a permuted token layout, put back in the model's order (an Output node's
    meta["model_index"][i] is the chip position of the model's element i), so every backend returns what
    the model returns."""
    for name in list(run.outputs):
        node = graph.nodes.get(name)
        idx = None if node is None else node.meta.get("model_index")
        if idx is None:
            continue
        idx = np.asarray(idx)
        y = np.asarray(run.outputs[name])
        run.outputs[name] = y.reshape(*y.shape[:2], -1)[..., idx.ravel()].reshape(*y.shape[:2], *idx.shape)
    return run

