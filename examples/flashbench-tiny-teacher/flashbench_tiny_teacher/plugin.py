"""The module the ``flashbench`` entry point names: the teacher's options and its registration.

Keep this module light: ``flashbench plugins`` and ``flashbench validate`` import it without building
anything, so torch and diffusers are imported inside ``build``, never here.
"""

from __future__ import annotations

from dataclasses import dataclass

import flashbench


@dataclass(frozen=True)
class TinyUNetConfig:
    """The options a study may set: ``teacher = { name = "tiny-unet", sample_size = 16, seed = 1 }``.

    A frozen dataclass: flashbench checks a study's options against these fields (unknown names and
    wrong types are reported with the file and key before anything runs) and builds it with them.
    """

    sample_size: int = 16  # pixels (this teacher works in pixel space: no VAE)
    channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64)
    cross_attention_dim: int = 32
    max_prompt_bytes: int = 32  # the byte-level text encoder's context
    seed: int = 0  # the weights are drawn from this seed: the same config gives the same teacher
    default_lora_rank: int = 8  # the LoRA rank when a study leaves lora_rank = 0

    def __post_init__(self):
        if self.sample_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"sample_size {self.sample_size} must be divisible by 2**{len(self.block_out_channels) - 1}")


def build(config: TinyUNetConfig, *, device="cpu", dtype=None):
    """The factory: flashbench calls it with the study's options when a run needs the teacher."""
    import torch

    from .teacher import TinyUNetTeacher

    return TinyUNetTeacher(config, device=device, dtype=dtype or torch.float32)


@flashbench.hookimpl
def register_teachers(register):
    register("tiny-unet", build, config=TinyUNetConfig, description="tiny text-to-image UNet built from its config (third-party example)")
