"""``flash``: the Flash student's sampler, x0 re-noised to the next trailing timestep with fresh noise
(on rectified flow, the authors' flash flow-matching scheduler). The default ``eval.sampler``. Config: none."""

from __future__ import annotations

from flashbench import hookimpl


def build(config):
    from flashbench.method.samplers import FlashSampler

    return FlashSampler()


@hookimpl
def register_samplers(register):
    register("flash", build, description="x0 re-noised with fresh noise on the trailing grid (Flash; any noise process)")
