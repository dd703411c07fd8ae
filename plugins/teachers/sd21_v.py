"""``sd21-v``: Stable Diffusion 2.1 at 768 px, a v-prediction teacher (not in the paper, which distils SD1.5, SDXL and
PixArt-alpha; issue 15, "today's teachers"). Its recipe, ``studies/recipe_sd21_v.toml``, is the paper's SD1.5
recipe (Appendix A) carried over, not a published one.

A ``UNet2DConditionModel`` (865.9M parameters, 96x96x4 latents for 768 px images; linear proj_in/proj_out,
attention upcast to float32) conditioned on the hidden states of OpenCLIP ViT-H/14's text tower, loaded as a
``CLIPTextModel`` (23 layers: SD2 reads the penultimate one; its tokenizer pads with "!"), SD's VAE, and SD1.5's
scaled-linear DDPM betas with ``prediction_type = "v_prediction"``. The teacher is the SD family's
(:class:`~flashbench_plugins.teachers._sd_family.SDFamilyTeacher`), which reads ``prediction_type`` from the
scheduler config and declares the matching noise process: ``vp-v`` here, so the UNet's raw output is v and
the method's x0 is alpha x_t - sigma v (``flashbench.method.noise.VPV``). A folder whose scheduler says
``epsilon`` (``stabilityai/stable-diffusion-2-1-base``, 512 px) loads as a VP-epsilon teacher: the scheduler
config decides, not the plugin's name. CFG's null is the empty prompt; the discriminator reads the UNet's
down blocks + mid block (1280 channels at 12x12).

Top of the schedule. SD2.1's schedule does not end at zero SNR: at t = 999, alpha_T = 0.0683, sigma_T = 0.9977
(log-SNR -5.37). The student shares the teacher's v-parametrisation, and at full noise its x0 = alpha x_T - sigma v
weighs the network's output by sigma_T ~ 1: stable, nothing amplified. An epsilon parametrisation of the same
output would give x0 = (x_T - sigma eps) / alpha, multiplying the output (and its error) by sigma/alpha = 14.6
at t = 999 -- and dividing by zero on a zero-terminal-SNR schedule (``rescale_betas_zero_snr``), where v stays
finite (x0 = -v). ``tests/test_teacher_sd21_v.py`` checks both.

Default weights: ``stabilityai/stable-diffusion-2-1`` on the Hugging Face hub, or a local diffusers folder. The
exported student is a diffusers LoRA that ``StableDiffusionPipeline.load_lora_weights`` loads; sample it with
``_sd_family.few_step_scheduler`` (an ``LCMScheduler`` over the teacher's config, v-prediction included, trailing)
and ``timesteps=[999, 749, 499, 249][:n]``, ``guidance_scale=0``.

LoRA defaults: as ``sd15`` (the official Flash SD1.5 LoRA), rank 128 on the attention projections ``to_q, to_k,
to_v, to_out.0``: 26,558,464 trainable parameters on SD2.1's UNet (SD1.5's 25.51M plus the wider cross-attention
keys and values of its 1024-dim text states).

Config: ``path`` (hub id or folder), ``default_lora_rank`` (128), ``lora_targets``, ``dtype`` ("float32",
"bfloat16", "float16": the weights' dtype; mixed precision is the study's ``mixed_precision``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from ._sd_configs import FLASH_SD15_LORA_RANK, FLASH_SD15_LORA_TARGETS, check_teacher_options

DEFAULT_PATH = "stabilityai/stable-diffusion-2-1"


@dataclass(frozen=True)
class SD21VTeacherConfig:
    path: str = DEFAULT_PATH
    default_lora_rank: int = FLASH_SD15_LORA_RANK
    lora_targets: tuple[str, ...] = FLASH_SD15_LORA_TARGETS
    dtype: str = "float32"

    def __post_init__(self):
        check_teacher_options(self.default_lora_rank, self.lora_targets, self.dtype)


def build(config: SD21VTeacherConfig, *, device="cpu"):
    from ._sd_family import SDFamilyTeacher, torch_dtype

    return SDFamilyTeacher(
        config.path,
        device=device,
        dtype=torch_dtype(config.dtype),
        lora_targets=tuple(config.lora_targets),
        default_lora_rank=config.default_lora_rank,
    )


@hookimpl
def register_teachers(register):
    register(
        "sd21-v",
        build,
        config=SD21VTeacherConfig,
        description="Stable Diffusion 2.1 text-to-image (OpenCLIP-H text, 768 px, v-prediction, LoRA r128 on attention)",
    )  # noqa: E501
