"""``lcm``: diffusers' ``LCMScheduler`` (LCM, LCM-LoRA): the boundary condition c_skip x + c_out x0, fresh-noise
re-noising, timesteps skipping over an ``original_steps``-step grid. Variance-preserving teachers only.

Config: ``original_steps`` (50, LCMScheduler's ``original_inference_steps``), ``timestep_scaling`` (10.0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flashbench import hookimpl


@dataclass(frozen=True)
class LCMSamplerConfig:
    original_steps: int = 50
    timestep_scaling: float = 10.0

    def __post_init__(self):
        if isinstance(self.original_steps, bool) or not isinstance(self.original_steps, int) or not 1 <= self.original_steps <= 1000:
            raise ValueError(f"original_steps must be an integer in [1, 1000], got {self.original_steps!r}")
        if not isinstance(self.timestep_scaling, (int, float)) or not math.isfinite(self.timestep_scaling) or self.timestep_scaling <= 0:
            raise ValueError(f"timestep_scaling must be a positive number, got {self.timestep_scaling!r}")


def build(config: LCMSamplerConfig):
    from flashbench.method.samplers import LCMSampler

    return LCMSampler(config.original_steps, float(config.timestep_scaling))


@hookimpl
def register_samplers(register):
    register("lcm", build, config=LCMSamplerConfig, description="LCMScheduler: boundary condition, fresh noise, LCM timesteps (LCM-LoRA)")
