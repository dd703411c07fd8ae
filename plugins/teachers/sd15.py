"""``sd15``: Stable Diffusion 1.5, the teacher of the paper's main text-to-image results (Tables 1-2, Fig. 5).

A ``UNet2DConditionModel`` (859.5M parameters, 64x64x4 latents for 512 px images) conditioned on CLIP ViT-L/14
text hidden states, SD's VAE, the scaled-linear DDPM schedule (epsilon prediction). CFG's null is the empty
prompt; the discriminator reads the UNet's down blocks + mid block (1280 channels at 8x8, Sec. 4.3).

Default weights: ``stable-diffusion-v1-5/stable-diffusion-v1-5`` on the Hugging Face hub (the model formerly
published as ``runwayml/stable-diffusion-v1-5``), or a local diffusers folder. The exported student is a
diffusers LoRA that ``StableDiffusionPipeline.load_lora_weights`` loads; sample it with an
``LCMScheduler(timestep_spacing="trailing")`` and ``timesteps=[999, 749, 499, 249][:n]``, ``guidance_scale=0``.

LoRA defaults: rank 128 on the attention projections ``to_q, to_k, to_v, to_out.0``, as the official Flash
SD1.5 training code (gojasper/flash-diffusion, ``configs/flash_sd.yaml``): 25,509,888 trainable LoRA
parameters on the real UNet. The paper's "26.4M trainable parameters" counts the discriminator head too
(the official head, conv3x3 1280->64 + conv4x4/2 + GroupNorm + conv4x4, has 870,720: 26,380,608 in all).
``lora_targets`` widens the adapter, e.g. rank 64 on attention + feed-forward + proj_in/proj_out is 27.1M.

Config: ``path`` (hub id or folder), ``default_lora_rank`` (128), ``lora_targets``, ``dtype`` ("float32",
"bfloat16", "float16": the weights' dtype; mixed precision is the study's ``mixed_precision``).
"""
from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from ._sd_configs import FLASH_SD15_LORA_RANK, FLASH_SD15_LORA_TARGETS, check_teacher_options

DEFAULT_PATH = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass(frozen=True)
class SD15TeacherConfig:
    path: str = DEFAULT_PATH
    default_lora_rank: int = FLASH_SD15_LORA_RANK
    lora_targets: tuple[str, ...] = FLASH_SD15_LORA_TARGETS
    dtype: str = "float32"

    def __post_init__(self):
        check_teacher_options(self.default_lora_rank, self.lora_targets, self.dtype)


def build(config: SD15TeacherConfig, *, device="cpu"):
    from ._sd_family import SDFamilyTeacher, torch_dtype

    return SDFamilyTeacher(
        config.path, device=device, dtype=torch_dtype(config.dtype), lora_targets=tuple(config.lora_targets),
        default_lora_rank=config.default_lora_rank,
    )


@hookimpl
def register_teachers(register):
    register("sd15", build, config=SD15TeacherConfig, description="Stable Diffusion 1.5 text-to-image (CLIP text, 512 px, LoRA r128 on attention)")
