"""What the method needs from a dataset plugin: training batches, evaluation prompts, real images."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    prompts: list[str]
    extras: dict = field(default_factory=dict)  # family/task inputs (masks, low-res images, ...)


class Dataset(ABC):
    """Optional, for streaming datasets: ``train_batches(rng, batch_size, rank=0, world=1, start=0)``, an iterator
    of process ``rank`` of ``world``'s own batches of ``batch_size`` from step ``start`` on, derived from ``rng``
    without advancing it. The trainer uses it when present (each process reads only its share) and otherwise
    slices ``train_batch(rng, batch_size * world)``."""

    name: str = "dataset"

    @abstractmethod
    def train_batch(self, rng: np.random.Generator, batch_size: int) -> Batch: ...

    @abstractmethod
    def eval_prompts(self, n: int, seed: int = 0) -> list[str]:
        """A deterministic list of ``n`` evaluation prompts (documented selection)."""

    @abstractmethod
    def reference_images(self, n: int, seed: int = 0) -> torch.Tensor:
        """Real held-out images in [-1, 1] for reference statistics."""

    def eval_extras(self, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Extra conditioning inputs (masks, low-res images, control images) for the ``n`` evaluation
        prompts, batch first; empty for text-only datasets."""
        return {}

    def reference_id(self) -> str:
        """Identifies the reference set for caching statistics."""
        return self.name
