"""Fuzz the command line with mutated files of every format spikedeploy reads, and classify each outcome.

    python benchmarks/fuzz_cli.py --cases 2000 --seed 1            # the short run (tests/test_fuzz.py)
    python benchmarks/fuzz_cli.py --cases 100000 --seed 7 --table  # the long run (make fuzz)

Seeds: the NIR and netx files in ../shared/fixtures (written by other tools), and a quantized graph, a
run file, a placement file, a target file and an input array made from them at start. Each case mutates
one file (structure-aware: replace one dataset, header field or JSON value with NaN, inf, a complex or
empty array, a string, a negative or absurd size, an 8-D array, a deleted entry; or byte-level:
truncation, flipped bytes) or the command line (steps, batch, density, paths), runs one command
in-process (like `spikedeploy ...`, through the same error handling as `main`), and sorts the outcome:

    refused     exit 1 or 2 with a one-line error                 (right for invalid input)
    success     exit 0                                            (right for valid input)
    internal    exit 3 ("this is a bug"), any other exception, or an error of more than one line
    garbage     exit 0 on a mutation that is invalid by construction (NaN weights, negative counts, ...)
    hang        no result within --case-timeout seconds
    crash       the process died (a signal such as SIGSEGV inside a C library); the cases run in worker
                processes, and a new worker goes on with the next case

A mutation is labelled invalid only where the file then breaks a documented rule; mutations whose
effect may be legitimate (a scaled weight, a flipped byte in padding) are labelled "maybe" and count as
right either way. The process caps its address space (--memory-gb) so that a size that slips through
shows up as an internal error (MemoryError), not as the OOM killer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
NIR_SEEDS = ["two_lif_neurons.nir", "lif_norse.nir", "braille_noDelay_bias_zero.nir", "cnn_sinabs.nir",
             "braille_noDelay_bias_zero_subgraph.nir", "lif_rockpool.nir", "braille_noDelay_noBias_subtract.nir"]
NETX_SEED = FIXTURES / "netx" / "nir_docs_network.net"


class Hang(BaseException):
    pass


# ---- running one command ---------------------------------------------------------------------------------
def run_cli(args: list[str], timeout: float) -> tuple[str, int, str]:
    """(outcome, exit code, last stderr line) of `spikedeploy *args`, in-process."""
    import click

    from spikedeploy.cli.main import cli
    from spikedeploy.errors import SpikeDeployError

    out, err = io.StringIO(), io.StringIO()
    code = 0
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                cli.main(args=args, standalone_mode=False, prog_name="spikedeploy")
            except click.exceptions.Abort:
                code = 130  # an EOFError or Ctrl-C reached click: never right for a file we wrote
                print("aborted", file=sys.stderr)
            except click.exceptions.ClickException as e:
                e.show()
                code = e.exit_code
            except SpikeDeployError as e:
                print(f"error: {e}", file=sys.stderr)
                code = 1
            except Hang:
                return "hang", -1, ""
            except (Exception, RecursionError) as e:  # noqa: BLE001 - this is what main() calls a bug
                print(f"internal error: {type(e).__name__}: {e}", file=sys.stderr)
                code = 3
    except Hang:
        return "hang", -1, ""
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip() and not ln.startswith(("warning:", "Usage:", "Try "))]
    last = lines[-1] if lines else ""
    if code == 0:
        return "success", 0, last
    if code in (1, 2) and len([ln for ln in lines if ln.startswith(("error:", "Error:"))]) == 1:
        return "refused", code, last
    return "internal", code, last


def _alarm(signum, frame):
    raise Hang()


# ---- seeds -------------------------------------------------------------------------------------------------
def make_seeds(d: Path) -> dict[str, Path]:
    seeds = {}
    for name in NIR_SEEDS:
        p = FIXTURES / "nir-paper" / name
        if p.exists():
            seeds[f"nir:{name}"] = p
    seeds["netx"] = NETX_SEED
    q = d / "seed.q.npz"
    for args in (["quantize", str(FIXTURES / "nir-paper" / "two_lif_neurons.nir"), "--dt", "1e-3", "-o", str(q)],
                 ["simulate", str(q), "--steps", "20", "--batch", "3", "-o", str(d / "seed.run.npz")],
                 ["partition", str(q), "-o", str(d / "seed.placement.json")]):
        outcome, code, line = run_cli(args, 120)
        assert outcome == "success", (args, line)
    seeds["qgraph"] = q
    seeds["run"] = d / "seed.run.npz"
    seeds["placement"] = d / "seed.placement.json"
    (d / "seed.chip.toml").write_text('name = "fuzzchip"\ncores_per_chip = 16\nmax_chips = 4\n'
                                      "[numeric]\nweight_bits = 8\n[core]\nneurons = 1024\n"
                                      "[energy]\nsynop = 2.0e-11\n")
    seeds["target"] = d / "seed.chip.toml"
    np.save(d / "seed.input.npy", (np.random.default_rng(0).random((10, 2, 1)) < 0.3).astype(np.float32))
    seeds["input"] = d / "seed.input.npy"
    return seeds


# ---- mutations ---------------------------------------------------------------------------------------------
# HDF5 dataset names whose values must be positive sizes, or non-negative
_SIZE_KEYS = {"shape", "input_type", "output_type", "kernel_size", "stride", "inFeatures", "outFeatures"}
# (NIR's r and v_threshold may be negative or zero: the NIR round-trip tests write such files on purpose)
_NONNEG_KEYS = {"tau", "tau_mem", "tau_syn", "delay", "iDecay", "vDecay", "vThMant", "refDelay"}
# datasets whose contents a reader may legitimately ignore (provenance, unused metadata)
_META_KEYS = {"version", "metadata", "gradedSpike", "refDelay", "inFeatures", "outFeatures", "input_type", "output_type"}


def mutate_hdf5(src: Path, dst: Path, rng: random.Random) -> tuple[str, str]:
    """Copy `src` to `dst` with one mutation; returns (mutation, 'invalid' | 'maybe')."""
    import h5py

    data = src.read_bytes()
    r = rng.random()
    if r < 0.12:
        cut = rng.randrange(1, len(data))
        dst.write_bytes(data[:cut])
        return f"truncate at {cut}", "maybe"
    if r < 0.22:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        dst.write_bytes(bytes(b))
        return "flip bytes", "maybe"
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        sets = []
        f.visititems(lambda n, o: sets.append(n) if isinstance(o, h5py.Dataset) else None)
        name = rng.choice(sets)
        key = name.rsplit("/", 1)[-1]
        old = f[name][()]
        numeric = isinstance(old, np.ndarray | np.generic | int | float) and np.asarray(old).dtype.kind in "iuf"
        meta = key in _META_KEYS or "/metadata/" in name or "/simulation/" in name
        kinds = ["nan", "inf", "complex", "empty", "string", "negative", "huge", "eightd", "delete", "scale",
                 "float_for_int", "zero", "scalar"]
        kind = rng.choice(kinds)
        invalid = "maybe"
        if kind == "nan" and numeric:
            new, invalid = np.full(np.shape(old), np.nan), "invalid"
        elif kind == "inf" and numeric:
            new = np.full(np.shape(old), rng.choice([np.inf, -np.inf]))
            invalid = "maybe" if key in ("r", "tau") else "invalid"  # an IF's r = +inf is how Sinabs writes it
        elif kind == "complex" and numeric:
            new, invalid = np.asarray(old, dtype=np.complex128) + 1j, "invalid"
        elif kind == "empty" and numeric:
            new, invalid = np.zeros((0,), np.asarray(old).dtype), "invalid"
        elif kind == "string":
            new, invalid = "nope", ("invalid" if numeric else "maybe")
        elif kind == "negative" and numeric:
            new = -np.abs(np.asarray(old)) - 1
            invalid = "invalid" if key in _SIZE_KEYS | _NONNEG_KEYS else "maybe"
        elif kind == "huge" and numeric:
            new = np.full(np.shape(old) or (), rng.choice([1e9, 2**40, 1e300]))
            invalid = "invalid" if key in _SIZE_KEYS else "maybe"
        elif kind == "eightd" and numeric and np.size(old) > 0:
            new, invalid = np.asarray(old).reshape(*np.shape(old), *([1] * (8 - np.ndim(old)))), "invalid"
            if np.ndim(old) >= 8:
                new, invalid = old, "maybe"
        elif kind == "delete":
            del f[name]
            return f"delete {name}", "maybe"
        elif kind == "scale" and numeric:
            new = np.asarray(old) * rng.choice([2, 0.5, 3])
        elif kind == "float_for_int" and numeric and np.asarray(old).dtype.kind in "iu":
            new = np.asarray(old) + 0.5
            invalid = "invalid" if key in _SIZE_KEYS else "maybe"
        elif kind == "zero" and numeric:
            new = np.zeros_like(np.asarray(old))
            invalid = "invalid" if key in {"shape", "stride"} else "maybe"
        else:
            new = np.asarray(old).ravel()[:1] if numeric and np.size(old) else 7
        if meta and invalid == "invalid" and key not in ("shape",):
            invalid = "maybe"
        del f[name]
        f[name] = new
    return f"{kind} {name}", invalid


def _json_paths(obj, prefix=()):
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, (*prefix, i))


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    if value is _DELETE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_DELETE = object()
_JSON_VALUES = [None, -1, 0, 10**30, 1.5, "nope", [], {}, [1, 2], True, -1e308, "NaN"]


def mutate_json_value(obj, rng: random.Random) -> tuple[str, object]:
    paths = [p for p, _ in _json_paths(obj) if p]
    path = rng.choice(paths)
    value = rng.choice([*_JSON_VALUES, _DELETE])
    _set(obj, path, value)
    return "/".join(map(str, path)), value


def mutate_npz(src: Path, dst: Path, rng: random.Random, header_key: str) -> tuple[str, str]:
    """A quantized graph or run file: mutate its JSON header or one array."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    r = rng.random()
    if r < 0.1:
        data = src.read_bytes()
        dst.write_bytes(data[: rng.randrange(1, len(data))])
        return "truncate", "maybe"
    if r < 0.5:
        header = json.loads(bytes(arrays[header_key]).decode())
        path, value = mutate_json_value(header, rng)
        arrays[header_key] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        label = "maybe"
        if header_key == "header" and path in ("steps", "batch") and value is not _DELETE and not (
                isinstance(value, int) and value >= 1):
            label = "invalid"
        desc = f"header {path} = {'<deleted>' if value is _DELETE else repr(value)[:30]}"
    elif r < 0.55:
        arrays[header_key] = np.frombuffer(b"{not json", np.uint8)
        desc, label = "header not JSON", "invalid"
    else:
        keys = [k for k in arrays if k != header_key]
        k = rng.choice(keys)
        a = arrays[k]
        kind = rng.choice(["nan", "complex", "empty", "negative", "reshape", "string", "huge"])
        label = "invalid"
        if kind == "nan" and a.dtype.kind in "fiu":
            a = np.full(a.shape, np.nan)
        elif kind == "complex":
            a = a.astype(np.complex128) + 1j
        elif kind == "empty":
            a = a.ravel()[:0]
        elif kind == "negative" and a.size:
            a = -np.abs(a.astype(np.int64)) - 1
            label = "invalid" if k.startswith("counts/") else "maybe"
        elif kind == "reshape" and a.size > 1:
            a = a.ravel()[:-1]
        elif kind == "string":
            a = np.array(["nope"] * max(a.size, 1))
        elif kind == "huge":
            a = np.full(a.shape, 2**62, np.int64)
            label = "maybe"
        else:
            label = "maybe"
        if k.startswith(("trace/",)) or header_key == "__header__" and label == "invalid" and not _qgraph_used(k, arrays):
            label = "maybe"
        arrays[k] = a
        desc = f"{kind} {k}"
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return desc, label


def _qgraph_used(key: str, arrays) -> bool:
    """Whether array `key` of a quantized graph holds parameters (not metadata such as fidelity records)."""
    header = json.loads(bytes(arrays["__header__"]).decode())
    for path, v in _json_paths(header):
        if v == {"__array__": key} or v == {"__scalar__": key}:
            return path[0] in ("q", "scale") or (path[0] == "graph" and "params" in path)
    return False


def mutate_text(src: Path, dst: Path, rng: random.Random, kind: str) -> tuple[str, str]:
    text = src.read_text()
    if rng.random() < 0.15:
        dst.write_text(text[: rng.randrange(0, len(text))])
        return "truncate", "invalid" if kind == "placement" else "maybe"
    if kind == "placement":
        obj = json.loads(text)
        path, value = mutate_json_value(obj, rng)
        dst.write_text(json.dumps(obj))
        label = "maybe"
        if path.startswith("layers/") and path.count("/") == 1 and value is not _DELETE:
            label = "invalid"  # a layer entry replaced by a non-object
        if path in ("options/chips", "options/max_cores") and value is not None and value is not _DELETE and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            label = "invalid"
        return f"{path} = {value!r}"[:60], label
    import tomllib

    obj = tomllib.loads(text)
    path, value = mutate_json_value(obj, rng)
    if value is None:
        value = "nope"
        _set(obj, tuple(path.split("/")), value)
    out = dst.with_suffix(".json")
    out.write_text(json.dumps(obj))
    label = "maybe"
    keys = path.split("/")
    if value is not _DELETE and len(keys) == 2 and keys[0] in ("energy", "timing", "core", "numeric") and not (
            isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and value < 1e30):
        label = "invalid"
    if value is not _DELETE and keys[0] in ("cores_per_chip", "max_chips") and not (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 1e9):
        label = "invalid"
    return f"{path} = {value!r}"[:60], label


def mutate_input(dst: Path, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["nan", "complex", "string", "empty_file", "zero_T", "zero_B", "wrong_size", "npz", "ok",
                       "int", "bool", "1d", "object"])
    base = (np.random.default_rng(rng.randrange(2**31)).random((10, 2, 1)) < 0.3).astype(np.float32)
    label = "invalid"
    if kind == "nan":
        base[0, 0, 0] = np.nan
    elif kind == "complex":
        base = base.astype(np.complex64)
    elif kind == "string":
        base = np.array([["a"]])
    elif kind == "empty_file":
        dst.write_bytes(b"")
        return kind, label
    elif kind == "zero_T":
        base = base[:0]
    elif kind == "zero_B":
        base = base[:, :0]
    elif kind == "wrong_size":
        base = np.zeros((10, 2, 3), np.float32)
    elif kind == "npz":
        with open(dst, "wb") as f:
            np.savez(f, a=base)
        return kind, label
    elif kind == "int":
        base, label = base.astype(np.int16), "maybe"
    elif kind == "bool":
        base, label = base.astype(bool), "maybe"
    elif kind == "1d":
        base = base.ravel()
    elif kind == "object":
        dst.write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (3,), }" + b" " * 60 + b"\n")
        return kind, label
    else:
        label = "valid"
    with open(dst, "wb") as f:
        np.save(f, base)
    return kind, label


_CLI_VALUES = {
    "--steps": ["-1", "0", "99999999999999", "3", "abc", "1e3"],
    "--batch": ["0", "-2", "2", "99999999999", "x"],
    "--density": ["-0.5", "2", "nan", "0.5", "inf"],
    "--dt": ["0", "-1", "nan", "inf", "1e-3", "x"],
    "--chips": ["0", "-1", "1", "x"],
    "--max-cores": ["0", "-3", "1", "2"],
    "--weight-bits": ["0", "-1", "99", "8", "x"],
    "--netx-layers": ["0", "-1", "1", "99"],
}
_BAD_CLI = {("--steps", "-1"), ("--steps", "0"), ("--steps", "99999999999999"), ("--batch", "0"), ("--batch", "-2"),
            ("--batch", "99999999999"), ("--density", "-0.5"), ("--density", "2"), ("--density", "nan"),
            ("--density", "inf"), ("--dt", "0"), ("--dt", "-1"), ("--dt", "nan"), ("--dt", "inf"), ("--chips", "0"),
            ("--chips", "-1"), ("--max-cores", "0"), ("--max-cores", "-3"), ("--weight-bits", "0"),
            ("--weight-bits", "-1"), ("--weight-bits", "99"), ("--netx-layers", "0"), ("--netx-layers", "-1")}


# the commands that take a grid, a target list or shards: (option, value) -> whether the value is invalid
_GRID_VALUES = {
    "--targets": {"loihi2": False, "loihi2,loihi1": False, "nochip": True, ",": True, "loihi2,nochip": True},
    "--weight-bits": {"4": False, "8": False, "0": True, "40": True, "x": True},
    "--sweep-steps": {"3": False, "2,3": False, "0": True, "-1": True, "x": True},
    "--shard-size": {"1": False, "5": False, "0": True, "-1": True, "x": True},
}


def grid_case(seeds, d: Path, rng: random.Random) -> tuple[list[str], str, str]:
    """compare, sweep and sharded simulate, one option changed at a time."""
    q, nir, inp = str(seeds["qgraph"]), str(seeds["nir:two_lif_neurons.nir"]), str(seeds["input"])
    cmd = rng.choice(["compare", "sweep", "shards"])
    opt = {"compare": ["--targets"], "sweep": ["--targets", "--weight-bits", "--sweep-steps"],
           "shards": ["--shard-size"]}[cmd]
    opt = rng.choice(opt)
    val = rng.choice(list(_GRID_VALUES[opt]))
    bad = _GRID_VALUES[opt][val]
    if cmd == "compare":
        args = ["compare", q, "--steps", "3", "--targets", val]
    elif cmd == "sweep":
        grid = {"--targets": "loihi2", "--weight-bits": "8", "--sweep-steps": "3", opt: val}
        args = ["sweep", nir, "--input", inp, "--dt", "1e-3", "--targets", grid["--targets"], "--weight-bits",
                grid["--weight-bits"], "--steps", grid["--sweep-steps"], "-o", str(d / f"sweep{rng.randrange(4)}")]
    else:
        out = d / f"shards{rng.randrange(1 << 30)}.npz"  # a fresh run: an old run directory is refused
        args = ["simulate", q, "--input", inp, "-o", str(out), "--shard-size", val]
    return args, f"{cmd} {opt} {val}", "invalid" if bad else "valid"


def cli_case(seeds, d: Path, rng: random.Random) -> tuple[list[str], str, str]:
    q, nir = str(seeds["qgraph"]), str(seeds["nir:two_lif_neurons.nir"])
    cmd = rng.choice(["simulate", "partition", "quantize", "paths", "grid"])
    if cmd == "grid":
        return grid_case(seeds, d, rng)
    if cmd == "paths":
        inp = q
        out = rng.choice([q, "", "/dev/null", "/dev/full", str(d), "/nonexistent/dir/x.npz", str(d / "fifo"),
                          str(d / "ok_out.npz")])
        which = rng.choice([["simulate", inp, "--steps", "3", "--batch", "1", "-o", out],
                            ["partition", inp, "-o", out], ["report", inp, "--html", out],
                            ["quantize", nir, "--dt", "1e-3", "-o", out if out != q else nir]])
        return which, f"output {out!r}", "valid" if out.endswith("ok_out.npz") else "invalid"
    opts = {"simulate": ["--steps", "--batch", "--density", "--dt"], "partition": ["--chips", "--max-cores"],
            "quantize": ["--weight-bits", "--dt"]}[cmd]
    opt = rng.choice(opts)
    val = rng.choice(_CLI_VALUES[opt])
    base = {"simulate": ["simulate", q, "--steps", "3", "--batch", "2"], "partition": ["partition", q],
            "quantize": ["quantize", nir, "--dt", "1e-3", "-o", str(d / "cli.q.npz")]}[cmd]
    args = [*base, opt, val]
    label = "invalid" if (opt, val) in _BAD_CLI else "maybe"
    if opt == "--dt" and cmd == "simulate":
        label = "invalid" if (opt, val) in _BAD_CLI else "maybe"
    return args, f"{opt} {val}", label


def make_case(seeds, d: Path, rng: random.Random, i: int, backend: str = "emulator"):
    """(file kind, mutation, label, argv) of case i. With backend "lava", only the files a simulation reads
    (netx, quantized graph, input) are mutated, and each case is a `simulate --backend lava`."""
    if backend == "lava":
        kind = rng.choice(["netx", "qgraph", "input"])
        if kind == "netx":
            dst = d / f"case{i % 50}.net"
            desc, label = mutate_hdf5(seeds["netx"], dst, rng)
        elif kind == "qgraph":
            dst = d / f"case{i % 50}.q.npz"
            desc, label = mutate_npz(seeds["qgraph"], dst, rng, "__header__")
        else:
            dst = d / f"case{i % 50}.input.npy"
            desc, label = mutate_input(dst, rng)
        argv = ["simulate", str(seeds["qgraph"]), "--input", str(dst)] if kind == "input" else \
            ["simulate", str(dst), "--steps", "4", "--batch", "2"]
        return kind, desc, label, [*argv, "--backend", "lava"]
    kind = rng.choices(["nir", "netx", "qgraph", "run", "placement", "target", "input", "cli"],
                       weights=[22, 12, 18, 12, 8, 8, 8, 12])[0]
    q = str(seeds["qgraph"])
    if kind == "nir":
        name = rng.choice([k for k in seeds if k.startswith("nir:")])
        dst = d / f"case{i % 50}.nir"
        desc, label = mutate_hdf5(seeds[name], dst, rng)
        desc = f"{name[4:]}: {desc}"
        argv = rng.choice([["inspect", str(dst)], ["simulate", str(dst), "--backend", "float", "--dt", "1e-3",
                                                   "--steps", "4", "--batch", "2"],
                           ["quantize", str(dst), "--dt", "1e-3", "-o", str(d / "out.q.npz")]])
    elif kind == "netx":
        dst = d / f"case{i % 50}.net"
        desc, label = mutate_hdf5(seeds["netx"], dst, rng)
        argv = rng.choice([["inspect", str(dst)], ["simulate", str(dst), "--steps", "4", "--batch", "2"],
                           ["partition", str(dst)]])
    elif kind == "qgraph":
        dst = d / f"case{i % 50}.q.npz"
        desc, label = mutate_npz(seeds["qgraph"], dst, rng, "__header__")
        argv = rng.choice([["inspect", str(dst)], ["simulate", str(dst), "--steps", "4", "--batch", "2"],
                           ["partition", str(dst)], ["report", str(dst)]])
    elif kind == "run":
        dst = d / f"case{i % 50}.run.npz"
        desc, label = mutate_npz(seeds["run"], dst, rng, "header")
        argv = rng.choice([["partition", q, "--run", str(dst)], ["report", q, "--run", str(dst)]])
    elif kind == "placement":
        dst = d / f"case{i % 50}.placement.json"
        desc, label = mutate_text(seeds["placement"], dst, rng, "placement")
        argv = ["report", q, "--placement", str(dst)]
    elif kind == "target":
        dst = d / f"case{i % 50}.chip.toml"
        desc, label = mutate_text(seeds["target"], dst, rng, "target")
        tfile = str(dst.with_suffix(".json")) if dst.with_suffix(".json").exists() and "truncate" not in desc else str(dst)
        if "truncate" in desc:
            dst.write_text(seeds["target"].read_text()[: rng.randrange(0, 60)])
        argv = rng.choice([["partition", q, "--target", tfile], ["report", q, "--target", tfile]])
    elif kind == "input":
        dst = d / f"case{i % 50}.input.npy"
        desc, label = mutate_input(dst, rng)
        argv = ["simulate", q, "--input", str(dst)]
    else:
        argv, desc, label = cli_case(seeds, d, rng)
    return kind, desc, label, argv


def classify(outcome: str, label: str) -> str:
    if outcome == "success" and label == "invalid":
        return "garbage"
    return outcome


def worker(start: int, cases: int, seed: int, case_timeout: float, d: Path, log: Path, backend: str) -> None:
    """Run cases start.. in this process, appending one JSON line per case to `log` (a "start" line first,
    so that the parent can name the case that killed the process)."""
    os.environ["SPIKEDEPLOY_HDF5_SECONDS"] = "5"  # a damaged file that loops libhdf5 is refused before a hang
    signal.signal(signal.SIGALRM, _alarm)
    seeds = make_seeds(d)
    with open(log, "a") as out:
        for i in range(start, cases):
            rng = random.Random(f"{seed}:{i}")  # per case: a restarted worker replays nothing
            kind, desc, label, argv = make_case(seeds, d, rng, i, backend)
            out.write(json.dumps({"i": i, "start": True, "kind": kind, "mutation": desc, "label": label,
                                  "argv": argv}) + "\n")
            out.flush()
            outcome, code, line = run_cli(argv, case_timeout)
            out.write(json.dumps({"i": i, "result": classify(outcome, label), "message": line[:300]}) + "\n")
            out.flush()


def fuzz(cases: int, seed: int, case_timeout: float, time_limit: float | None, workdir: Path | None = None,
         memory_gb: float = 6.0, backend: str = "emulator", start: int = 0) -> dict:
    """Run cases start..cases-1 in worker processes; a worker killed by a signal (a crash inside a C library)
    makes its case a "crash" and a new worker goes on with the next case."""
    d = Path(workdir or tempfile.mkdtemp(prefix="sdfuzz."))
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "fifo").exists():
        os.mkfifo(d / "fifo")
    log = d / "cases.jsonl"
    log.write_text("")
    table: dict[str, Counter] = defaultdict(Counter)
    findings: list[dict] = []
    t0 = time.time()
    done, nxt = 0, start
    started: dict[int, dict] = {}
    pos = 0
    while nxt < cases:
        left = None if time_limit is None else time_limit - (time.time() - t0)
        if left is not None and left <= 0:
            break
        p = subprocess.Popen([sys.executable, __file__, "--worker", "--start", str(nxt), "--cases", str(cases),
                              "--seed", str(seed), "--case-timeout", str(case_timeout), "--workdir", str(d),
                              "--memory-gb", str(memory_gb), "--backend", backend],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _, err = p.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        with open(log) as f:
            f.seek(pos)
            lines = f.read().splitlines()
            pos = f.tell()
        last_started = None
        for ln in lines:
            rec = json.loads(ln)
            if rec.get("start"):
                started[rec["i"]] = rec
                last_started = rec["i"]
                continue
            info = started.pop(rec["i"])
            table[info["kind"]][rec["result"]] += 1
            done += 1
            last_started = None
            nxt = rec["i"] + 1
            if rec["result"] in ("internal", "garbage", "hang"):
                findings.append({"case": rec["i"], "kind": info["kind"], "mutation": info["mutation"],
                                 "label": info["label"], "result": rec["result"],
                                 "argv": [a.replace(str(d), "$D") for a in info["argv"]], "message": rec["message"]})
        if p.returncode == 0:
            break
        if last_started is None:
            if left is not None and time.time() - t0 >= time_limit:
                break
            raise RuntimeError(f"fuzz worker failed before its first case: {err[-2000:]}")
        info = started.pop(last_started)
        if left is not None and time.time() - t0 >= time_limit:
            break  # stopped by the time limit, not a crash
        table[info["kind"]]["crash"] += 1
        done += 1
        findings.append({"case": last_started, "kind": info["kind"], "mutation": info["mutation"],
                         "label": info["label"], "result": "crash",
                         "argv": [a.replace(str(d), "$D") for a in info["argv"]],
                         "message": f"process killed by signal {-p.returncode}" if p.returncode < 0 else err[-300:]})
        nxt = last_started + 1
    return {"cases": done, "first": start, "seed": seed, "backend": backend, "seconds": round(time.time() - t0, 1),
            "table": {k: dict(v) for k, v in sorted(table.items())}, "findings": findings}


def render_table(res: dict) -> str:
    cols = ["refused", "success", "internal", "crash", "garbage", "hang"]
    rows = ["| file kind | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    tot = Counter()
    for kind, c in res["table"].items():
        rows.append(f"| {kind} | " + " | ".join(f"{c.get(x, 0):,}" for x in cols) + " |")
        tot.update(c)
    rows.append("| **all** | " + " | ".join(f"**{tot.get(x, 0):,}**" for x in cols) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--case-timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--memory-gb", type=float, default=6.0, help="address-space cap of this process")
    ap.add_argument("--json", dest="json_path", default=None, help="write the result (with every finding) here")
    ap.add_argument("--table", action="store_true", help="print the result as a Markdown table")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--backend", choices=["emulator", "lava"], default="emulator",
                    help="lava: every case simulates a mutated netx file, quantized graph or input in Lava")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0,
                    help="first case (cases start..--cases-1: a long run split over processes gives the same cases)")
    a = ap.parse_args(argv)
    if a.worker:
        lim = int(a.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        worker(a.start, a.cases, a.seed, a.case_timeout, Path(a.workdir), Path(a.workdir) / "cases.jsonl", a.backend)
        return 0
    res = fuzz(a.cases, a.seed, a.case_timeout, a.time_limit, Path(a.workdir) if a.workdir else None, a.memory_gb,
               a.backend, a.start)
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(res, indent=1))
    if a.table:
        print(render_table(res))
    bad = Counter(f["result"] for f in res["findings"])
    print(f"{res['cases']} cases in {res['seconds']} s: {bad.get('internal', 0)} internal errors, "
          f"{bad.get('crash', 0)} crashes, "
          f"{bad.get('garbage', 0)} silent accepts of invalid input, {bad.get('hang', 0)} hangs")
    for f in res["findings"][:40]:
        print(f"  {f['result']:8s} {f['kind']:9s} {f['mutation'][:60]:60s} {f['message'][:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
