"""What the method needs from an evaluator plugin, and the Fréchet distance maths.

Evaluators are streamed: the runner calls ``reset()``, then ``update()`` once per generated batch, then
``compute()``, so no evaluator needs all images in memory at once (5,000 images at 1024 px would not
fit). ``evaluate()`` is the one-batch shortcut.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class Evaluator(ABC):
    metric: str = "metric"
    higher_is_better: bool = False
    needs_teacher_reference: bool = False  # LPIPS-to-teacher compares with the teacher's many-step samples

    def prepare(self, dataset, num_samples: int, seed: int = 0) -> None:
        """Compute (or load from cache) what depends only on the dataset, e.g. reference statistics."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the batches seen so far."""

    @abstractmethod
    def update(self, images: torch.Tensor, prompts: list[str], *, reference: torch.Tensor | None = None) -> None:
        """Add generated images (B, 3, H, W) in [-1, 1] for their prompts (and the teacher's reference images)."""

    @abstractmethod
    def compute(self) -> float:
        """The metric over every batch since ``reset``."""

    def evaluate(self, images: torch.Tensor, prompts: list[str], *, reference: torch.Tensor | None = None) -> float:
        self.reset()
        self.update(images, prompts, reference=reference)
        return self.compute()


class MeanEvaluator(Evaluator):
    """An evaluator whose metric is the mean of a per-sample score."""

    def reset(self) -> None:
        self._sum, self._count = 0.0, 0

    def add(self, per_sample: torch.Tensor) -> None:
        self._sum += float(per_sample.double().sum())
        self._count += int(per_sample.numel())

    def compute(self) -> float:
        if not self._count:
            raise ValueError(f"{self.metric}: no samples were given")
        return self._sum / self._count


class FrechetEvaluator(Evaluator):
    """A Fréchet distance between the features of generated and reference images (via clean-fid's maths).

    Subclasses provide ``features(images) -> (B, D) numpy`` and set ``self.reference`` (mu, sigma) in
    ``prepare``; generated features are accumulated batch by batch.
    """

    reference: tuple[np.ndarray, np.ndarray] | None = None

    @abstractmethod
    def features(self, images: torch.Tensor) -> np.ndarray: ...

    def reset(self) -> None:
        self._feats: list[np.ndarray] = []

    def update(self, images, prompts, *, reference=None) -> None:
        self._feats.append(self.features(images))

    def compute(self) -> float:
        if self.reference is None:
            raise RuntimeError(f"{self.metric}: prepare() must compute the reference statistics first")
        mu, sigma = feature_statistics(np.concatenate(self._feats))
        return frechet(mu, sigma, *self.reference)


def frechet(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """clean-fid's Fréchet distance. With fewer samples than feature dimensions the covariances are
    singular and scipy's sqrtm of their product can come back with an imaginary part clean-fid refuses;
    then the same quantity is computed from tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix whose
    eigenvalues are real (the two agree to ~1e-10 where both work)."""
    from cleanfid.fid import frechet_distance

    try:
        return float(frechet_distance(mu1, sigma1, mu2, sigma2))
    except ValueError as exc:
        if "Imaginary component" not in str(exc):
            raise
    return frechet_psd(mu1, sigma1, mu2, sigma2)


def frechet_psd(mu1, sigma1, mu2, sigma2) -> float:
    root1 = _psd_sqrt(sigma1)
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)
