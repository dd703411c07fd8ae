"""``inpaint``: a Stable-Diffusion inpainting teacher (Sec. 5.3.2, Appendix A.2): masked image + mask + prompt.

The UNet takes 9 input channels, concatenated in this order: the 4 noisy latents, the mask at latent size
(1 = the region to fill) and the 4 VAE latents of the masked image; it predicts epsilon for the 4 latent
channels. The paper distils an *in-house* SDXL-like inpainting model; this plugin is SD-family only
(SD1.5-architecture inpainting UNets such as the public one below, or your own in that layout). An SDXL
inpainting UNet needs SDXL's two text encoders and micro-conditioning: that is the ``sdxl`` teacher's
family, not this one.

Inputs, in the batch's ``extras`` (batch first): ``mask`` (B, 1, H, W) in {0, 1}, 1 = inpaint, and ``image``
(B, 3, H, W) in [-1, 1], the original image (the same tensor as the batch images), from which the teacher
builds the masked image ``image * (1 - mask)``; or ``masked_image`` instead of ``image`` (what the
``inpaint`` task of the dataset plugins provides: ``mask`` + ``masked_image``). The teacher encodes
the masked image with the VAE and resizes the mask to the latents (nearest), as
``StableDiffusionInpaintPipeline`` does. CFG's null: the same mask and masked image with the empty prompt.

Default weights: ``stable-diffusion-v1-5/stable-diffusion-inpainting`` (formerly
``runwayml/stable-diffusion-inpainting``), or a local diffusers folder. The exported LoRA loads with
``StableDiffusionInpaintPipeline.load_lora_weights``; sample with ``image=``, ``mask_image=``, an
``LCMScheduler(timestep_spacing="trailing")``, ``timesteps=[999, 749, 499, 249][:n]``, ``guidance_scale=0``.

Paper recipe (Appendix A.2): K = 16, MSE distillation, LSGAN, omega ~ U[3, 13] (Sec. 5.3.2 says [5, 10]),
512 px. The paper gives no LoRA size for inpainting; the defaults are the ``sd15`` ones (rank 128 on the
attention projections: 25,509,888 parameters on this UNet, whose only difference is ``conv_in``).

Config: ``path``, ``default_lora_rank`` (128), ``lora_targets``, ``dtype`` ("float32", "bfloat16", "float16").
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl
from flashbench.errors import UserError

from ._sd_configs import FLASH_SD15_LORA_RANK, FLASH_SD15_LORA_TARGETS, check_teacher_options

DEFAULT_PATH = "stable-diffusion-v1-5/stable-diffusion-inpainting"


@dataclass(frozen=True)
class InpaintTeacherConfig:
    path: str = DEFAULT_PATH
    default_lora_rank: int = FLASH_SD15_LORA_RANK
    lora_targets: tuple[str, ...] = FLASH_SD15_LORA_TARGETS
    dtype: str = "float32"

    def __post_init__(self):
        check_teacher_options(self.default_lora_rank, self.lora_targets, self.dtype)


def build(config: InpaintTeacherConfig, *, device="cpu"):
    from ._sd_family import SDInpaintTeacher, torch_dtype

    teacher = SDInpaintTeacher(
        config.path,
        device=device,
        dtype=torch_dtype(config.dtype),
        lora_targets=tuple(config.lora_targets),
        default_lora_rank=config.default_lora_rank,
    )
    channels = teacher.unet.config.in_channels
    if channels != 2 * teacher.latent_shape[0] + 1:
        raise UserError(f"{config.path}: an inpainting UNet has 2 x {teacher.latent_shape[0]} + 1 input channels, this one {channels}")
    return teacher


@hookimpl
def register_teachers(register):
    register("inpaint", build, config=InpaintTeacherConfig, description="SD inpainting (9-channel UNet: latents + mask + masked-image latents, prompt)")
