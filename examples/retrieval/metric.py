"""The retrieval task's sweep plug-in: its metric (`--metric retrieval`) and the files a sweep reads.

    python -m examples.retrieval.metric --out DIR [--samples 64] [--steps 8]
    spikedeploy sweep DIR/model.nir --input image=DIR/image.npy --input text=DIR/text.npy \
        --labels DIR/labels.npy --metric retrieval --targets loihi2,loihi1 --weight-bits 4,6,8 --steps 4,8 -o OUT

The metric is class-level image→text R@1 over the samples' pairs (caption i describes image i; labels: the
digit of each pair), with each embedding the output spike count summed over the run, so it scores the float
reference and every chip's emulated run alike (examples/retrieval/evaluate.py: ties count against the query).
The dataset: the exported model with 8-bit pixel inputs (pipeline.integer_image_input), held-out test
images as 0..255 payloads and their captions' bags of words, the same frame for every step (direct
encoding), time-major [T, B, ...]; a sweep point with T' steps runs the first T'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    __package__ = "examples.retrieval"

from spikedeploy.report.task_metrics import TaskMetric, register_metric  # noqa: E402

from .evaluate import recall_at_k  # noqa: E402


def _r1(graph, labels):
    y = np.asarray(labels).reshape(-1)

    def score(outputs) -> float:
        img, txt = np.asarray(outputs["image_output"]), np.asarray(outputs["text_output"])
        return recall_at_k(img.sum(0).reshape(img.shape[1], -1), y, txt.sum(0).reshape(txt.shape[1], -1), y,
                           ks=(1,))["R@1"]

    return score


METRIC = register_metric(TaskMetric("retrieval", "image→text R@1", _r1))


def write_dataset(out: str | Path, *, samples: int = 64, steps: int = 8) -> dict[str, Path]:
    """model.nir, image.npy, text.npy and labels.npy under `out` (the first `samples` test pairs)."""
    import torch

    from spikedeploy.export import export_model
    from spikedeploy.io.atomic import atomic_write
    from spikedeploy.io.graph_files import save_graph

    from . import data
    from .model import load_pretrained
    from .pipeline import PIXEL_SCALE, integer_image_input, to_u8

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_pretrained()
    test = data.load_split("test")
    images, labels = to_u8(test.images[:samples]), test.labels[:samples]
    captions, _ = data.sample_captions(test.labels)
    bow = model.vocab.bag_of_words(list(captions[:samples]))
    check = {"image": torch.as_tensor(images[:8].astype(np.float32) / PIXEL_SCALE)[None],
             "text": torch.as_tensor(bow[:8].astype(np.float32))[None]}
    graph = export_model(model, example_inputs=check, steps=model.num_steps, dt=1e-3).graph
    files = {"model": out / "model.nir", "image": out / "image.npy", "text": out / "text.npy",
             "labels": out / "labels.npy"}
    save_graph(integer_image_input(graph), files["model"])
    arrays = {"image": np.repeat(images[None].astype(np.float32), steps, 0),
              "text": np.repeat(bow[None].astype(np.float32), steps, 0), "labels": labels.astype(np.int64)}
    for k, a in arrays.items():
        with atomic_write(files[k], "wb") as f:
            np.save(f, a)
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()
    for k, v in write_dataset(a.out, samples=a.samples, steps=a.steps).items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
