"""``tcd``: diffusers' ``TCDScheduler`` (Hyper-SD, TCD): x0 and the network's noise taken to
s = (1 - gamma) t_next, then forward-noised to t_next. Variance-preserving teachers only.

Config: ``gamma`` (0.3, the pipelines' default ``eta``; 0: deterministic), ``original_steps`` (50).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flashbench import hookimpl


@dataclass(frozen=True)
class TCDSamplerConfig:
    gamma: float = 0.3
    original_steps: int = 50

    def __post_init__(self):
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not math.isfinite(self.gamma) or not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must be a number in [0, 1], got {self.gamma!r}")
        if isinstance(self.original_steps, bool) or not isinstance(self.original_steps, int) or not 1 <= self.original_steps <= 1000:
            raise ValueError(f"original_steps must be an integer in [1, 1000], got {self.original_steps!r}")


def build(config: TCDSamplerConfig):
    from flashbench.method.samplers import TCDSampler

    return TCDSampler(float(config.gamma), config.original_steps)


@hookimpl
def register_samplers(register):
    register("tcd", build, config=TCDSamplerConfig, description="TCDScheduler: gamma-stochastic steps, TCD timesteps (Hyper-SD)")
