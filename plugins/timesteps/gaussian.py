"""``gaussian``: one Gaussian over the K-grid centred at t = 0.5 (Fig. 5f).

The paper gives no width; by default (``std = 0``) it is the authors' code's, p(i) proportional to
exp(-(i - K/2)^2 / K), i.e. std 1/sqrt(2K) in t: 0.125 at K = 32, 0.177 at K = 16, 0.088 at K = 64.

Config: ``mean`` (default 0.5), ``std`` (default 0: the authors' 1/sqrt(2K)), in units of t in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flashbench import hookimpl


def _number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True)
class GaussianConfig:
    mean: float = 0.5
    std: float = 0.0

    def __post_init__(self):
        if not _number(self.mean) or not 0 <= self.mean <= 1:
            raise ValueError(f"mean must be in [0, 1] (a point of t), got {self.mean!r}")
        if not _number(self.std) or self.std < 0:
            raise ValueError(f"std must be > 0, or 0 for the authors' width 1/sqrt(2K), got {self.std!r}")


def build(config: GaussianConfig, *, num_timesteps, phase_length, num_phases):
    from flashbench.method.timesteps import Gaussian

    return Gaussian(num_timesteps, phase_length, num_phases, mean=config.mean, std=config.std or None)


@hookimpl
def register_timestep_distributions(register):
    register("gaussian", build, config=GaussianConfig, description="Gaussian over the grid centred at t=0.5 (std: the authors' 1/sqrt(2K))")
