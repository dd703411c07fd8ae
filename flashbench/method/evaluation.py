"""What the method needs from an evaluator plugin, and the Fréchet distance maths."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class Evaluator(ABC):
    metric: str = "metric"
    higher_is_better: bool = False
    needs_teacher_reference: bool = False  # LPIPS-to-teacher compares with the teacher's many-step samples

    def prepare(self, dataset, num_samples: int, seed: int = 0) -> None:
        """Compute (and cache) anything that depends only on the dataset, e.g. reference statistics."""

    @abstractmethod
    def evaluate(self, images: torch.Tensor, prompts: list[str], *, reference: torch.Tensor | None = None) -> float:
        """Score generated images (B, 3, H, W) in [-1, 1] for their prompts."""


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)
