"""``superres``: a channel-concat super-resolution teacher (Sec. 5.3.2, Appendix A.3), by default the public
x4 upscaler.

``stabilityai/stable-diffusion-x4-upscaler``: a ``UNet2DConditionModel`` with 7 input channels (4 noisy
latents + the 3 RGB channels of the low-res image, at the latents' size), ``class_labels`` = the noise level
of the low-res image's noise augmentation (``low_res_scheduler``, DDPM, levels 0-350), OpenCLIP-H text
prompts, v-prediction (the ``vp-v`` noise process), a VAE that decodes the latents to 4x their size
(scaling 0.08333). Any channel-concat SR UNet in that layout loads from a local folder the same way.

Inputs: the batch images are the high-resolution targets (encoded to latents of size H/4); ``extras``
carries ``low_res`` (B, 3, H/4, W/4) in [-1, 1] (the degraded image). The teacher noises it at
``noise_level`` (the pipeline's default 20), with noise seeded from the image itself so that the
conditional and null inputs of one image carry the same noisy image.

Text: ``text = true`` (default) uses the prompts, CFG's null is the empty prompt with the same low-res image
(the pipeline's CFG). ``text = false`` is the paper's case (an in-house upscaler with no text): every prompt
is empty and CFG's null is the low-res image *zeroed*, the conditioning-dropout null of an image-conditioned
model; guidance then scales the low-res conditioning. Paper recipe (Appendix A.3): omega ~ U[1.2, 1.8]
(``guidance_min``/``guidance_max`` of the study), K = 16, MSE distillation, LSGAN, 256 px -> 1024 px.

Export: a diffusers LoRA loaded by ``StableDiffusionUpscalePipeline.load_lora_weights``. That pipeline takes
no explicit ``timesteps``; with the ``LCMScheduler`` of ``_sd_family.few_step_scheduler`` (trailing,
``original_inference_steps=4``) ``num_inference_steps`` = 1, 2 or 4 lands exactly on the trained timesteps
(999; 999, 499; 999, 749, 499, 249). Call it with ``image=`` (low-res), ``noise_level=``,
``guidance_scale=0``.

The paper states no LoRA size for super-resolution; defaults: rank 128 on the attention projections, as
``sd15`` (25,690,112 parameters on the x4 upscaler's UNet).

Config: ``path``, ``text`` (true), ``noise_level`` (20, 0-350), ``default_lora_rank`` (128), ``lora_targets``,
``dtype`` ("float32", "bfloat16", "float16").
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl
from flashbench.errors import UserError

from ._sd_configs import FLASH_SD15_LORA_RANK, FLASH_SD15_LORA_TARGETS, X4_MAX_NOISE_LEVEL, check_teacher_options

DEFAULT_PATH = "stabilityai/stable-diffusion-x4-upscaler"
#: omega range of the paper's super-resolution recipe (Appendix A.3), for studies at paper scale
PAPER_GUIDANCE = (1.2, 1.8)


@dataclass(frozen=True)
class SuperResTeacherConfig:
    path: str = DEFAULT_PATH
    text: bool = True
    noise_level: int = 20
    default_lora_rank: int = FLASH_SD15_LORA_RANK
    lora_targets: tuple[str, ...] = FLASH_SD15_LORA_TARGETS
    dtype: str = "float32"

    def __post_init__(self):
        check_teacher_options(self.default_lora_rank, self.lora_targets, self.dtype)
        if not 0 <= self.noise_level <= X4_MAX_NOISE_LEVEL:
            raise ValueError(f"noise_level must be in [0, {X4_MAX_NOISE_LEVEL}], got {self.noise_level}")


def build(config: SuperResTeacherConfig, *, device="cpu"):
    from ._sd_family import SDUpscaleTeacher, torch_dtype

    teacher = SDUpscaleTeacher(
        config.path,
        device=device,
        dtype=torch_dtype(config.dtype),
        lora_targets=tuple(config.lora_targets),
        default_lora_rank=config.default_lora_rank,
        text=config.text,
        noise_level=config.noise_level,
    )
    channels = teacher.unet.config.in_channels
    if channels != teacher.latent_shape[0] + 3:
        raise UserError(f"{config.path}: a channel-concat SR UNet has {teacher.latent_shape[0]} + 3 input channels, this one {channels}")
    return teacher


@hookimpl
def register_teachers(register):
    register("superres", build, config=SuperResTeacherConfig, description="x4 super-resolution (channel-concat low-res image, noise level; text optional)")
