"""The whole cross-modal retrieval pipeline on the bundled model, as `make demo` runs it.

export → quantize (loihi2) → partition → simulate (float torch; emulator on the test split; Lava on a few
samples with a bit-exact parity check against the emulator) → report (terminal, out/report.json,
out/report.html).

    python -m examples.retrieval.pipeline --out out [--lava-samples 4] [--limit N]

Chip timing: every synapse adds one step of delay on Loihi (lava-fixed-point.md §1), so an encoder
with L synapse layers answers L steps late. The chip runs T + L steps with the T input frames first and
zeros after, and the embedding is the output spike count in the window [L, L + T). Images enter the chip
as graded 8-bit payloads (MNIST pixels are k/255, so pixel·255 is exact); the first layer's weights are
divided by 255 to keep the float graph identical (an exact rewrite recorded in the graph).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from examples.pipeline_cli import pipeline_main, write_report
from examples.retrieval import data
from examples.retrieval.evaluate import recall_at_k, recall_from_scores, retrieval_metrics
from examples.retrieval.model import load_pretrained
from examples.retrieval.report_section import SECTION as RETRIEVAL
from spikedeploy.export import export_model
from spikedeploy.graph.ir import Graph, Node
from spikedeploy.io.graph_files import save_graph
from spikedeploy.io.qgraph_file import save_qgraph
from spikedeploy.quantize.fidelity import fidelity
from spikedeploy.quantize.quantizer import quantize
from spikedeploy.report.build import build_report, render_terminal
from spikedeploy.simulate.dispatch import simulate
from spikedeploy.simulate.float_ref import synapse_depth

PIXEL_SCALE = 255.0
TARGET = "loihi2"


def integer_image_input(graph: Graph, image_input: str = "image") -> Graph:
    """Copy of `graph` taking pixels in 0..255 instead of 0..1: the first synapse's weights / 255 (exact)."""
    g = graph.copy()
    (first,) = g.successors(image_input)
    node = g.nodes[first]
    node.params["weight"] = np.asarray(node.params["weight"], dtype=np.float64) / PIXEL_SCALE
    g.meta.setdefault("rewrites", []).append(
        f"input '{image_input}' takes 8-bit pixel payloads (0..255): '{first}' weights divided by {PIXEL_SCALE:g} (exact)")
    return g


def chip_inputs(images_u8: np.ndarray, bow: np.ndarray, T: int, pad: int) -> dict[str, np.ndarray]:
    """Direct encoding: the same frame for T steps, then `pad` zero steps so delayed layers finish."""
    img = np.zeros((T + pad, *images_u8.shape), np.float32)
    img[:T] = images_u8[None].astype(np.float32)
    txt = np.zeros((T + pad, len(bow), bow.shape[1]), np.float32)
    txt[:T] = bow[None].astype(np.float32)
    return {"image": img, "text": txt}


def to_u8(images: np.ndarray) -> np.ndarray:
    """[N, 1, 28, 28] floats k/255 -> the uint8 pixels they came from."""
    return np.round(np.asarray(images, dtype=np.float64) * PIXEL_SCALE).astype(np.uint8)


def window_counts(out: np.ndarray, start: int, T: int) -> np.ndarray:
    return out[start:start + T].sum(0).reshape(out.shape[1], -1)


def float_embeddings(model, images: np.ndarray, bow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        x = data.encode_images(images.astype(np.float32) / PIXEL_SCALE, model.num_steps)
        img = model.encode_image(x).numpy()
        txt = model.encode_text(data.encode_text(bow, model.num_steps)).numpy()
    return img, txt


def with_similarity_head(graph: Graph, gallery: np.ndarray, *, on_chip: bool) -> Graph:
    """The retrieval head: a host cosine-similarity search, or (exact rewrite) a Dense layer on the chip whose
    weights are the L2-normalised gallery, read out by a non-spiking integrator. Ranking a query's scores
    against normalised gallery rows equals ranking by cosine, whatever the query's norm."""
    g = graph.copy()
    n, dim = gallery.shape
    g.add(Node("similarity_out", "Output"))
    if on_chip:
        w = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
        g.add(Node("gallery", "Affine", {"weight": w, "bias": np.zeros(n)}, modality="image"))
        g.add(Node("similarity", "I", {"r": np.ones(n)},
                   modality="image"))
        g.connect("image.net.8", "gallery")
        g.connect("gallery", "similarity")
    else:
        g.add(Node("similarity", "CosineSimilarity", {"out_shape": np.array([n])},
                   meta={"macs_per_inference": int(n * dim), "gallery": f"{n} caption embeddings x {dim}"}, modality="fused"))
        g.connect("image.net.8", "similarity")
    g.connect("similarity", "similarity_out")
    g.infer_shapes()
    return g


def integrate_window(qg, node: str, *, start: int, steps: int) -> None:
    """Make the integrator `node` sum its input over steps [start, steps) only: its state is zeroed at the
    beginning of step `start` (Lava's LIFReset; the emulator does the same), so that what reaches it before
    the embedding window (activity the neurons' biases cause before the image arrives) does not count. With
    `steps` = T + the head's synapse depth, the window's last spikes still arrive before the run ends, and its
    final value is the gallery times the query's window counts, as on the host."""
    q = qg.q[node]
    # reset when the 1-based step number modulo the interval equals the offset (lava-fixed-point.md); one
    # interval per sample, so that Lava's samples, run back to back, reset at the same step of each
    q.reset_interval, q.reset_offset = int(steps), (int(start) + 1) % int(steps)


def run_pipeline(out_dir: Path, *, lava_samples: int = 4, limit: int | None = None, seed: int = 0,
                 console: Console | None = None, model=None) -> dict:
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    model = load_pretrained() if model is None else model
    T = model.num_steps
    test = data.load_split("test")
    images = to_u8(test.images)
    labels = test.labels
    captions, _ = data.sample_captions(labels)
    cap_labels = labels.copy()  # caption i describes image i
    if limit:
        images, labels, captions, cap_labels = images[:limit], labels[:limit], captions[:limit], cap_labels[:limit]
    bow = model.vocab.bag_of_words(list(captions))
    train = data.load_split("train")
    calib_idx = np.random.default_rng(seed).choice(len(train.labels), 64, replace=False)
    calib_images = to_u8(train.images[calib_idx])
    calib_bow = model.vocab.bag_of_words([data.caption(int(y), 0) for y in train.labels[calib_idx]])
    timings: dict[str, float] = {}

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=False)
    stages = ["export", "quantize", "float reference", "emulator", "Lava parity", "similarity on chip",
              "partition + report"]
    with progress:
        task = progress.add_task("pipeline", total=len(stages))

        def stage(name):
            progress.update(task, description=f"[bold]{name}[/]")
            return time.perf_counter()

        # 1. export (checks itself against torch before writing)
        t0 = stage("export")
        sample = {"image": torch.as_tensor(images[:8].astype(np.float32) / PIXEL_SCALE)[None],
                  "text": torch.as_tensor(bow[:8].astype(np.float32))[None]}
        exp = export_model(model, example_inputs=sample, steps=T, out_path=out_dir / "model.nir", dt=1e-3)
        graph = exp.graph
        timings["export_s"] = time.perf_counter() - t0
        progress.advance(task)

        # 2. quantize for Loihi 2, calibrated on training images
        t0 = stage("quantize")
        g_int = integer_image_input(graph)
        depth = {o: synapse_depth(g_int)[o] for o in g_int.outputs}  # the chip's latency in steps
        pad = max(depth.values())
        calib = chip_inputs(calib_images, calib_bow, T, pad)
        qg = quantize(g_int, TARGET, method="percentile", calibration=calib)
        save_qgraph(qg, out_dir / "model.q.npz")
        fid = fidelity(g_int, qg, calib)["fidelity"]
        fid["inputs"] = f"{len(calib_idx)} training images and captions"
        timings["quantize_s"] = time.perf_counter() - t0
        progress.advance(task)

        # 3. float reference: the torch model itself
        t0 = stage("float reference")
        f_img, f_txt = float_embeddings(model, images, bow)
        timings["float_s"] = time.perf_counter() - t0
        progress.advance(task)

        # 4. emulator on the whole test split
        t0 = stage("emulator")
        xs = chip_inputs(images, bow, T, pad)
        run = simulate(qg, xs, backend="emulator")
        e_img = window_counts(run.outputs["image_output"], depth["image_output"], T)
        e_txt = window_counts(run.outputs["text_output"], depth["text_output"], T)
        timings["emulator_s"] = time.perf_counter() - t0
        progress.advance(task)

        # 5. Lava on a few samples; must equal the emulator bit for bit
        t0 = stage("Lava parity")
        n_lava = min(lava_samples, len(labels))
        xl = {k: v[:, :n_lava] for k, v in xs.items()}
        lrun = simulate(qg, xl, backend="lava")
        parity = {
            node: bool(np.array_equal(lrun.counts[node], run.counts[node][:, :n_lava])) for node in lrun.counts
        }
        outputs_equal = all(np.array_equal(lrun.outputs[o], run.outputs[o][:, :n_lava]) for o in lrun.outputs)
        l_img = window_counts(lrun.outputs["image_output"], depth["image_output"], T)
        l_txt = window_counts(lrun.outputs["text_output"], depth["text_output"], T)
        timings["lava_s"] = time.perf_counter() - t0
        progress.advance(task)

        # 6. the similarity search on the chip: the gallery (text embeddings) as an 8-bit Dense layer into
        # integrators; a query's scores are the integrators' final values
        t0 = stage("similarity on chip")
        g_chip = with_similarity_head(graph, e_txt.astype(np.float64), on_chip=True)
        qg_chip = quantize(integer_image_input(g_chip), TARGET, method="percentile", calibration=calib)
        steps_chip = T + synapse_depth(g_chip)["similarity_out"]
        integrate_window(qg_chip, "similarity", start=depth["image_output"] + 1, steps=steps_chip)
        x_chip = chip_inputs(images, bow, T, steps_chip - T)
        chip_run = simulate(qg_chip, x_chip, backend="emulator")
        scores = chip_run.outputs["similarity_out"][-1].reshape(len(labels), -1)
        # the reset that opens the window is Lava's LIFReset: Lava must give the same scores. Only the image
        # encoder and the head: the text encoder is another Lava network, and the parity above covers it
        head = next(c for c in qg_chip.graph.components() if "similarity" in c)
        lchip = simulate(qg_chip.subgraph(head), {k: v[:, :n_lava] for k, v in x_chip.items() if k in head},
                         backend="lava")
        chip_parity = bool(np.array_equal(lchip.outputs["similarity_out"], chip_run.outputs["similarity_out"][:, :n_lava]))
        chip_head = {"image_to_text": recall_from_scores(scores.astype(np.float64), labels, cap_labels),
                     "steps": steps_chip, "integrates_from_step": depth["image_output"] + 1,
                     "lava_equals_emulator": {"queries": n_lava, "equal": chip_parity},
                     "note": "image queries scored on the chip against the caption gallery (emulator); "
                             "the text->image direction would need an image-gallery layer"}
        timings["chip_head_s"] = time.perf_counter() - t0
        progress.advance(task)

        # 7. retrieval metrics, partition, energy, report (host head and chip head)
        t0 = stage("partition + report")
        retrieval = {
            "float": retrieval_metrics(f_img, labels, f_txt, cap_labels),
            "emulator": retrieval_metrics(e_img, labels, e_txt, cap_labels),
            # Lava's queries (a subset) against the full galleries; the parity check shows they equal the emulator's
            "lava": {
                "image_to_text": recall_at_k(l_img, labels[:n_lava], e_txt, cap_labels),
                "text_to_image": recall_at_k(l_txt, cap_labels[:n_lava], e_img, labels),
                "queries": n_lava,
                "parity_with_emulator": {"all_equal": bool(all(parity.values()) and outputs_equal), "nodes": parity},
            },
            "queries": len(labels),
            "emulator_chip_similarity": chip_head,
            "gallery": {"items": len(labels), "embedding_dim": int(e_img.shape[1])},
            "steps": {"T": T, "chip_latency_steps": depth},
            "correct_when": "the retrieved item shows the same digit",
        }
        # the pipeline as deployed by default: encoders on the chip, similarity search on the host (a host node
        # in the graph, so energy and latency per inference are per query)
        g_host = with_similarity_head(graph, e_txt.astype(np.float64), on_chip=False)
        save_graph(g_host, out_dir / "pipeline.nir")  # `spikedeploy inspect out/pipeline.nir` shows the host head
        retrieval["cost_per_query"] = "energy_per_inference_j and latency_per_inference_s (query encoding + host search)"
        rep = build_report(g_host, TARGET, run=run, fidelity=fid, qgraph=qg, sections={RETRIEVAL.key: retrieval}, steps=T + pad)
        heads = {"host": rep, "chip": build_report(g_chip, TARGET, run=chip_run)}
        rep["similarity_head"] = {
            mode: {"cores_used": r["cores_used"], "chips": r["chips"],
                   "energy_per_query_j": r["energy_per_inference_j"],
                   "latency_per_query_s": r["latency_per_inference_s"],
                   "where": "host: cosine search" if mode == "host"
                   else "chip: gallery as 8-bit Dense + integrators",
                   "image_to_text_R@1": (retrieval["emulator"] if mode == "host" else chip_head)["image_to_text"]["R@1"]}
            for mode, r in heads.items()
        }
        rep["pipeline"] = {"timings_s": {k: round(v, 3) for k, v in timings.items()},
                           "export_check": exp.check, "rewrites": g_int.meta.get("rewrites", []),
                           "quantization_warnings": qg.meta.get("warnings", []), "deviations": qg.deviations}
        write_report(rep, out_dir)
        progress.advance(task)
        progress.update(task, description="[bold green]done[/]")

    render_terminal(rep, console)
    _print_retrieval(console, retrieval, rep["similarity_head"])
    console.print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.html'} "
                  f"in {time.perf_counter() - t_start:.1f} s")
    return rep


def _print_retrieval(console: Console, r: dict, heads: dict) -> None:
    par = r["lava"]["parity_with_emulator"]["all_equal"]
    console.print(f"Lava = emulator bit for bit on every node ({r['lava']['queries']} samples): "
                  f"{'[green]yes[/]' if par else '[red]NO[/]'}")
    h = Table(title="similarity head: host or chip")
    for c in ("head", "cores", "energy / query", "latency / query", "image→text R@1", "where"):
        h.add_column(c)
    for mode, v in heads.items():
        h.add_row(mode, str(v["cores_used"]), f"{v['energy_per_query_j'] * 1e6:.3f} µJ",
                  f"{v['latency_per_query_s'] * 1e6:.1f} µs", f"{v['image_to_text_R@1']:.3f}", v["where"])
    console.print(h)


def main(argv=None) -> None:
    pipeline_main(argv, doc=__doc__, out="out", run=run_pipeline, limit_help="use only the first N test items",
                  parity=lambda r: r["retrieval"]["lava"]["parity_with_emulator"]["all_equal"],
                  where="retrieval.lava.parity_with_emulator")


if __name__ == "__main__":
    main()
