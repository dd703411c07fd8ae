"""``sharp``: only the four inference timesteps (K/4, K/2, 3K/4, K) with the flash phase weights and no
spread to their neighbours (Fig. 5f: worse FID, less diversity). Config: ``weights`` as ``flash``."""
from __future__ import annotations

from flashbench import hookimpl
from flashbench_plugins.timesteps.flash import FlashConfig


def build(config: FlashConfig, *, num_timesteps, phase_length, num_phases):
    from flashbench.method.timesteps import Sharp

    return Sharp(num_timesteps, phase_length, num_phases, weights=config.weights)


@hookimpl
def register_timestep_distributions(register):
    register("sharp", build, config=FlashConfig, description="the 4 inference timesteps only")
