"""``flash``: the paper's phased mixture of Gaussians over the K-grid (Sec. 4.2, Fig. 2).

Modes at K/4, K/2, 3K/4, K with spread sqrt(0.5/K^2); weights per phase, low noise -> full noise:
warm-up [.5, .5, 0, 0], then [.3, .3, .3, .1], [.25, .25, .25, .25], [.2, .2, .2, .4]. K and the phase
length come from the study (``num_timesteps``, ``phase_length``).

Config: ``weights`` (one 4-tuple per phase).
"""
from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl


@dataclass(frozen=True)
class FlashConfig:
    weights: tuple = ((0.5, 0.5, 0.0, 0.0), (0.3, 0.3, 0.3, 0.1), (0.25, 0.25, 0.25, 0.25), (0.2, 0.2, 0.2, 0.4))


def build(config: FlashConfig, *, num_timesteps, phase_length, num_phases):
    from flashbench.method.timesteps import FlashMixture

    return FlashMixture(num_timesteps, phase_length, num_phases, weights=config.weights)


@hookimpl
def register_timestep_distributions(register):
    register("flash", build, config=FlashConfig, description="phased K-timestep Gaussian mixture (Sec. 4.2)")
