"""The bundled retrieval model on every built-in chip, with its task metric at each chip's precision.

Each chip quantizes the model (percentile calibration on 64 training pairs, as examples/retrieval does for
Loihi 2), runs N test pairs in its own arithmetic in the emulator, and scores image-to-text R@1 over
those N pairs (gallery: their N captions) on the output counts of the T steps after the output's depth.
Usage: python -m benchmarks.compare_retrieval [N] (default 200); writes benchmarks/results/compare_retrieval.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from examples.retrieval import data
from examples.retrieval.evaluate import recall_at_k
from examples.retrieval.model import load_pretrained
from examples.retrieval.pipeline import PIXEL_SCALE, chip_inputs, integer_image_input, to_u8, window_counts
from spikedeploy.cli.jsonout import dumps
from spikedeploy.export import export_model
from spikedeploy.report.compare import DEFAULT_TARGETS, compare_targets, render_terminal
from spikedeploy.simulate.float_ref import synapse_depth


def main(n: int = 200) -> dict:
    model = load_pretrained()
    T = model.num_steps
    test = data.load_split("test")
    images, labels = to_u8(test.images)[:n], test.labels[:n]
    captions, _ = data.sample_captions(test.labels)
    bow = model.vocab.bag_of_words(list(captions[:n]))
    sample = {"image": torch.as_tensor(images[:8].astype(np.float32) / PIXEL_SCALE)[None],
              "text": torch.as_tensor(bow[:8].astype(np.float32))[None]}
    graph = integer_image_input(export_model(model, example_inputs=sample, steps=T, dt=1e-3).graph)
    depth = synapse_depth(graph)
    pad = max(depth[o] for o in graph.outputs)
    train = data.load_split("train")
    idx = np.random.default_rng(0).choice(len(train.labels), 64, replace=False)
    calib = chip_inputs(to_u8(train.images[idx]), model.vocab.bag_of_words(
        [data.caption(int(y), 0) for y in train.labels[idx]]), T, pad)

    def r_at_1(outs) -> float:
        img = window_counts(np.asarray(outs["image_output"]), depth["image_output"], T)
        txt = window_counts(np.asarray(outs["text_output"]), depth["text_output"], T)
        return recall_at_k(img, labels, txt, labels, ks=(1,))["R@1"]

    res = compare_targets(graph, DEFAULT_TARGETS, inputs=chip_inputs(images, bow, T, pad), metric=r_at_1,
                          quantize_options={"method": "percentile", "calibration": calib})
    render_terminal(res, Console(width=200))
    out = Path(__file__).with_name("results") / "compare_retrieval.json"
    out.write_text(dumps({"samples": n, **{k: v for k, v in res.items()}}))
    return res


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
