"""Coloured digits: scikit-learn's 1,797 handwritten 8x8 digits, upsampled to 16x16 and painted.

A sample is ``(image, prompt)``: the image is (3, 16, 16) in [-1, 1], a digit of intensity ``d`` painted
in one of :data:`COLOURS` on black, the prompt ``"a <colour> digit <name>"``. Colours are drawn per
sample, so 10 digits x 6 colours = 60 prompts. The split is fixed: every 5th digit (by index) is held
out for evaluation (reference statistics, CLIP checks); the rest trains the teacher and the students.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.15, 0.1),
    "green": (0.15, 0.9, 0.2),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "cyan": (0.1, 0.9, 0.95),
    "magenta": (0.95, 0.15, 0.9),
}
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RESOLUTION = 16


def prompt_for(digit: int, colour: str) -> str:
    return f"a {colour} digit {DIGIT_NAMES[digit]}"


def all_prompts() -> list[str]:
    """The 60 prompts of the world, digit-major: index = digit * 6 + colour index."""
    return [prompt_for(d, c) for d in range(10) for c in COLOURS]


def parse_prompt(prompt: str) -> tuple[int, str]:
    words = prompt.split()
    return DIGIT_NAMES.index(words[-1]), words[1]


@dataclass(frozen=True)
class DigitSplit:
    intensity: np.ndarray  # (N, 16, 16) float32 in [0, 1]
    digits: np.ndarray  # (N,) int64


def load_split(split: str) -> DigitSplit:
    """``split`` is ``"train"`` or ``"heldout"`` (every 5th digit)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = raw.images.astype(np.float32) / 16.0
    keep = (np.arange(len(images)) % 5 == 0) if split == "heldout" else (np.arange(len(images)) % 5 != 0)
    images, digits = images[keep], raw.target[keep].astype(np.int64)
    # bilinear 8x8 -> 16x16, align_corners=False, done once with numpy-free torch-free maths
    up = _upsample2x(images)
    return DigitSplit(intensity=up, digits=digits)


def _upsample2x(images: np.ndarray) -> np.ndarray:
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    out = np.empty((n, 2 * h, 2 * w), dtype=np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            # output pixel (2i+dy, 2j+dx) sits at input coordinate i + (dy - 0.5) / 2
            oy, ox = (-1 if dy == 0 else 1), (-1 if dx == 0 else 1)
            a = padded[:, 1 : h + 1, 1 : w + 1]
            b = padded[:, 1 + oy : h + 1 + oy, 1 : w + 1]
            c = padded[:, 1 : h + 1, 1 + ox : w + 1 + ox]
            d = padded[:, 1 + oy : h + 1 + oy, 1 + ox : w + 1 + ox]
            out[:, dy::2, dx::2] = 0.5625 * a + 0.1875 * b + 0.1875 * c + 0.0625 * d
    return out


def paint(intensity: np.ndarray, colour_idx: np.ndarray) -> np.ndarray:
    """(N,16,16) intensities and (N,) colour indices -> (N,3,16,16) images in [-1, 1]."""
    rgb = np.asarray(list(COLOURS.values()), dtype=np.float32)[colour_idx]  # (N, 3)
    return (2.0 * intensity[:, None] * rgb[:, :, None, None] - 1.0).astype(np.float32)


class ColouredDigits:
    """Draws batches of (images, prompts, digit, colour) from a split with a seeded numpy generator."""

    def __init__(self, split: str = "train", shift: int = 1):
        self.data = load_split(split)
        self.shift = shift

    def __len__(self) -> int:
        return len(self.data.digits)

    def batch(self, rng: np.random.Generator, size: int, *, digits=None, colours=None):
        if digits is None:
            idx = rng.integers(0, len(self), size)
        else:
            # one example of each requested digit, drawn from that digit's examples
            idx = np.array([rng.choice(np.flatnonzero(self.data.digits == d)) for d in digits])
        colour_idx = rng.integers(0, len(COLOURS), size) if colours is None else np.asarray(colours)
        inten = self.data.intensity[idx]
        if self.shift:
            inten = _random_shift(inten, rng, self.shift)
        images = paint(inten, colour_idx)
        names = list(COLOURS)
        prompts = [prompt_for(int(d), names[int(c)]) for d, c in zip(self.data.digits[idx], colour_idx)]
        return images, prompts, self.data.digits[idx], colour_idx

    def fixed(self, n: int, seed: int = 0):
        """A deterministic evaluation set of ``n`` painted digits (no shift), cycling the split."""
        rng = np.random.default_rng(seed)
        idx = np.arange(n) % len(self)
        colour_idx = rng.integers(0, len(COLOURS), n)
        images = paint(self.data.intensity[idx], colour_idx)
        names = list(COLOURS)
        prompts = [prompt_for(int(d), names[int(c)]) for d, c in zip(self.data.digits[idx], colour_idx)]
        return images, prompts


def _random_shift(x: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    out = np.zeros_like(x)
    sy, sx = rng.integers(-k, k + 1, size=2)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - sy), slice(sy, h)) if sy >= 0 else (slice(-sy, h), slice(0, h + sy))
    xs, xd = (slice(0, w - sx), slice(sx, w)) if sx >= 0 else (slice(-sx, w), slice(0, w + sx))
    out[:, yd, xd] = x[:, ys, xs]
    return out
