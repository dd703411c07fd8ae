"""``mse``: the distillation loss of Eq. (6) as a mean squared error between the student's one-step
prediction and the teacher's multi-step ODE solution, in latent space (the paper's choice for SD1.5,
inpainting, super-resolution and face-swap). Config: none."""

from __future__ import annotations

from flashbench import hookimpl


def build(config, **context):
    from flashbench.method.losses import MSEDistillation

    return MSEDistillation()


@hookimpl
def register_losses(register):
    register("mse", build, tags=("distillation",), description="MSE between student and teacher z~0 (Eq. 6)")
