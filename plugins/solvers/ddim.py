"""``ddim``: the first-order DDIM step in data-prediction form (exact final step onto t = 0). Config: none."""

from __future__ import annotations

from flashbench import hookimpl


def build(config):
    from flashbench.method.solvers import DDIMSolver

    return DDIMSolver()


@hookimpl
def register_solvers(register):
    register("ddim", build, description="DDIM (first order)")
