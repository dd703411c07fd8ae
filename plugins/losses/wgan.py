"""``wgan``: adversarial loss in latent space on the frozen teacher's encoder features + a trained CNN head.

L_adv = -E[D(fake)], L_D = E[D(fake)] - E[D(real)] (a critic). Real z0 and the student's z~0 are re-noised with
the same noise at t' drawn from the study's ``adv_timesteps`` ({0.01, 0.25, 0.5, 0.75} in the paper). The
critic is kept Lipschitz by weight clipping (Arjovsky et al., which the paper cites): every parameter of the
head is clipped to [-clip, clip] before each critic step, as in the authors' code.

Config: ``clip`` (default 0.01, the authors' value; 0 trains an unconstrained critic); ``head`` ("paper" |
"code", default "paper": the paper's head; "code": the authors' released head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flashbench import hookimpl
from flashbench_plugins.losses._head import check_head


@dataclass(frozen=True)
class WGANConfig:
    clip: float = 0.01
    head: str = "paper"

    def __post_init__(self):
        check_head(self.head)
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or not math.isfinite(self.clip) or self.clip < 0:
            raise ValueError(f"clip must be a finite number >= 0 (0: no clipping), got {self.clip!r}")


def build(config: WGANConfig, **context):
    from flashbench.method.losses import WGAN

    return WGAN(clip=config.clip, head=config.head)


@hookimpl
def register_losses(register):
    register(
        "wgan",
        build,
        config=WGANConfig,
        tags=("adversarial",),
        description="L_adv = -E[D(fake)], L_D = E[D(fake)] - E[D(real)] (critic, weights clipped to +-clip)",
    )
