"""``trailing-euler``: deterministic steps on the trailing grid (DDIM; Euler on the probability-flow ODE, as
SDXL-Lightning and SDXL-Turbo are published with ``EulerDiscreteScheduler(timestep_spacing="trailing")``, and
on rectified flow ``FlowMatchEulerDiscreteScheduler``). Config: none."""

from __future__ import annotations

from flashbench import hookimpl


def build(config):
    from flashbench.method.samplers import TrailingEulerSampler

    return TrailingEulerSampler()


@hookimpl
def register_samplers(register):
    register("trailing-euler", build, description="deterministic Euler/DDIM on the trailing grid (SDXL-Lightning, SDXL-Turbo)")
