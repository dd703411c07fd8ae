"""``dpm-solver``: DPM-Solver++(2M), the multistep solver the authors use for the teacher target;
first order on a sample's first step and on the final step onto t = 0. Config: none."""

from __future__ import annotations

from flashbench import hookimpl


def build(config):
    from flashbench.method.solvers import DPMSolverPP2M

    return DPMSolverPP2M()


@hookimpl
def register_solvers(register):
    register("dpm-solver", build, description="DPM-Solver++(2M) multistep")
