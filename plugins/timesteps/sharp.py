"""``sharp``: only the four inference timesteps (K/4, K/2, 3K/4, K) with the flash phase weights and no
spread to their neighbours (Fig. 5f: worse FID, less diversity). Config: ``weights`` as ``flash``."""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl
from flashbench_plugins.timesteps.flash import FlashConfig, check_weights


@dataclass(frozen=True)
class SharpConfig:
    weights: tuple = FlashConfig.weights  # no ``spread``: sharp has none

    def __post_init__(self):
        check_weights(self.weights)


def build(config: SharpConfig, *, num_timesteps, phase_length, num_phases):
    from flashbench.method.timesteps import Sharp

    return Sharp(num_timesteps, phase_length, num_phases, weights=config.weights)


@hookimpl
def register_timestep_distributions(register):
    register("sharp", build, config=SharpConfig, description="the 4 inference timesteps only")
