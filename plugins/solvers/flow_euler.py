"""``flow-euler``: the Euler step of a rectified-flow teacher, x_next = x + (sigma_next - sigma) u, as diffusers'
``FlowMatchEulerDiscreteScheduler`` (SD3, Flux); rectified-flow teachers only (``ddim`` on such a teacher is
the same step in data-prediction form, ``dpm-solver`` its second-order multistep). Config: none."""

from __future__ import annotations

from flashbench import hookimpl


def build(config):
    from flashbench.method.solvers import FlowEulerSolver

    return FlowEulerSolver()


@hookimpl
def register_solvers(register):
    register("flow-euler", build, description="Euler on the flow velocity (FlowMatchEuler; rectified-flow teachers)")
