"""What the method needs from an evaluator plugin, and the Fréchet distance maths.

Evaluators are streamed: the runner calls ``reset()``, then ``update()`` once per generated batch, then
``compute()``, so no evaluator needs all images in memory at once (5,000 images at 1024 px would not
fit). ``evaluate()`` is the one-batch shortcut.

Uncertainty: after ``compute()`` the runner asks ``replicates(counts)`` for the metric on bootstrap
resamples of the samples seen since ``reset`` (``counts``: a ``(B, n)`` array of how often each sample,
in the order given, is drawn; see :mod:`flashbench.stats`). Evaluators keep only what that needs: the
per-sample scores of a mean metric (:class:`MeanEvaluator`), the generated feature rows of a Fréchet
or kernel metric (:class:`FrechetEvaluator`, :class:`KernelEvaluator`) -- never the images. Subclasses
of those bases get intervals without extra code; an evaluator that returns ``None`` (the default) gets
rows without an interval, and the report says so.
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

    def replicates(self, counts: np.ndarray) -> np.ndarray | None:
        """The metric on each bootstrap resample: ``counts`` is ``(B, n)`` (row b: how often each of the n
        samples since ``reset`` is drawn, rows summing to n); returns ``(B,)`` values, or None when this
        evaluator cannot say (its rows then carry no interval)."""
        return None

    def evaluate(self, images: torch.Tensor, prompts: list[str], *, reference: torch.Tensor | None = None) -> float:
        self.reset()
        self.update(images, prompts, reference=reference)
        return self.compute()


class MeanEvaluator(Evaluator):
    """An evaluator whose metric is the mean of a per-sample score (subclasses call ``add``)."""

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []

    def add(self, per_sample: torch.Tensor) -> None:
        self._scores.append(per_sample.detach().double().cpu().reshape(-1).numpy())

    def sample_scores(self) -> np.ndarray:
        """Every per-sample score since ``reset``, in order."""
        if not getattr(self, "_scores", None):
            raise ValueError(f"{self.metric}: no samples were given")
        return np.concatenate(self._scores)

    def compute(self) -> float:
        return float(self.sample_scores().mean())

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        s = self.sample_scores()
        return np.asarray(counts, dtype=np.float64) @ s / len(s)


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

    def generated_features(self) -> np.ndarray:
        """Every generated feature row since ``reset``, in order."""
        if not getattr(self, "_feats", None):
            raise ValueError(f"{self.metric}: no samples were given")
        return np.concatenate(self._feats)

    def compute(self) -> float:
        if self.reference is None:
            raise RuntimeError(f"{self.metric}: prepare() must compute the reference statistics first")
        mu, sigma = feature_statistics(self.generated_features())
        return frechet(mu, sigma, *self.reference)

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        """Fréchet distances of the resampled generated rows to the fixed reference statistics."""
        from flashbench.stats import frechet_replicates, psd_sqrt

        if self.reference is None:
            raise RuntimeError(f"{self.metric}: prepare() must compute the reference statistics first")
        mu, sigma = self.reference
        cached = getattr(self, "_reference_root", None)
        if cached is None or cached[0] is not sigma:  # S_r^1/2 once per reference, not once per block
            self._reference_root = cached = (sigma, psd_sqrt(sigma))
        return frechet_replicates(self.generated_features(), mu, sigma, counts, cached[1])


class KernelEvaluator(Evaluator):
    """KID (Binkowski et al. 2018): the unbiased squared MMD with the cubic polynomial kernel between
    generated and reference features, unbiased at any n (FID is biased upwards at small n).

    Subclasses provide ``features(images) -> (B, D) numpy`` and set ``self.reference_features`` in
    ``prepare``. The generated rows are kept (for the value and the bootstrap); the kernel sums that
    involve only the reference are computed once per reference."""

    reference_features: np.ndarray | None = None

    @abstractmethod
    def features(self, images: torch.Tensor) -> np.ndarray: ...

    def reset(self) -> None:
        self._feats: list[np.ndarray] = []
        self._gram = None

    def update(self, images, prompts, *, reference=None) -> None:
        self._feats.append(np.asarray(self.features(images), dtype=np.float64))
        self._gram = None

    def generated_features(self) -> np.ndarray:
        if not getattr(self, "_feats", None):
            raise ValueError(f"{self.metric}: no samples were given")
        return np.concatenate(self._feats)

    def _terms(self):
        from flashbench.stats import polynomial_kernel

        if self.reference_features is None:
            raise RuntimeError(f"{self.metric}: prepare() must compute the reference features first")
        ref = self.reference_features
        cached = getattr(self, "_ref_term", None)
        if cached is None or cached[0] is not ref:
            k_rr = polynomial_kernel(ref, ref)
            m = len(ref)
            self._ref_term = cached = (ref, float((k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))))
        if self._gram is None:
            gen = self.generated_features()
            if len(gen) < 2:
                raise ValueError(f"{self.metric}: needs at least 2 generated images, got {len(gen)}")
            self._gram = (polynomial_kernel(gen, gen), polynomial_kernel(gen, ref).sum(1))
        return cached[1], self._gram

    def compute(self) -> float:
        return float(self.replicates(np.ones((1, len(self.generated_features())), dtype=np.int32))[0])

    def replicates(self, counts: np.ndarray) -> np.ndarray:
        from flashbench.stats import kid_replicates

        ref_term, (gram, cross) = self._terms()
        return kid_replicates(self.generated_features(), self.reference_features, counts, gram=gram, ref_term=ref_term, cross=cross)


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
