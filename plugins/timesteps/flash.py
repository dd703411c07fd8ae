"""``flash``: the paper's phased mixture of Gaussians over the K-grid (Sec. 4.2, Fig. 2).

Modes at K/4, K/2, 3K/4, K; weights per phase, low noise -> full noise: warm-up [.5, .5, 0, 0], then
[.3, .3, .3, .1], [.25, .25, .25, .25], [.2, .2, .2, .4]. K and the phase length come from the study
(``num_timesteps``, ``phase_length``). Each mode spreads to its neighbours: with ``spread = "paper"`` (the
default) as Eq. 7, std sqrt(0.5/K^2) in t, i.e. exp(-(i - m)^2) in grid units, ~58% of the mass on the four
modes at K = 32; with ``spread = "code"`` as the authors' released code, exp(-2 (i - m)^2), ~80%.

Config: ``weights`` (one 4-tuple per phase), ``spread`` ("paper" | "code", default "paper").
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

SPREADS = ("paper", "code")  # flashbench.method.timesteps.FLASH_SPREADS (not imported here: no torch at import)


def check_weights(weights) -> None:
    if not isinstance(weights, (tuple, list)) or not weights or any(not isinstance(w, (tuple, list)) or len(w) != 4 for w in weights):
        raise ValueError(f"weights must be one 4-tuple per phase (for K/4, K/2, 3K/4, K), got {weights!r}")
    for w in weights:
        if any(isinstance(b, bool) or not isinstance(b, (int, float)) or not b >= 0 for b in w) or not sum(w) > 0:
            raise ValueError(f"mode weights must be numbers >= 0 with a positive sum, got {w!r}")


@dataclass(frozen=True)
class FlashConfig:
    weights: tuple = ((0.5, 0.5, 0.0, 0.0), (0.3, 0.3, 0.3, 0.1), (0.25, 0.25, 0.25, 0.25), (0.2, 0.2, 0.2, 0.4))
    spread: str = "paper"

    def __post_init__(self):
        check_weights(self.weights)
        if self.spread not in SPREADS:
            raise ValueError(f"spread must be one of {', '.join(SPREADS)} (Eq. 7, or the authors' code), got {self.spread!r}")


def build(config: FlashConfig, *, num_timesteps, phase_length, num_phases):
    from flashbench.method.timesteps import FlashMixture

    return FlashMixture(num_timesteps, phase_length, num_phases, weights=config.weights, spread=config.spread)


@hookimpl
def register_timestep_distributions(register):
    register("flash", build, config=FlashConfig, description="phased K-timestep Gaussian mixture (Sec. 4.2; spread: Eq. 7 or the authors' code)")
