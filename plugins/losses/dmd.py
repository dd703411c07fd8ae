"""``dmd``: distribution matching distillation (Eq. 9) with the student itself as the fake score.

The student's z~0 is re-noised at t'' ~ U[0, 1]; the teacher with CFG gives the real score, the student
(no grad, no extra network) the fake one; the gradient -(s_teacher - s_student) is applied through an
MSE to a stop-gradient target, normalised per sample as in DMD: the mean squared error with no 1/2, as in
the authors' code, so lambda_DMD weighs the authors' gradient. See :func:`flashbench.method.losses.dmd_loss`.
Config: none.
"""

from __future__ import annotations

from flashbench import hookimpl


def build(config, **context):
    from flashbench.method.losses import DMDLoss

    return DMDLoss()


@hookimpl
def register_losses(register):
    register("dmd", build, tags=("distribution_matching",), description="DMD with the student as fake score (Eq. 9)")
