"""``gaussian``: one Gaussian over the K-grid centred at t = 0.5 (Fig. 5f).

Config: ``mean`` (default 0.5), ``std`` (default 0.25), in units of t in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl


@dataclass(frozen=True)
class GaussianConfig:
    mean: float = 0.5
    std: float = 0.25


def build(config: GaussianConfig, *, num_timesteps, phase_length, num_phases):
    from flashbench.method.timesteps import Gaussian

    return Gaussian(num_timesteps, phase_length, num_phases, mean=config.mean, std=config.std)


@hookimpl
def register_timestep_distributions(register):
    register("gaussian", build, config=GaussianConfig, description="Gaussian over the grid centred at t=0.5")
