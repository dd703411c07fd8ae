"""Timestep distributions pi over the K-grid (Sec. 4.2, Fig. 2, Fig. 11).

``flash`` is the paper's phased mixture: pi(i) proportional to sum_m beta_m N(i/K; mu_m, s^2) over grid
points i = 1..K, with modes mu_m = m/K at m in {K/4, K/2, 3K/4, K} and s = sqrt(0.5 / K^2), i.e.
exp(-(i - m)^2) in grid units (Eq. 7). The authors' code spreads half as wide in variance, exp(-2 (i - m)^2)
(s = 0.5 / K): ``spread="code"``; at K = 32 the four modes then hold ~80% of the mass instead of ~58%. The
weights beta change per phase: warm-up [.5, .5, 0, 0], then [.3, .3, .3, .1], [.25, .25, .25, .25],
[.2, .2, .2, .4] (low noise -> full noise). ``uniform``, ``gaussian`` (centred at t = 0.5, by default with
the authors' width 1/sqrt(2K)) and ``sharp`` (the four modes only, no spread) are the ablation's
alternatives (Fig. 5f).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Sequence

import torch

FLASH_PHASE_WEIGHTS: tuple[tuple[float, ...], ...] = (
    (0.5, 0.5, 0.0, 0.0),
    (0.3, 0.3, 0.3, 0.1),
    (0.25, 0.25, 0.25, 0.25),
    (0.2, 0.2, 0.2, 0.4),
)


def mode_indices(num_timesteps: int) -> list[int]:
    k = num_timesteps
    if k % 4:
        raise ValueError(f"K must be a multiple of 4, got {k}")
    return [k // 4, k // 2, 3 * k // 4, k]


class TimestepDistribution(ABC):
    """A probability mass function over grid indices 1..K that may change with the training phase."""

    def __init__(self, num_timesteps: int, phase_length: int, num_phases: int):
        self.num_timesteps, self.phase_length, self.num_phases = num_timesteps, phase_length, num_phases

    def phase(self, iteration: int) -> int:
        return min(iteration // self.phase_length, self.num_phases - 1)

    @abstractmethod
    def pmf(self, phase: int) -> torch.Tensor:
        """Probabilities (float64, length K) of grid indices 1..K."""

    def sample(self, generator: torch.Generator, n: int, iteration: int) -> torch.Tensor:
        probs = self.pmf(self.phase(iteration)).to(torch.float32)
        return torch.multinomial(probs, n, replacement=True, generator=generator) + 1


def _normalise(w: torch.Tensor) -> torch.Tensor:
    return w / w.sum()


# The std of each mode of ``flash`` in grid units: the paper's Eq. 7 has sigma^2 = 0.5/K^2 in t, so
# exp(-(i - m)^2); the authors' code divides the squared distance by ``var = 0.5`` with no factor 2, so
# exp(-2 (i - m)^2), a std of 0.5 grid points.
FLASH_SPREADS = {"paper": math.sqrt(0.5), "code": 0.5}


class FlashMixture(TimestepDistribution):
    def __init__(self, num_timesteps, phase_length, num_phases, weights: Sequence[Sequence[float]] = FLASH_PHASE_WEIGHTS, spread: str = "paper"):
        super().__init__(num_timesteps, phase_length, num_phases)
        self.weights = [tuple(float(b) for b in w) for w in weights]
        if any(len(w) != 4 for w in self.weights):
            raise ValueError("each phase needs 4 mode weights (for K/4, K/2, 3K/4, K)")
        if spread not in FLASH_SPREADS:
            raise ValueError(f"spread must be one of {', '.join(FLASH_SPREADS)}, got {spread!r}")
        self.spread = spread

    def pmf(self, phase: int) -> torch.Tensor:
        k = self.num_timesteps
        beta = self.weights[min(phase, len(self.weights) - 1)]
        grid = torch.arange(1, k + 1, dtype=torch.float64) / k
        std = FLASH_SPREADS[self.spread] / k
        dens = torch.zeros(k, dtype=torch.float64)
        for b, m in zip(beta, mode_indices(k)):
            dens += b * torch.exp(-0.5 * ((grid - m / k) / std) ** 2)
        return _normalise(dens)


class Uniform(TimestepDistribution):
    def pmf(self, phase: int) -> torch.Tensor:
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)


class Gaussian(TimestepDistribution):
    """One Gaussian over the grid, in units of t. The paper gives no width; ``std=None`` takes the authors':
    p(i) proportional to exp(-(i - K/2)^2 / K), i.e. std 1/sqrt(2K) in t (0.125 at K = 32)."""

    def __init__(self, num_timesteps, phase_length, num_phases, mean: float = 0.5, std: float | None = None):
        super().__init__(num_timesteps, phase_length, num_phases)
        self.mean = mean
        self.std = std if std else 1.0 / math.sqrt(2 * num_timesteps)

    def pmf(self, phase: int) -> torch.Tensor:
        grid = torch.arange(1, self.num_timesteps + 1, dtype=torch.float64) / self.num_timesteps
        return _normalise(torch.exp(-0.5 * ((grid - self.mean) / self.std) ** 2))


class Sharp(FlashMixture):
    """Only the four inference timesteps, with the flash phase weights and no Gaussian spread."""

    def pmf(self, phase: int) -> torch.Tensor:
        beta = self.weights[min(phase, len(self.weights) - 1)]
        p = torch.zeros(self.num_timesteps, dtype=torch.float64)
        for b, m in zip(beta, mode_indices(self.num_timesteps)):
            p[m - 1] += b
        return _normalise(p)
