"""The `spikedeploy` command line: thin click wrappers over the Python API.

Every command takes --json. Errors print one line and exit 1 (2 for usage errors); a traceback is a bug
(set SPIKEDEPLOY_DEBUG=1 to see one anyway).
"""

from __future__ import annotations

import os
import sys

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import SpikeDeployError
from .jsonout import dumps

console = Console()
err_console = Console(stderr=True)


def _emit_json(obj) -> None:
    click.echo(dumps(obj))


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
@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
def inspect(file: str, as_json: bool) -> None:
    """Show the nodes of a NIR, netx (.net) or quantized graph FILE: shapes, neurons, synapses,
    parameters, and whether each node runs on the chip or the host."""
    from .inspect_graph import inspect_file

    info = inspect_file(file)
    if as_json:
        _emit_json(info)
        return
    t = Table(title=f"{file}  ({info['format']})", show_lines=False)
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
    console.print(t)
    console.print(f"inputs: {', '.join(info['inputs'])}   outputs: {', '.join(info['outputs'])}   "
                  f"dt: {info['dt'] if info['dt'] is not None else 'not recorded'}   reset: {info['reset']}")
    for r in info.get("repairs", []):
        console.print(f"[yellow]repaired:[/] {r}")


# ---- targets --------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def targets(as_json: bool) -> None:
    """List the hardware targets with their limits and the source of each figure."""
    from .targets.spec import BUILTIN, get_target

    specs = {n: get_target(n).as_dict() for n in BUILTIN}
    if as_json:
        _emit_json(specs)
        return
    t = Table(title="targets")
    for col in ("target", "weight bits", "state bits", "neurons/core", "syn. memory/core", "axons in/out",
                "cores/chip", "simulators"):
        t.add_column(col)
    for n, s in specs.items():
        c = s["core"]
        t.add_row(n, str(s["numeric"]["weight_bits"]), str(s["numeric"]["state_bits"]), f"{c['neurons']:,}",
                  f"{c['synapse_memory_bits'] // 8 // 1024} KiB", f"{c['input_axons']}/{c['output_axons']}",
                  str(s["cores_per_chip"]), ", ".join(s["simulators"]) or "-")
    console.print(t)
    console.print("Constants marked as estimates are listed with their sources in `spikedeploy targets --json`.")


# ---- doctor ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def doctor(as_json: bool) -> None:
    """Check the installation: package versions, whether Lava runs a 3-layer network, whether netx imports."""
    from .doctor import doctor as run_doctor

    with console.status("running a 3-layer Lava network…") if not as_json else _null():
        rep = run_doctor()
    if as_json:
        _emit_json(rep)
    else:
        t = Table(title="spikedeploy doctor")
        t.add_column("check")
        t.add_column("result")
        t.add_row("python", rep["python"])
        for k, v in rep["versions"].items():
            t.add_row(k, v or "[red]not installed[/]")
        lr = rep["lava_runs"]
        t.add_row("Lava runs (Loihi2SimCfg fixed_pt)",
                  f"[green]yes[/] ({lr['layers']} layers, {lr['steps']} steps, {lr['output_spikes']} output spikes, "
                  f"{lr['seconds']} s)" if lr["ok"] else f"[red]no[/]: {lr['error']}")
        nx = rep["netx_imports"]
        t.add_row("lava-dl netx imports", "[green]yes[/]" if nx["ok"] else f"[red]no[/]: {nx['error']}")
        console.print(t)
    if not (rep["lava_runs"]["ok"] and rep["netx_imports"]["ok"]):
        sys.exit(1)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ---- simulate -------------------------------------------------------------------------------------
@cli.command()
@click.argument("graph_file", metavar="GRAPH", type=click.Path(dir_okay=False, path_type=str))
@click.option("--backend", type=click.Choice(["float", "emulator", "lava"]), default="emulator", show_default=True,
              help="float reference, bit-exact fixed-point emulator, or Lava Loihi2SimCfg (slow, one sample at a time).")
@click.option("--target", default="loihi2", show_default=True, help="Target whose arithmetic the fixed-point backends use.")
@click.option("--input", "input_specs", multiple=True, metavar="[NAME=]X.npy",
              help="Time-major input [T, B, ...]; NAME=X.npy per graph input. Omit for random spikes.")
@click.option("--steps", type=int, default=None, help="Time steps (default: the inputs' T, or 100 for random inputs).")
@click.option("--batch", type=int, default=None, help="Samples to run (default: all given, or 8 for random inputs).")
@click.option("--density", type=float, default=0.15, show_default=True, help="Spike probability of random inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random inputs.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False), default=None, help="Write RUN.npz.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def simulate(graph_file, backend, target, input_specs, steps, batch, density, seed, out_path, as_json) -> None:
    """Simulate GRAPH (NIR, netx .net or quantized file) and write spikes per layer and outputs to RUN.npz."""
    from .io import load_graph
    from .qgraph import QGraph
    from .run import save_run
    from .simulate import parse_input_args, random_inputs
    from .simulate import simulate as run_sim

    model = load_graph(graph_file)
    graph = model.graph if isinstance(model, QGraph) else model
    if input_specs:
        inputs = parse_input_args(graph, input_specs)
        if batch is not None:
            inputs = {k: v[:, :batch] for k, v in inputs.items()}
    else:
        inputs = random_inputs(graph, steps=steps or 100, batch=batch or 8, density=density, seed=seed)
    with console.status(f"simulating with the {backend} backend…") if not as_json else _null():
        run = run_sim(model, inputs, backend=backend, target=target, steps=steps)
    if out_path:
        save_run(run, out_path)
    spikes = run.spikes_per_node()
    if as_json:
        _emit_json({"backend": run.backend, "steps": run.steps, "batch": run.batch, "spikes": spikes,
                    "outputs": sorted(run.outputs), "file": out_path, "notes": run.meta.get("notes", [])})
        return
    t = Table(title=f"{graph_file}: {run.backend}, {run.steps} steps × {run.batch} samples")
    for col in ("node", "neurons", "spikes", "spikes/sample", "rate/neuron/step"):
        t.add_column(col, justify="left" if col == "node" else "right")
    graph.infer_shapes()
    for node, n in spikes.items():
        size = int(np.prod(graph.nodes[node].out_shape)) if node in graph.nodes else 0
        rate = n / max(size * run.steps * run.batch, 1)
        t.add_row(node, f"{size:,}", f"{n:,}", f"{n / max(run.batch, 1):,.1f}", f"{rate:.4f}")
    console.print(t)
    for note in run.meta.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    if out_path:
        console.print(f"wrote {out_path}")


# ---- commands whose issues have not landed ----------------------------------------------------------
def _not_yet(name: str, what: str):
    @cli.command(name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                 help=f"{what} (not available in this version).")
    @click.pass_context
    def _cmd(ctx) -> None:
        raise SpikeDeployError(f"`spikedeploy {name}` is not available in this version yet: {what.lower()}.")

    return _cmd


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SpikeDeployError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:
        if os.environ.get("SPIKEDEPLOY_DEBUG"):
            raise
        err_console.print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (this is a bug in spikedeploy; "
                          "rerun with SPIKEDEPLOY_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(3)
    sys.exit(0)


for _name, _what in (
    ("export", "Export a trained torch/snnTorch model to NIR with a host-side ONNX part"),
    ("quantize", "Quantize a graph for a target with a fidelity report"),
    ("partition", "Place a graph onto cores and chips"),
    ("report", "Core usage, traffic, energy and latency report"),
):
    _not_yet(_name, _what)
