"""``lsgan``: adversarial loss in latent space on the frozen teacher's encoder features + a trained CNN head.

the paper's choice; L_adv = 1/2 E[(D(fake)-1)^2], L_D = 1/2 E[(D(real)-1)^2 + D(fake)^2] (Eq. 8). Real z0 and the student's z~0 are re-noised with the same noise at t' drawn from the study's
``adv_timesteps`` ({0.01, 0.25, 0.5, 0.75} in the paper). Config: none.
"""
from __future__ import annotations

from flashbench import hookimpl


def build(config, **context):
    from flashbench.method.losses import LSGAN

    return LSGAN()


@hookimpl
def register_losses(register):
    register("lsgan", build, tags=("adversarial",), description="the paper's choice; L_adv = 1/2 E[(D(fake)-1)^2], L_D = 1/2 E[(D(real)-1)^2 + D(fake)^2] (Eq. 8)")
