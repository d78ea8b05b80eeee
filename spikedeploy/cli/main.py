"""The `spikedeploy` command line: thin click wrappers over the Python API.

Every command takes --json. Errors print one line and exit 1 (2 for usage errors); a traceback is a bug
(set SPIKEDEPLOY_DEBUG=1 to see one anyway).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext
from functools import cache

import click
import numpy as np

from spikedeploy import __version__
from spikedeploy.cli.jsonout import dumps
from spikedeploy.errors import SpikeDeployError
from spikedeploy.targets.backends import backend_names


@cache
def _console():
    """rich's console on stdout, made at first use: importing rich takes 20-40 ms that a --json run never
    needs."""
    from rich.console import Console

    return Console()


@cache
def _err_console():
    from rich.console import Console

    return Console(stderr=True)


def _table(*args, **kw):
    from rich.table import Table

    return Table(*args, **kw)


def _emit_json(obj) -> None:
    click.echo(dumps(obj))


def _keep_netx_layers(ctx, _param, value):
    ctx.meta["netx_layers"] = value


netx_layers_option = click.option(
    "--netx-layers", type=click.IntRange(min=1), default=None, expose_value=False, callback=_keep_netx_layers,
    metavar="N", help="Read only the first N layers of a lava-dl netx file, as netx.hdf5.Network(num_layers=N) "
                      "does (e.g. 5 for ntidigits, whose average readout layer netx cannot run).")


@contextmanager
def _progress(what: str, quiet: bool):
    """A progress bar on stderr for long work; yields the callback that takes the fraction done (None when
    quiet, e.g. under --json, or when stderr is not a terminal)."""
    if quiet or not _err_console().is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=_err_console(), transient=True) as bar:
        task = bar.add_task(what, total=1.0)
        yield lambda f: bar.update(task, completed=f)


@contextmanager
def _sample_progress(what: str, quiet: bool):
    """A progress bar over samples, with rate and time left; yields the callback (samples done, samples)."""
    if quiet or not _err_console().is_terminal:
        yield None
        return
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeRemainingColumn(), console=_err_console(), transient=True) as bar:
        task = bar.add_task(what, total=None, rate="")
        start: list[float] = []

        def advance(done: int, total: int) -> None:
            if not start:  # samples done before this process (a resumed run) do not count towards the rate
                start[:] = [time.monotonic(), done]
            dt = time.monotonic() - start[0]
            rate = f"{(done - start[1]) / dt:,.0f} samples/s" if dt > 0 and done > start[1] else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield advance


def _netx_layers() -> int | None:
    """This command's --netx-layers."""
    return click.get_current_context().meta.get("netx_layers")


def _target_file(target: str | None) -> str | None:
    """The chip file a --target names (fixedpoint:chip.toml or a .toml/.json path), if any."""
    if not target:
        return None
    if target.startswith("fixedpoint:"):
        return target.split(":", 1)[1]
    return target if target.lower().endswith((".toml", ".json")) else None


def _load(path: str, float_graph: bool = False):
    """The graph file at `path` (load_graph, or load_any with float_graph), with this command's --netx-layers."""
    from spikedeploy.io.graph_files import load_any, load_graph

    return (load_any if float_graph else load_graph)(path, netx_layers=_netx_layers())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="spikedeploy")
def cli() -> None:
    """spikedeploy: take trained (multimodal) spiking neural networks to neuromorphic hardware.

    \b
    Pipeline:  export → quantize → partition → simulate → report
    Files:     NIR (.nir), lava-dl netx (.net), spikedeploy quantized graphs (.sdq)
    Start with `spikedeploy doctor`, then `spikedeploy inspect FILE`.
    """


# ---- inspect --------------------------------------------------------------------------------------
def executor_options(f):
    """--executor/--address: where independent pieces of work (shards, sweep points) run."""
    f = click.option("--address", default=None, metavar="ADDR",
                     help="--executor ray: the Ray cluster to join ('auto', HOST:PORT or ray://HOST:10001); "
                          "without it a local cluster starts. Its nodes must see the input and output files "
                          "under the same paths.")(f)
    return click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                        help="local: this process, one piece after another; ray: Ray tasks (a lost worker's "
                             "piece is rerun).")(f)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@netx_layers_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
def inspect(file: str, as_json: bool) -> None:
    """Show the nodes of a NIR, netx (.net) or quantized graph FILE: shapes, neurons, synapses,
    parameters, and whether each node runs on the chip or the host."""
    from spikedeploy.graph.inspect import inspect_file
    from spikedeploy.io.paths import check_command_paths

    check_command_paths(outputs={}, inputs=[file])
    info = inspect_file(file, netx_layers=_netx_layers())
    if as_json:
        _emit_json(info)
        return
    t = _table(title=f"{file}  ({info['format']})", show_lines=False)
    has_modality = any(r["modality"] for r in info["nodes"].values())
    cols = ("node", "op", "shape", "neurons", "synapses", "params", "fan-in", "where") + (("modality",) if has_modality else ())
    for col in cols:
        t.add_column(col, justify="right" if col in ("neurons", "synapses", "params", "fan-in") else "left",
                     no_wrap=col in ("neurons", "synapses", "params"), overflow="fold")
    for name, r in info["nodes"].items():
        where = "[yellow]host[/]" if r["placement"] == "host" else "chip"
        t.add_row(name, r["op"], "×".join(map(str, r["shape"])) or "-", f"{r['neurons']:,}", f"{r['synapses']:,}",
                  f"{r['parameters']:,}", str(r["fan_in"] or ""), where, *((r["modality"] or "",) if has_modality else ()))
    tot = info["total"]
    t.add_section()
    t.add_row("total", f"{tot['nodes']} nodes", "", f"{tot['neurons']:,}", f"{tot['synapses']:,}",
              f"{tot['parameters']:,}", "", f"{tot['host_nodes']} host", *(("",) if has_modality else ()))
    _console().print(t)
    _console().print(f"inputs: {', '.join(info['inputs'])}   outputs: {', '.join(info['outputs'])}   "
                  f"dt: {info['dt'] if info['dt'] is not None else 'not recorded'}   reset: {info['reset']}")
    for r in info.get("repairs", []):
        _console().print(f"[yellow]repaired:[/] {r}")


# ---- targets --------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def targets(as_json: bool) -> None:
    """List the hardware targets with their limits and the source of each figure."""
    from spikedeploy.targets.spec import get_target, target_names

    specs = {n: get_target(n).as_dict() for n in target_names()}
    if as_json:
        _emit_json(specs)
        return
    t = _table(title="targets")
    for col in ("target", "weight bits", "state bits", "neurons/core", "syn. memory/core", "axons in/out",
                "cores/chip", "simulators"):
        t.add_column(col)
    for n, s in specs.items():
        c = s["core"]
        t.add_row(n, str(s["numeric"]["weight_bits"]), str(s["numeric"]["state_bits"]), f"{c['neurons']:,}",
                  f"{c['synapse_memory_bits'] // 8 // 1024} KiB", f"{c['input_axons']}/{c['output_axons']}",
                  str(s["cores_per_chip"]), ", ".join(s["simulators"]) or "-")
    _console().print(t)
    _console().print("Constants marked as estimates are listed with their sources in `spikedeploy targets --json`.")


# ---- doctor ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def doctor(as_json: bool) -> None:
    """Check the installation: package versions, whether Lava runs a 3-layer network, whether netx imports."""
    from spikedeploy.cli.doctor import doctor as run_doctor

    with _console().status("running a 3-layer Lava network…") if not as_json else nullcontext():
        rep = run_doctor()
    if as_json:
        _emit_json(rep)
    else:
        t = _table(title="spikedeploy doctor")
        t.add_column("check")
        t.add_column("result")
        t.add_row("python", rep["python"])
        for k, v in rep["versions"].items():
            t.add_row(k, v or "[red]not installed[/]")
        for c in _backend_checks(rep):
            bad = "[red]no[/]" if c["required"] else "[yellow]no[/]"
            t.add_row(c["label"], f"[green]yes[/] ({c['summary']})" if c["ok"] else f"{bad}: {c['summary']}")
        _console().print(t)
    if any(c["required"] and not c["ok"] for c in _backend_checks(rep)):
        sys.exit(1)


def _backend_checks(rep: dict) -> list[dict]:
    return [v for v in rep.values() if isinstance(v, dict) and "label" in v and "ok" in v]


@contextmanager
def _about(path: str):
    """Prefix errors that do not already name the file with it, so every message says where."""
    try:
        yield
    except SpikeDeployError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e


# ---- simulate -------------------------------------------------------------------------------------
@cli.command()
@click.argument("graph_file", metavar="GRAPH", type=click.Path(dir_okay=False, path_type=str))
@click.option("--backend", type=click.Choice(backend_names()), default="emulator", show_default=True,
              help="float reference, bit-exact fixed-point emulator, or Lava Loihi2SimCfg (slow, one sample at a time).")
@click.option("--target", default=None,
              help="Target a float GRAPH is quantized for (default loihi2). A quantized GRAPH runs in the arithmetic "
                   "of its own target; a --target that contradicts it is refused.")
@click.option("--input", "input_specs", multiple=True, metavar="[NAME=]X.npy",
              help="Time-major input [T, B, ...]; NAME=X.npy per graph input. Omit for random spikes.")
@click.option("--steps", type=int, default=None, help="Time steps (default: the inputs' T, or 100 for random inputs).")
@click.option("--batch", type=int, default=None, help="Samples to run (default: all given, or 8 for random inputs).")
@click.option("--density", type=float, default=0.15, show_default=True, help="Spike probability of random inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random inputs.")
@click.option("--dt", type=float, default=None, help="Time step in seconds, for graphs that do not record one (NIR).")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False), default=None, help="Write RUN.npz.")
@click.option("--input-bias", "input_bias", type=click.Path(dir_okay=False), default=None, metavar="IMAGE.npy",
              help="netx/quantized files: an image as the bias mantissas of the input layer (lava-dl's bias-driven "
                   "input blocks; CHW or Lava's WHC). Without --input the Input node then gets zeros.")
@click.option("--reset-interval", type=int, default=None,
              help="netx/quantized files: reset u and v every N steps, layer l at step t with t % N == "
                   "(offset + l) % N, as lava-dl's recordings were made.")
@click.option("--reset-offset", type=int, default=1, show_default=True, help="The offset of --reset-interval.")
@click.option("--shard-size", type=int, default=None, metavar="N",
              help="Write the run as shards of N samples into RUN.shards/ beside -o, each as it finishes; "
                   "with --resume a killed run finishes only what is missing.")
@click.option("--resume", is_flag=True, help="Finish the sharded run in RUN.shards/ (the same command and inputs).")
@executor_options
@netx_layers_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def simulate(graph_file, backend, target, input_specs, steps, batch, density, seed, dt, out_path, input_bias,
             reset_interval, reset_offset, shard_size, resume, executor, address, as_json) -> None:
    """Simulate GRAPH (NIR, netx .net or quantized file) and write spikes per layer and outputs to RUN.npz."""
    from spikedeploy.checks.sim_size import check_run_size
    from spikedeploy.errors import InputError
    from spikedeploy.graph.ir import set_dt
    from spikedeploy.graph.qgraph import QGraph
    from spikedeploy.io.paths import check_command_paths, spec_path
    from spikedeploy.simulate.dispatch import load_named_arrays, named_specs, random_inputs
    from spikedeploy.simulate.dispatch import simulate as run_sim
    from spikedeploy.simulate.input_stream import spec_file
    from spikedeploy.simulate.result import save_run
    from spikedeploy.simulate.shards import file_digest

    if (executor != "local" or address) and shard_size is None:
        raise click.UsageError("--executor/--address distribute the shards of a run: add --shard-size N")
    check_command_paths(outputs={"-o/--output": out_path}, inputs=[graph_file, _target_file(target), input_bias,
                                                                   *(spec_file(spec_path(s)) for s in input_specs)])
    if (shard_size is not None or resume) and (not input_specs or not out_path):
        raise InputError("--shard-size/--resume need --input files and -o RUN.npz (the shards go beside it); "
                         "save random inputs with numpy.save first")
    model = _load(graph_file)
    graph = model.graph if isinstance(model, QGraph) else model
    if dt is not None:
        set_dt(graph, dt)
    notes = []
    if input_bias is not None or reset_interval is not None:
        from spikedeploy.simulate.netx_drive import drive_input_layer, set_resets

        if not isinstance(model, QGraph):
            raise InputError(f"{graph_file}: --input-bias and --reset-interval apply to netx (.net) and quantized "
                             "files; fix: quantize the graph first")
        if input_bias is not None:
            image = load_named_arrays((input_bias,), option="--input-bias")["input"]
            notes.append(drive_input_layer(model, image, input_bias))
        if reset_interval is not None:
            notes.append(set_resets(model, reset_interval, reset_offset))
    check_run_size(graph, steps=steps, batch=batch, density=density, random=not input_specs and input_bias is None)
    if input_bias is not None and not input_specs:  # the image is the drive: the Input node stays silent
        graph.infer_shapes()
        inputs = {n: np.zeros((100 if steps is None else steps, 1 if batch is None else batch,
                               *graph.nodes[n].out_shape), np.int8) for n in graph.inputs}
    elif input_specs:
        from spikedeploy.simulate.shards import simulate_specs

        options = {"dt": dt, "netx_layers": _netx_layers(), "input_bias": input_bias and file_digest(input_bias),
                   "reset_interval": reset_interval, "reset_offset": reset_offset}
        with _about(graph_file), _sample_progress(f"simulating ({backend})", as_json) as advance:
            run = simulate_specs(model, graph_file, named_specs(graph, input_specs), backend=backend, target=target,
                                 steps=steps, batch=batch, out_path=out_path, shard_size=shard_size, resume=resume,
                                 executor=executor, address=address, options=options, progress=advance,
                                 notes=notes)
        inputs = None
    else:
        inputs = random_inputs(graph, steps=100 if steps is None else steps, batch=8 if batch is None else batch,
                               density=density, seed=seed)
    if inputs is not None:  # (streamed inputs were written to out_path as they were simulated)
        with _about(graph_file), _progress(f"simulating ({backend})", as_json) as advance:
            run = run_sim(model, inputs, backend=backend, target=target, steps=steps, progress=advance)
        run.meta["notes"] = notes + list(run.meta.get("notes", []))
        if out_path:
            save_run(run, out_path)
    spikes = run.spikes_per_node()
    if as_json:
        _emit_json({"backend": run.backend, "steps": run.steps, "batch": run.batch, "spikes": spikes,
                    "outputs": sorted(run.outputs), "file": out_path, "notes": run.meta.get("notes", []),
                    "shards": run.meta.get("shards")})
        return
    t = _table(title=f"{graph_file}: {run.backend}, {run.steps} steps × {run.batch} samples")
    for col in ("node", "neurons", "spikes", "spikes/sample", "rate/neuron/step"):
        t.add_column(col, justify="left" if col == "node" else "right")
    graph.infer_shapes()
    for node, n in spikes.items():
        size = int(np.prod(graph.nodes[node].out_shape)) if node in graph.nodes else 0
        rate = n / max(size * run.steps * run.batch, 1)
        t.add_row(node, f"{size:,}", f"{n:,}", f"{n / max(run.batch, 1):,.1f}", f"{rate:.4f}")
    _console().print(t)
    for note in run.meta.get("notes", []):
        _console().print(f"[yellow]note:[/] {note}")
    if out_path:
        _console().print(f"wrote {out_path}")


# ---- export ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("--checkpoint", type=click.Path(dir_okay=False, exists=True), default=None,
              help="State dict loaded with torch.load(weights_only=True) into the model from MODEL.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False), required=True, help="NIR file to write.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), default=None,
              help="ONNX file for the host-side part (default: OUTPUT.host.onnx when there is one).")
@click.option("--input-name", "input_names", multiple=True, help="Names of the model's inputs (one per modality).")
@click.option("--input", "input_specs", multiple=True, metavar="[NAME=]X.npy",
              help="Sample inputs [T, B, ...] for the self-check (T=1: the frame repeats every step).")
@click.option("--input-shape", "shape_specs", multiple=True, metavar="NAME=D1,D2,...",
              help="Shape (without T and B) of an input, for random sample inputs.")
@click.option("--dt", type=float, default=None, help="Time step in seconds (default: model.dt or 1e-3).")
@click.option("--steps", type=int, default=None, help="Time steps of the self-check (default 10).")
@click.option("--allow-approximate", is_flag=True, help="Export what is not exact and record each deviation.")
@click.option("--host", "host_modules", multiple=True, metavar="MODULE",
              help="Run this module (and everything below it) on the host, e.g. an ANN front end.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def export(model, checkpoint, out_path, onnx_path, input_names, input_specs, shape_specs, dt, steps, allow_approximate,
           host_modules, seed, as_json) -> None:
    """Export MODEL (a `package.module:factory` entry point) to NIR, checking that the exported graph
    reproduces the model's spikes before writing; the host-side part goes to ONNX."""
    from spikedeploy.export import export_model
    from spikedeploy.io.paths import check_command_paths
    from spikedeploy.simulate.dispatch import load_named_arrays

    check_command_paths(outputs={"-o/--output": out_path, "--onnx": onnx_path}, inputs=[checkpoint],
                        input_specs=input_specs)
    examples = load_named_arrays(input_specs) if input_specs else None
    shapes = {}
    for spec in shape_specs:
        name, _, dims = spec.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise click.BadParameter(f"{spec}: write NAME=D1,D2,... with integer sizes", param_hint="--input-shape") from None
        if not name or not shapes[name]:
            raise click.BadParameter(f"{spec}: write NAME=D1,D2,...", param_hint="--input-shape")
    with _console().status("tracing, exporting and checking spikes…") if not as_json else nullcontext():
        res = export_model(model, checkpoint=checkpoint, example_inputs=examples, input_names=list(input_names) or None,
                           dt=dt, steps=steps, allow_approximate=allow_approximate, out_path=out_path,
                           onnx_path=onnx_path, seed=seed, input_shapes=shapes or None,
                           host_modules=host_modules)
    summ = res.summary()
    if as_json:
        _emit_json(summ)
        return
    from spikedeploy.graph.inspect import describe

    info = describe(res.graph, fmt="exported")
    _console().print(f"exported [bold]{model}[/] → {summ['out_path']}"
                  + (f" + host part {summ['onnx_path']}" if summ["onnx_path"] else ""))
    _console().print(f"inputs: {', '.join(info['inputs'])}   outputs: {', '.join(info['outputs'])}   dt: {res.graph.dt}")
    _console().print(f"chip nodes: {len(info['chip_nodes'])}   host nodes: {len(info['host_nodes'])} "
                  f"({', '.join(info['host_nodes']) or '-'})   neurons: {info['total']['neurons']:,}")
    _console().print(f"self-check: {summ['check']}")
    for r in summ["rewrites"]:
        _console().print(f"[cyan]rewrite:[/] {r}")
    for d in summ["deviations"]:
        _console().print(f"[yellow]deviation:[/] {d}")


# ---- quantize -------------------------------------------------------------------------------------
@cli.command()
@click.argument("graph_file", metavar="GRAPH", type=click.Path(dir_okay=False, path_type=str))
@click.option("--target", default="loihi2", show_default=True,
              help="loihi2, loihi1, fixedpoint, or a fixedpoint chip file (.toml/.json).")
@click.option("--method", type=click.Choice(["maxabs", "percentile", "search"]), default="maxabs", show_default=True)
@click.option("--calibrate", "calib_specs", multiple=True, metavar="[NAME=]DATA.npy",
              help="Calibration inputs [T, B, ...] (needed by percentile and search; used for the fidelity report).")
@click.option("--weight-bits", type=int, default=None, help="Weight mantissa bits (default: the target's).")
@click.option("--allow-approximate", is_flag=True, help="Go on where the target cannot represent the graph; record it.")
@click.option("--dt", type=float, default=None, help="Time step in seconds, for graphs that do not record one (NIR).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random inputs when no calibration is given.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Quantized graph file (.npz).")
@netx_layers_option
@click.option("--netx", "netx_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a lava-dl netx .net file (loihi2 only; biases are then quantized in whole "
                   "weight units, as netx stores them).")
@click.option("--bias-onset", type=click.Choice(["auto", "depth", "step0"]), default="auto", show_default=True,
              help="When each layer's bias starts acting: 'depth' at its first input (as the trained model, which "
                   "has no synapse delays), 'step0' from the first step (lava-dl netx); auto: step0 for netx files "
                   "and with --netx, else depth.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def quantize(graph_file, target, method, calib_specs, weight_bits, allow_approximate, dt, seed, out_path, netx_path,
             bias_onset, as_json) -> None:
    """Quantize GRAPH for a target and report, layer by layer, how far the fixed-point spikes stay from float."""
    from spikedeploy.graph.ir import set_dt
    from spikedeploy.io.paths import check_command_paths
    from spikedeploy.io.qgraph_file import save_qgraph
    from spikedeploy.quantize.fidelity import fidelity
    from spikedeploy.quantize.quantizer import quantize as run_quantize
    from spikedeploy.simulate.dispatch import parse_input_args, random_inputs

    check_command_paths(outputs={"-o/--output": out_path, "--netx": netx_path},
                        inputs=[graph_file, _target_file(target)], input_specs=calib_specs)
    graph = _load(graph_file, float_graph=True)
    if dt is not None:
        set_dt(graph, dt)
    calib = parse_input_args(graph, calib_specs) if calib_specs else None
    with _about(graph_file), _console().status(f"quantizing for {target} ({method})…") if not as_json else nullcontext():
        # netx stores biases at a fixed exponent: quantize them on that grid so that the file and the
        # quantized graph (and the fidelity report) hold the same network
        bias_exp_min = 0
        if netx_path:
            from spikedeploy.converters.netx import NETX_BIAS_EXP as bias_exp_min
        if netx_path and bias_onset == "auto":
            bias_onset = "step0"  # a netx file runs every bias from step 0
        qg = run_quantize(graph, target, method=method, calibration=calib, allow_approximate=allow_approximate,
                          weight_bits=weight_bits, seed=seed, bias_exp_min=bias_exp_min, bias_onset=bias_onset)
        data = calib if calib is not None else random_inputs(graph, steps=50, batch=16, seed=seed)
        fid = fidelity(graph, qg, data)
    fid["fidelity"]["inputs"] = ("calibration data" if calib is not None else "random spikes (density 0.15, 50 steps × 16)") \
        + (f", then {fid['fidelity']['depth']} steps of zeros" if fid["fidelity"]["depth"] else "")
    qg.meta["fidelity"] = fid["fidelity"]
    if netx_path:  # first: a graph netx cannot hold stops here, before either file is written
        from spikedeploy.converters.netx import write_netx

        write_netx(qg, netx_path)
    save_qgraph(qg, out_path)
    res = {"target": qg.target, "method": method, "output": out_path, "netx": netx_path,
           "deviations": qg.deviations, "warnings": qg.meta.get("warnings", []), **fid}
    if as_json:
        _emit_json(res)
        return
    from spikedeploy.report.build import render_fidelity

    render_fidelity(fid["fidelity"], _console())
    for w in res["warnings"]:
        _console().print(f"[yellow]warning:[/] {w}")
    for d in qg.deviations:
        _console().print(f"[yellow]deviation:[/] {d}")
    _console().print(f"wrote {out_path}" + (f" and {netx_path}" if netx_path else ""))


# ---- partition ------------------------------------------------------------------------------------
@cli.command()
@click.argument("graph_file", metavar="GRAPH", type=click.Path(dir_okay=False, path_type=str))
@click.option("--target", default="loihi2", show_default=True, help="Target name or fixedpoint chip file.")
@click.option("--run", "run_path", type=click.Path(dir_okay=False), default=None,
              help="RUN.npz from `simulate`: weights placement by measured spike rates.")
@click.option("--chips", type=int, default=None, help="Chips available (default: the target's maximum).")
@click.option("--max-cores", type=int, default=None, help="Cores available in total.")
@click.option("--allocator", type=click.Choice(["greedy", "roundrobin"]), default="greedy", show_default=True)
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False), default=None, help="placement.json")
@netx_layers_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def partition(graph_file, target, run_path, chips, max_cores, allocator, out_path, as_json) -> None:
    """Place GRAPH onto cores and chips under the target's limits; report cores used against the lower bound."""
    from spikedeploy.cli.jsonout import dumps
    from spikedeploy.graph.qgraph import QGraph
    from spikedeploy.io.atomic import atomic_write
    from spikedeploy.io.paths import check_command_paths
    from spikedeploy.partition.placer import partition as run_partition
    from spikedeploy.simulate.result import load_run

    check_command_paths(outputs={"-o/--output": out_path}, inputs=[graph_file, run_path, _target_file(target)])
    model = _load(graph_file)
    graph, qg = (model.graph, model) if isinstance(model, QGraph) else (model, None)
    run = load_run(run_path) if run_path else None
    if run is not None:
        from spikedeploy.checks.companion import check_run_matches

        check_run_matches(run, graph, run_path, graph_file)
    with _about(graph_file):
        pl = run_partition(graph, target, run=run, qgraph=qg, chips=chips, max_cores=max_cores, allocator=allocator)
    d = pl.as_dict()
    d["options"] = {"graph": graph_file, "run": run_path, "chips": chips, "max_cores": max_cores, "allocator": allocator}
    if out_path:
        with atomic_write(out_path, "w") as f:
            f.write(dumps(d))
    if as_json:
        _emit_json(d)
        return
    t = _table(title=f"{graph_file} on {d['target']}: {d['cores_used']} cores (lower bound {d['cores_lower_bound']}), "
                    f"{d['chips']} chip(s)")
    for col in ("layer", "neurons", "cores"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for name, lay in d["layers"].items():
        t.add_row(name, f"{lay.get('neurons', 0):,}", str(len({g[0] for g in lay["groups"]})))
    _console().print(t)
    u = _table(title="utilisation per resource (used / capacity of the cores used)")
    for col in ("resource", "mean", "max"):
        u.add_column(col, justify="left" if col == "resource" else "right")
    for res, v in d["utilisation"].items():
        u.add_row(res, f"{v.get('mean', 0):.1%}", f"{v.get('max', 0):.1%}")
    _console().print(u)
    for v in d["violations"]:
        _console().print(f"[red]violation:[/] {v}")
    if out_path:
        _console().print(f"wrote {out_path}")


# ---- report ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("graph_file", metavar="GRAPH", type=click.Path(dir_okay=False, path_type=str))
@click.option("--target", default="loihi2", show_default=True, help="Target name or fixedpoint chip file.")
@click.option("--run", "run_path", type=click.Path(dir_okay=False), default=None, help="RUN.npz from `simulate`.")
@click.option("--placement", "placement_path", type=click.Path(dir_okay=False), default=None,
              help="placement.json from `partition -o`: loaded as it is (each core's use recomputed and checked).")
@click.option("--fidelity", "fidelity_path", type=click.Path(dir_okay=False), default=None,
              help="JSON from `quantize --json` (its fidelity section is carried into the report).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="Write a self-contained HTML report.")
@netx_layers_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: spikedeploy/report/schema.json).")
def report(graph_file, target, run_path, placement_path, fidelity_path, html_path, as_json) -> None:
    """Core usage, spike traffic, synaptic operations, energy and latency of GRAPH on a target."""
    import json

    from spikedeploy.errors import FileFormatError
    from spikedeploy.graph.qgraph import QGraph
    from spikedeploy.io.paths import check_command_paths
    from spikedeploy.partition.placer import load_placement
    from spikedeploy.report.build import build_report, render_terminal
    from spikedeploy.simulate.result import load_run

    check_command_paths(outputs={"--html": html_path},
                        inputs=[graph_file, run_path, placement_path, fidelity_path, _target_file(target)])
    model = _load(graph_file)
    graph, qg = (model.graph, model) if isinstance(model, QGraph) else (model, None)
    run = load_run(run_path) if run_path else None
    if run is not None:
        from spikedeploy.checks.companion import check_run_matches

        check_run_matches(run, graph, run_path, graph_file)
    placement = None
    if placement_path:
        from spikedeploy.checks.companion import check_placement_file

        try:
            with open(placement_path, encoding="utf-8") as f:
                saved = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise FileFormatError(f"{placement_path}: not a placement file from `spikedeploy partition -o` ({e})") from e
        check_placement_file(saved, placement_path, graph, graph_file)  # its structure, against this graph
        placement = load_placement(placement_path, graph, target, qgraph=qg)  # as saved, each core re-checked
    fid = None
    if fidelity_path:
        try:
            with open(fidelity_path, encoding="utf-8") as f:
                fid = json.loads(f.read())
            fid = fid.get("fidelity", fid)
        except (OSError, ValueError, AttributeError) as e:
            raise FileFormatError(f"{fidelity_path}: not a JSON fidelity report ({e})") from e
        if not isinstance(fid, dict) or "dice_min" not in fid:
            raise FileFormatError(f"{fidelity_path}: not a fidelity report of this version (no 'dice_min' spike "
                                  "overlap); write it again with `spikedeploy quantize ... --json`")
    with _about(graph_file):
        rep = build_report(graph, target, run=run, placement=placement, fidelity=fid, qgraph=qg)
    from spikedeploy.report.html import write_html

    _finish(rep, rep, as_json, html_path, write_html, render_terminal)


# ---- compare --------------------------------------------------------------------------------------
@cli.command()
@click.argument("graph_file", metavar="GRAPH", type=click.Path(dir_okay=False, path_type=str))
@click.option("--targets", "target_list", default="loihi2,loihi1,spinnaker2,truenorth,xylo,speck", show_default=True,
              help="Comma-separated targets: names, chip files (fixedpoint:chip.toml) or module paths.")
@click.option("--run", "run_path", type=click.Path(dir_okay=False), default=None,
              help="RUN.npz from `simulate`: its spike counts price every target (without --input).")
@click.option("--input", "input_specs", multiple=True, metavar="[NAME=]X.npy",
              help="Time-major inputs [T, B, ...]: each target runs them in its own arithmetic (activity, metric).")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False), default=None,
              help="[B] class indices (.npy): accuracy at each chip's precision (needs --input).")
@click.option("--steps", type=int, default=None, help="Time steps per inference when neither --run nor --input is given.")
@click.option("--dt", type=float, default=None, help="Time step in seconds, for graphs that do not record one (NIR).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, help="Write the table as one HTML page.")
@netx_layers_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def compare(graph_file, target_list, run_path, input_specs, labels_path, steps, dt, html_path, as_json) -> None:
    """Which chip, and at what cost: GRAPH on several targets (fits or why not, cores, chips, energy, latency,
    throughput, and the task metric in each chip's arithmetic)."""
    from spikedeploy.graph.ir import set_dt
    from spikedeploy.graph.qgraph import QGraph
    from spikedeploy.report.compare import compare_targets, render_terminal, write_html
    from spikedeploy.simulate.dispatch import load_named_arrays, parse_input_args
    from spikedeploy.simulate.result import load_run

    model = _load(graph_file)  # a quantized file (or netx) runs as read on its own target
    graph = model.graph if isinstance(model, QGraph) else model
    if dt is not None:
        set_dt(graph, dt)
    if labels_path and not input_specs:
        raise click.UsageError("--labels needs --input (the samples the labels belong to)")
    inputs = parse_input_args(graph, input_specs) if input_specs else None
    labels = load_named_arrays((labels_path,), option="--labels")["input"] if labels_path else None
    run = load_run(run_path) if run_path else None
    from spikedeploy.report.sweep import parse_list

    targets = parse_list("--targets", target_list)  # an empty list is refused, a repeated name kept once
    with _about(graph_file):
        res = compare_targets(model, targets, run=run, inputs=inputs, labels=labels, steps=steps)
    _finish(res, {**res, "html": html_path}, as_json, html_path, write_html, render_terminal)


def _finish(result, json_view, as_json: bool, html_path, write_html, render_terminal) -> None:
    """The end of report and compare: the HTML page when asked for, then JSON or the terminal tables."""
    if html_path:
        write_html(result, html_path)
    if as_json:
        _emit_json(json_view)
        return
    render_terminal(result, _console())
    if html_path:
        _console().print(f"wrote {html_path}")


# ---- sweep ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("graph_file", metavar="MODEL", type=click.Path(dir_okay=False, path_type=str))
@click.option("--input", "input_specs", multiple=True, required=True, metavar="[NAME=]X.npy",
              help="Time-major inputs [T, B, ...] (one per graph input); a point with S steps runs the first S.")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False), default=None,
              help="[B] labels (.npy) the metric needs (class indices for accuracy; pair labels for retrieval).")
@click.option("--metric", default=None, metavar="NAME",
              help="Task metric: accuracy, retrieval (examples/retrieval), or a module path registering one "
                   "(default: spike agreement with float, min Dice).")
@click.option("--calibrate", "calib_specs", multiple=True, metavar="[NAME=]DATA.npy",
              help="Calibration inputs for quantization (default: the inputs themselves).")
@click.option("--targets", "target_list", default="loihi2,loihi1", show_default=True,
              help="Comma-separated targets: names, chip files (fixedpoint:chip.toml) or module paths.")
@click.option("--weight-bits", "bits_list", default=None, metavar="B1,B2,...",
              help="Weight widths (default: each target's own).")
@click.option("--steps", "steps_list", required=True, metavar="S1,S2,...", help="Time steps per inference.")
@click.option("--methods", "method_list", default="maxabs", show_default=True, help="Quantization methods.")
@click.option("--samples", type=int, default=None, help="Use the first N samples (default: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dt", type=float, default=None, help="Time step in seconds, for graphs that do not record one (NIR).")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output directory: points/<key>/ (g.q.npz, run.npz, point.json), sweep.json, sweep.html.")
@executor_options
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def sweep(graph_file, input_specs, labels_path, metric, calib_specs, target_list, bits_list, steps_list, method_list,
          samples, seed, dt, out_dir, executor, address, as_json) -> None:
    """Design-space sweep of MODEL (a float graph) over targets × weight bits × time steps × quantization
    methods: a table, sweep.json and a page with the Pareto front of energy per inference against the task
    metric. Points already computed (same model, data and options) are reused."""
    from spikedeploy.report.sweep import make_grid, parse_list, render_terminal
    from spikedeploy.report.sweep import sweep as run_sweep

    grid = {"targets": parse_list("--targets", target_list),
            "weight_bits": parse_list("--weight-bits", bits_list, int) if bits_list else [None],
            "steps": parse_list("--steps", steps_list, int),
            "methods": parse_list("--methods", method_list)}
    make_grid(**grid)  # bad grid values fail here, before any file is read
    with _about(graph_file), _progress("sweep", as_json) as progress:
        res = run_sweep(graph_file, input_specs, out_dir=out_dir, labels=labels_path, metric=metric,
                        calibration=calib_specs or None, samples=samples, seed=seed, dt=dt, progress=progress,
                        executor=executor, address=address, **grid)
    if as_json:
        _emit_json(res)
        return
    render_terminal(res, _console())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _err_console().print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def main() -> None:
    import warnings

    from spikedeploy.io.interrupts import Terminated, install_sigterm_handler

    warnings.showwarning = _show_warning
    install_sigterm_handler()
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _err_console().print("aborted")
        sys.exit(130)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SpikeDeployError as e:
        _err_console().print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        _err_console().print("interrupted")
        sys.exit(130)
    except Terminated:
        _err_console().print("terminated")
        sys.exit(143)
    except Exception as e:
        if os.environ.get("SPIKEDEPLOY_DEBUG"):
            raise
        _err_console().print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (this is a bug in spikedeploy; "
                          "rerun with SPIKEDEPLOY_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(3)
    sys.exit(0)


