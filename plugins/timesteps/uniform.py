"""``uniform``: every one of the K grid timesteps equally likely, in every phase (Fig. 5f). Config: none."""

from __future__ import annotations

from flashbench import hookimpl


def build(config, *, num_timesteps, phase_length, num_phases):
    from flashbench.method.timesteps import Uniform

    return Uniform(num_timesteps, phase_length, num_phases)


@hookimpl
def register_timestep_distributions(register):
    register("uniform", build, description="uniform over the K grid timesteps")
