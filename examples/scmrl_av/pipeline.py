"""The audio-visual pipeline on the bundled model: export → quantize (loihi2) → simulate (float torch; emulator
on every test pair, fused and with each modality alone; Lava on a few pairs with a bit-exact parity check
against the emulator) → partition → report (terminal, OUT/report.json, OUT/report.html).

    python -m examples.scmrl_av.pipeline --out out/scmrl_av [--lava-samples 4] [--limit N]

Inputs reach the chip as integers: the log-mel as payloads 0..7, the digit as spikes 0/1, both presented for
T = 4 steps (direct encoding, as S-CMRL repeats its inputs T times), then zeros while the deeper layers
answer. Every synapse adds one step of delay on Loihi (lava-fixed-point.md §1), so the class neurons answer
`depth` steps late; their spike counts are read in the window [depth, depth + T). The attention products
(q kᵀ v) run on the host inside the time loop, exactly (the report prices the crossings).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from examples.pipeline_cli import pipeline_main, publish
from examples.scmrl_av import data
from examples.scmrl_av.evaluate import CHANCE, MODES, accuracy, masked, torch_scores
from examples.scmrl_av.model import ann_macs, load_pretrained
from examples.scmrl_av.report_section import SECTION as CLASSIFICATION
from spikedeploy.estimate.energy import E_MAC_45NM
from spikedeploy.export import export_model
from spikedeploy.io.qgraph_file import save_qgraph
from spikedeploy.quantize.fidelity import fidelity
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.report.build import build_report
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.float_ref import synapse_depth

TARGET = "loihi2"
OUTPUT = "output"


def chip_inputs(audio: np.ndarray, visual: np.ndarray, T: int, pad: int) -> dict[str, np.ndarray]:
    """The same frame for T steps, then `pad` zero steps so delayed layers finish: [T + pad, B, 1, 16, 16]."""
    xs = {}
    for name, x in (("audio", audio), ("visual", visual)):
        a = np.zeros((T + pad, *x.shape), np.float32)
        a[:T] = x[None].astype(np.float32)
        xs[name] = a
    return xs


def window_scores(model, out: np.ndarray, start: int, T: int) -> np.ndarray:
    """Output spikes [steps, B, classes * per_class] -> class scores [B, classes] in the window [start, start + T)."""
    counts = out[start:start + T].sum(0).reshape(out.shape[1], -1)
    return model.class_scores(torch.as_tensor(counts)).numpy().astype(np.float64)


def run_pipeline(out_dir: Path, *, lava_samples: int = 4, limit: int | None = None, seed: int = 0,
                 calib_samples: int = 64, console: Console | None = None, model=None, ann=None) -> dict:
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = load_pretrained() if model is None else model
    ann = load_pretrained(ann=True) if ann is None else ann
    T = model.num_steps
    test = data.test_pairs()
    audio, visual, labels = test.audio, test.visual, test.labels
    if limit:
        audio, visual, labels = audio[:limit], visual[:limit], labels[:limit]
    calib_pairs = data.train_pairs(epoch_seed=seed + 7, per_clip=1)
    pick = np.random.default_rng(seed).choice(len(calib_pairs.labels), calib_samples, replace=False)
    timings: dict[str, float] = {}

    # 1. export (the exporter checks its graph against torch before writing)
    t0 = time.perf_counter()
    console.print("[bold]export[/]")
    sample = {"audio": torch.as_tensor(audio[:8], dtype=torch.float32)[None],
              "visual": torch.as_tensor(visual[:8], dtype=torch.float32)[None]}
    exp = export_model(model, example_inputs=sample, steps=T, out_path=out_dir / "model.nir", dt=1e-3)
    graph = exp.graph
    timings["export_s"] = time.perf_counter() - t0

    # 2. quantize for Loihi 2, calibrated on training pairs
    t0 = time.perf_counter()
    console.print("[bold]quantize[/]")
    depth = synapse_depth(graph)[OUTPUT]
    pad = depth
    calib = chip_inputs(calib_pairs.audio[pick], calib_pairs.visual[pick], T, pad)
    # maxabs: the model trained on this grid (train.py on_chip_grid); the calibration pairs score the fidelity
    qg = quantize(graph, TARGET)
    save_qgraph(qg, out_dir / "model.q.npz")
    fid = fidelity(graph, qg, calib)["fidelity"]
    fid["inputs"] = f"{calib_samples} training pairs"
    timings["quantize_s"] = time.perf_counter() - t0

    # 3. float reference (the torch model) and 4. the emulator on every test pair, per mode
    scores: dict[str, dict[str, np.ndarray]] = {"float": {}, "emulator": {}}
    runs = {}
    for mode in MODES:
        xa, xv = masked(audio, visual, mode)
        t0 = time.perf_counter()
        console.print(f"[bold]float + emulator[/] {mode}")
        scores["float"][mode] = torch_scores(model, xa, xv)
        timings[f"float_{mode}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        runs[mode] = simulate(qg, chip_inputs(xa, xv, T, pad), backend="emulator")
        scores["emulator"][mode] = window_scores(model, runs[mode].outputs[OUTPUT], depth, T)
        timings[f"emulator_{mode}_s"] = time.perf_counter() - t0

    # 5. Lava on a few fused pairs; must equal the emulator bit for bit (every node's spike counts, outputs)
    t0 = time.perf_counter()
    console.print("[bold]Lava parity[/]")
    n_lava = min(lava_samples, len(labels))
    xl = chip_inputs(audio[:n_lava], visual[:n_lava], T, pad)
    lrun = simulate(qg, xl, backend="lava")
    emu = runs["fused"]
    parity = {node: bool(np.array_equal(lrun.counts[node], emu.counts[node][:, :n_lava])) for node in lrun.counts}
    outputs_equal = all(np.array_equal(lrun.outputs[o], emu.outputs[o][:, :n_lava]) for o in lrun.outputs)
    lava_scores = window_scores(model, lrun.outputs[OUTPUT], depth, T)
    timings["lava_s"] = time.perf_counter() - t0

    # 6. partition + report; the ANN twin's energy with the report's own ANN-equivalent formula
    console.print("[bold]partition + report[/]")
    acc = {b: {m: accuracy(s, labels) for m, s in per.items()} for b, per in scores.items()}
    ann_acc = {m: accuracy(torch_scores(ann, *masked(audio, visual, m)), labels) for m in MODES}
    macs = ann_macs(ann)
    classification = {
        "task": "spoken + handwritten digit, 10 classes, unseen speakers (flite voices and one human recording)",
        "n": int(len(labels)), "chance": CHANCE,
        "accuracy": {"float": acc["float"], "emulator": acc["emulator"],
                     "drop_points": {m: round(100 * (acc["float"][m] - acc["emulator"][m]), 3) for m in MODES},
                     "lava": {"pairs": n_lava, "accuracy": accuracy(lava_scores, labels[:n_lava]),
                              "scores_equal_emulator": bool(np.array_equal(lava_scores,
                                                                           scores["emulator"]["fused"][:n_lava]))}},
        "single_modality": "the same model with the other input zeroed",
        "float_equals_emulator_predictions": {m: float(np.mean(np.argmax(scores["float"][m], 1)
                                                               == np.argmax(scores["emulator"][m], 1))) for m in MODES},
        "lava_parity": {"samples": n_lava, "all_equal": bool(all(parity.values()) and outputs_equal), "nodes": parity},
        "ann_twin": {"accuracy": ann_acc, "macs_per_inference": macs,
                     "energy_j": macs * E_MAC_45NM.value,
                     "formula": "E = 4.6 pJ x MACs, one pass (the report's ANN-equivalent formula)"},
        "steps": {"T": T, "chip_latency_steps": depth, "run_steps": T + pad},
    }
    rep = build_report(graph, TARGET, run=emu, fidelity=fid, qgraph=qg, steps=T + pad,
                       sections={CLASSIFICATION.key: classification})
    rep["pipeline"] = {"timings_s": {k: round(v, 3) for k, v in timings.items()}, "export_check": exp.check,
                       "quantization_warnings": qg.meta.get("warnings", []), "deviations": qg.deviations}
    return publish(rep, out_dir, console, lambda: _print_classification(console, rep), t_start)


def _print_classification(console: Console, rep: dict) -> None:
    """The cost per query and Lava's parity (the accuracy table is the report's classification section)."""
    c = rep["classification"]
    split = rep["chip_host_split"]
    e = Table(title="cost per query", show_header=False)
    e.add_column("")
    e.add_column("")
    e.add_row("cores / chips", f"{rep['cores_used']} / {rep['chips']}")
    e.add_row("spikes per query", f"{rep['spikes_per_inference']:.0f}")
    e.add_row("SNN energy / latency", f"{rep['energy_per_inference_j'] * 1e6:.3f} µJ / "
                                      f"{rep['latency_per_inference_s'] * 1e6:.1f} µs")
    e.add_row("chip / host energy", f"{split['energy_chip_j'] * 1e6:.3f} µJ / {split['energy_host_j'] * 1e6:.3f} µJ")
    e.add_row("host nodes", ", ".join(split["host_nodes"]))
    e.add_row("same network as ANN (report formula)", f"{rep['energy']['ann_equivalent']['energy_j'] * 1e6:.3f} µJ")
    e.add_row("ANN twin (trained)", f"{c['ann_twin']['energy_j'] * 1e6:.3f} µJ, "
                                    f"{c['ann_twin']['macs_per_inference']} MACs")
    console.print(e)
    par = c["lava_parity"]["all_equal"]
    console.print(f"Lava = emulator bit for bit on every node ({c['lava_parity']['samples']} pairs): "
                  f"{'[green]yes[/]' if par else '[red]NO[/]'}")


def main(argv=None) -> None:
    pipeline_main(argv, doc=__doc__, out="out/scmrl_av", run=run_pipeline, limit_help="use only the first N test pairs",
                  parity=lambda r: r["classification"]["lava_parity"]["all_equal"],
                  where="classification.lava_parity")


if __name__ == "__main__":
    main()
