"""The SpikeCLIP-style zero-shot classifier deployed on Loihi 2, from the bundled checkpoint.

export (image and text encoders) → quantize (loihi2) → simulate (float graph; emulator on the test set; Lava
on a few samples, bit for bit against the emulator on every chip neuron's v and s) → partition → report
(terminal, out/report.json, out/report.html), plus the ANN twin's accuracy and energy beside the SNN's.

    python -m examples.spikeclip.pipeline --out out [--limit N] [--lava-samples 4]

Per query, the chip runs the image encoder (attention's q kᵀ v on the host, inside the time loop) and the
host projects its spike counts into the 384-d space and takes the cosine against the 10 class prototypes
(the classifier head is on the HOST). The text encoder runs once, on the 80 prompts, to make the prototypes;
its cost is reported separately (it is not per query). Images enter as 8-bit payloads (the first conv's
weights / 255, an exact rewrite: examples.retrieval.pipeline.integer_image_input). The chip answers L steps
late (one step per synapse layer, lava-fixed-point.md §1): it runs T + L steps and the embedding is the
output's spike count in [L, L + T).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from examples.pipeline_cli import pipeline_main, publish
from examples.retrieval.pipeline import window_counts
from examples.spikeclip import data
from examples.spikeclip.evaluate import evaluate_model, project, zero_shot_metrics
from examples.spikeclip.model import load_pretrained
from examples.spikeclip.qat import calibration_images, check_on_grid, export_quantize, frames
from spikedeploy.graph.ir import Node
from spikedeploy.io.qgraph_file import save_qgraph
from spikedeploy.quantize.fidelity import fidelity
from spikedeploy.report.build import build_report
from spikedeploy.simulate.dispatch import simulate

TARGET = "loihi2"
CHUNK = 500  # emulator batch: the conv layers' state for 10000 images at once would need gigabytes


def with_host_head(graph, n_classes: int, embed: int, out: str):
    """The deployed graph: the image encoder plus the host head (projection E -> 384 and cosine against the
    class prototypes) as a host node, so the report counts its MACs per query."""
    g = graph.copy()
    (src,) = g.predecessors(out)
    g.add(Node("zero_shot_head", "CosineSimilarity", {"out_shape": np.array([n_classes])},
               meta={"macs_per_inference": int(embed * 384 + n_classes * 384),
                     "gallery": f"projection {embed}x384 + {n_classes} class prototypes x 384"}, modality="image"))
    g.add(Node("class_scores", "Output"))
    g.connect(src, "zero_shot_head")
    g.connect("zero_shot_head", "class_scores")
    g.infer_shapes()
    return g


def deploy(module, name: str, x: np.ndarray, calib: np.ndarray, T: int, out_dir: Path, *, image: bool,
           lava_samples: int) -> dict:
    """Export, quantize, run float + emulator on all of `x`, Lava on the first `lava_samples`: one encoder."""
    r: dict = {"timings_s": {}}
    t0 = time.perf_counter()
    # percentile ranges from training data, as qat.py fine-tuned the checkpoint onto (so its weights map exactly)
    exp, g, qg, depth, cal = export_quantize(module, name, x, calib, T, image=image, out_dir=out_dir)
    (out,) = g.outputs
    save_qgraph(qg, out_dir / f"{name}.q.npz")
    r["on_chip_grid"] = check_on_grid(qg)
    r["timings_s"]["export_quantize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fl, em, runs = [], [], []
    for i in range(0, len(x), CHUNK):
        xs = {name: frames(x[i:i + CHUNK], T, depth)}
        # the float backend steps every layer in the same step, as torch does: its window starts at 0
        fl.append(window_counts(simulate(g, xs, backend="float").outputs[out], 0, T))
        runs.append(simulate(qg, xs, backend="emulator"))
        em.append(window_counts(runs[-1].outputs[out], depth, T))
    r["timings_s"]["float_emulator"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = min(lava_samples, len(x))
    xl = {name: frames(x[:n], T, depth)}
    neurons = [k for k, v in qg.graph.nodes.items() if v.placement == "chip" and v.spec.family == "neuron"]
    lrun = simulate(qg, xl, backend="lava", probes=neurons)
    erun = simulate(qg, xl, backend="emulator", probes=neurons)
    equal = {k: all(np.array_equal(erun.traces[k][v], lrun.traces[k][v]) for v in ("v", "s")) for k in neurons}
    equal["outputs"] = bool(np.array_equal(erun.outputs[out], lrun.outputs[out]))
    r["timings_s"]["lava"] = time.perf_counter() - t0
    r.update(graph=g, qgraph=qg, export=exp, out=out, depth=depth, float=np.concatenate(fl), emulator=np.concatenate(em),
             lava=window_counts(lrun.outputs[out], depth, T), parity=equal, run=runs[0], calib=cal,
             spikes=int(sum(int(c.sum()) for c in erun.counts.values())))
    return r


def run_pipeline(out_dir: Path, *, lava_samples: int = 4, limit: int | None = None, seed: int = 0,
                 console: Console | None = None) -> dict:
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    snn, ann = load_pretrained(), load_pretrained(which="ann")
    T = snn.steps
    test = data.test_split(limit)
    bow = snn.vocab.bag_of_words([p for p, _ in data.prompts()])
    calib = calibration_images(seed)

    console.print("[bold]image encoder[/]: export → quantize → float / emulator / Lava")
    img = deploy(snn.image, "image", test.images, calib, T, out_dir, image=True, lava_samples=lava_samples)
    console.print("[bold]text encoder[/] (80 prompts, once): export → quantize → float / emulator / Lava")
    txt = deploy(snn.text, "text", bow, bow, T, out_dir, image=False, lava_samples=lava_samples)

    w_img, w_txt = snn.image_proj.weight.detach().numpy(), snn.text_proj.weight.detach().numpy()
    metrics = {}
    for k in ("float", "emulator"):
        protos = data.prototypes(project(txt[k], w_txt))
        metrics[k] = zero_shot_metrics(project(img[k], w_img), test.labels, protos)
    protos_e = data.prototypes(project(txt["emulator"], w_txt))
    n = len(img["lava"])
    lava_pred = np.argmax(project(img["lava"], w_img) @ protos_e.T, 1)
    metrics["lava"] = {"samples": n, "counts_equal_emulator": bool(np.array_equal(img["lava"], img["emulator"][:n])),
                       "predictions": lava_pred.tolist(), "labels": test.labels[:n].tolist()}
    metrics["drop_points"] = {m: 100 * (metrics["float"][m] - metrics["emulator"][m])
                              for m in ("unseen_zero_shot", "seen", "generalized_10way")}
    metrics["ann"] = evaluate_model(ann, test)
    parity = {"image": img["parity"], "text": txt["parity"]}
    parity_ok = all(all(v.values()) for v in parity.values())

    g_host = with_host_head(img["graph"], len(data.CLASSES), snn.config["embed"], img["out"])
    fid = fidelity(img["graph"], img["qgraph"], img["calib"])["fidelity"]
    fid["inputs"] = "64 training images"
    rep = build_report(g_host, TARGET, run=img["run"], fidelity=fid, qgraph=img["qgraph"], steps=T + img["depth"])
    rep_txt = build_report(txt["graph"], TARGET, run=txt["run"], qgraph=txt["qgraph"], steps=T + txt["depth"])
    rep["zero_shot"] = {
        **metrics, "T": T, "chip_latency_steps": img["depth"],
        "classes": list(data.CLASSES), "seen": [data.CLASSES[c] for c in data.SEEN],
        "unseen": [data.CLASSES[c] for c in data.UNSEEN],
        "head": "host: projection of the image spike counts to 384-d, cosine against class prototypes",
        "lava_parity": {"samples": n, "all_equal": parity_ok, "nodes": parity},
        # the checkpoint was fine-tuned onto Loihi 2's weight grid (qat.py): how exactly the quantizer holds it
        "on_chip_grid": {"image": img["on_chip_grid"], "text": txt["on_chip_grid"]},
        "ann_energy_per_query_j": rep["energy"]["ann_equivalent"]["energy_j"],
        "ann_energy_note": "the report's ANN-equivalent formula (every synapse and host MAC once at 4.6 pJ) "
                           "over this graph, which has the ANN twin's layer sizes",
        "text_encoder_once": {"prompts": len(bow), "energy_j": rep_txt["energy_per_inference_j"],
                              "cores_used": rep_txt["cores_used"], "note": "prototypes are computed once, not per query"},
        "timings_s": {f"{w}_{k}": round(v, 2) for w, r in (("image", img), ("text", txt))
                      for k, v in r["timings_s"].items()},
    }
    rep["pipeline"] = {"export_check": {"image": img["export"].check, "text": txt["export"].check},
                       "rewrites": img["graph"].meta.get("rewrites", []),
                       "quantization_warnings": img["qgraph"].meta.get("warnings", []),
                       "deviations": img["qgraph"].deviations}
    return publish(rep, out_dir, console, lambda: _print_summary(console, rep), t_start)


def _print_summary(console: Console, rep: dict) -> None:
    z = rep["zero_shot"]
    t = Table(title=f"zero-shot Fashion-MNIST ({z['float']['images']} test images; unseen: {', '.join(z['unseen'])})")
    for c in ("metric", "chance", "float SNN", "emulator SNN", "drop (points)", "ANN"):
        t.add_column(c)
    for m in ("unseen_zero_shot", "seen", "generalized_10way"):
        t.add_row(m, f"{z['float']['chance'][m]:.3f}", f"{z['float'][m]:.4f}", f"{z['emulator'][m]:.4f}",
                  f"{z['drop_points'][m]:+.2f}", f"{z['ann'][m]:.4f}")
    console.print(t)
    split = rep["chip_host_split"]
    console.print(f"cores {rep['cores_used']} on {rep['chips']} chip(s); spikes/query {rep['spikes_per_inference']:.0f}; "
                  f"energy/query {rep['energy_per_inference_j'] * 1e6:.3f} µJ, latency/query "
                  f"{rep['latency_per_inference_s'] * 1e6:.1f} µs; ANN-equivalent {z['ann_energy_per_query_j'] * 1e6:.3f} µJ")
    console.print(f"chip/host: {split['round_trips_per_step']} round trip(s) per step, host→chip "
                  f"{split['host_to_chip_bits_per_step']} bits/step; head on the host")
    console.print(f"text encoder once (80 prompts): {z['text_encoder_once']['energy_j'] * 1e6:.3f} µJ")
    console.print(f"Lava = emulator bit for bit (v, s of every chip neuron, {z['lava_parity']['samples']} samples, "
                  f"both encoders): {'[green]yes[/]' if z['lava_parity']['all_equal'] else '[red]NO[/]'}")


def main(argv=None) -> None:
    pipeline_main(argv, doc=__doc__, out="out/spikeclip", run=run_pipeline, limit_help="use only the first N test images",
                  parity=lambda r: r["zero_shot"]["lava_parity"]["all_equal"], where="zero_shot.lava_parity")


if __name__ == "__main__":
    main()
