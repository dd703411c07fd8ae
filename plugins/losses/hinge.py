"""``hinge``: adversarial loss in latent space on the frozen teacher's encoder features + a trained CNN head.

L_adv = -E[D(fake)], L_D = E[relu(1-D(real))] + E[relu(1+D(fake))]. Real z0 and the student's z~0 are re-noised
with the same noise at t' drawn from the study's ``adv_timesteps`` ({0.01, 0.25, 0.5, 0.75} in the paper).

Config: ``head`` ("paper" | "code", default "paper": the paper's head; "code": the authors' released head).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl
from flashbench_plugins.losses._head import check_head


@dataclass(frozen=True)
class HingeConfig:
    head: str = "paper"

    def __post_init__(self):
        check_head(self.head)


def build(config: HingeConfig, **context):
    from flashbench.method.losses import Hinge

    return Hinge(head=config.head)


@hookimpl
def register_losses(register):
    register("hinge", build, config=HingeConfig, tags=("adversarial",), description="L_adv = -E[D(fake)], L_D = E[relu(1-D(real))] + E[relu(1+D(fake))]")
