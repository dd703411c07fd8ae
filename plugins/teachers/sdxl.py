"""``sdxl``: Stable Diffusion XL base 1.0 as a Flash teacher (Sec. 5.3.1, Table 3; Appendix A.1 recipe: K = 32,
omega in [3, 13], LPIPS distillation, 108M trainable parameters).

The family's extra inputs: two CLIP text encoders (prompt embedding = both penultimate hidden states
concatenated, pooled embedding from text encoder 2) and the micro-conditioning ``time_ids`` (original
size, crop top-left, target size) from the training resolution. CFG's null conditioning is SDXL's zeroed
negative (``force_zeros_for_empty_prompt`` of the model's ``model_index.json``). The discriminator reads
the UNet's down blocks and mid block, with the added text/micro-conditioning embedding. The student is
exported with ``StableDiffusionXLPipeline.save_lora_weights`` and loads with ``load_lora_weights``.

LoRA: rank 64 on the attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``), as the paper's
released SDXL student: 92.9M LoRA parameters on SDXL's UNet; the paper's 108M counts the trainable
discriminator head (15.7M in its SDXL code) with them.

Config: ``path`` (hub id or local diffusers folder), ``resolution`` (0: the model's native 1024),
``crop_top``/``crop_left`` (micro-conditioning crop, 0/0), ``default_lora_rank`` (64), ``lora_targets``,
``dtype`` (float32 | bfloat16 | float16 weights; float16 keeps the VAE in float32, as its ``force_upcast``
asks), ``variant`` (e.g. "fp16" to read the hub's half-precision files).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class SDXLTeacherConfig:
    path: str = SDXL_BASE
    resolution: int = 0
    crop_top: int = 0
    crop_left: int = 0
    default_lora_rank: int = 64
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    dtype: str = "float32"
    variant: str = ""

    def __post_init__(self):
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # a study file gives a list
        if self.resolution < 0 or self.crop_top < 0 or self.crop_left < 0:
            raise ValueError("resolution, crop_top and crop_left must be >= 0")
        if self.default_lora_rank < 1:
            raise ValueError(f"default_lora_rank must be >= 1, got {self.default_lora_rank}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")


def build(config: SDXLTeacherConfig, *, device="cpu", dtype=None):
    from ._sdxl_family import build_sdxl

    return build_sdxl(config, device=device, dtype=dtype)


@hookimpl
def register_teachers(register):
    register(
        "sdxl", build, config=SDXLTeacherConfig, description="Stable Diffusion XL base 1.0 (two CLIP encoders, pooled embeds, size/crop micro-conditioning)"
    )  # noqa: E501
