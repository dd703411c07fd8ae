"""``lsgan``: adversarial loss in latent space on the frozen teacher's encoder features + a trained CNN head.

The paper's choice (Eq. 8): L_adv = 1/2 E[(D(fake)-1)^2], L_D = 1/2 E[(D(real)-1)^2 + D(fake)^2] on the head's
raw scores. Real z0 and the student's z~0 are re-noised with the same noise at t' drawn from the study's
``adv_timesteps`` ({0.01, 0.25, 0.5, 0.75} in the paper).

Config: ``scores`` ("raw" | "sigmoid", default "raw": Eq. 8; "sigmoid": the authors' code, the scores through
a sigmoid and no 1/2 in the generator's loss); ``head`` ("paper" | "code", default "paper": the paper's
head; "code": the authors' released head).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl
from flashbench_plugins.losses._head import check_head

SCORES = ("raw", "sigmoid")


@dataclass(frozen=True)
class LSGANConfig:
    scores: str = "raw"
    head: str = "paper"

    def __post_init__(self):
        if self.scores not in SCORES:
            raise ValueError(f"scores must be one of {', '.join(SCORES)} (Eq. 8, or the authors' code), got {self.scores!r}")
        check_head(self.head)


def build(config: LSGANConfig, **context):
    from flashbench.method.losses import LSGAN

    return LSGAN(scores=config.scores, head=config.head)


@hookimpl
def register_losses(register):
    register(
        "lsgan",
        build,
        config=LSGANConfig,
        tags=("adversarial",),
        description="the paper's choice; L_adv = 1/2 E[(D(fake)-1)^2], L_D = 1/2 E[(D(real)-1)^2 + D(fake)^2] (Eq. 8)",
    )
