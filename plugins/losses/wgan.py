"""``wgan``: adversarial loss in latent space on the frozen teacher's encoder features + a trained CNN head.

L_adv = -E[D(fake)], L_D = E[D(fake)] - E[D(real)] (critic, no gradient penalty). Real z0 and the student's z~0 are re-noised with the same noise at t' drawn from the study's
``adv_timesteps`` ({0.01, 0.25, 0.5, 0.75} in the paper). Config: none.
"""
from __future__ import annotations

from flashbench import hookimpl


def build(config, **context):
    from flashbench.method.losses import WGAN

    return WGAN()


@hookimpl
def register_losses(register):
    register("wgan", build, tags=("adversarial",), description="L_adv = -E[D(fake)], L_D = E[D(fake)] - E[D(real)] (critic, no gradient penalty)")
