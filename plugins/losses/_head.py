"""The ``head`` option the adversarial losses share: which discriminator head the trainer builds on the frozen
teacher's encoder features (``flashbench.method.discriminator``). "paper": the paper's description (blocks
of Conv(4, stride 2) + GroupNorm + SiLU, then a 1x1 conv); "code": the authors' released head (conv3x3 C->64,
SiLU, conv4x4/2 ->128, SiLU, GroupNorm(4), conv4x4 ->1; 0.87M parameters on SD1.5)."""

from __future__ import annotations

HEADS = ("paper", "code")  # flashbench.method.discriminator.HEADS (not imported here: no torch at import)


def check_head(head) -> None:
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)} (the paper's head, or the authors' code's), got {head!r}")
