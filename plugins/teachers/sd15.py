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
"bfloat16", "float16": the weights' dtype; mixed precision is the study's ``mixed_precision``), ``random_weights``
(false; true: the real SD1.5 architecture -- the UNet, CLIP ViT-L/14's text tower and the VAE built from their
published configs -- with seeded random weights and an offline CLIP tokenizer, ``path`` unused: nothing is read
or downloaded. For throughput and memory on a machine without the weights, ``studies/gpu_smoke.toml``; its
samples and metrics mean nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from ._sd_configs import FLASH_SD15_LORA_RANK, FLASH_SD15_LORA_TARGETS, SD15_SCHEDULER, SD15_UNET, check_teacher_options

DEFAULT_PATH = "stable-diffusion-v1-5/stable-diffusion-v1-5"

#: stable-diffusion-v1-5/stable-diffusion-v1-5, text_encoder/config.json: CLIP ViT-L/14's text tower; 123.1M parameters
SD15_TEXT_ENCODER = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
#: stable-diffusion-v1-5/stable-diffusion-v1-5, vae/config.json (an 8x AutoencoderKL, latents scaled by 0.18215); 83.7M parameters
SD15_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
#: what ``random_weights = true`` builds (tests swap in tiny configs of the same classes)
RANDOM_CONFIGS = {"unet": SD15_UNET, "text_encoder": SD15_TEXT_ENCODER, "vae": SD15_VAE, "scheduler": SD15_SCHEDULER}
RANDOM_SEED = 0  # the random weights are the same on every machine and run


@dataclass(frozen=True)
class SD15TeacherConfig:
    path: str = DEFAULT_PATH
    default_lora_rank: int = FLASH_SD15_LORA_RANK
    lora_targets: tuple[str, ...] = FLASH_SD15_LORA_TARGETS
    dtype: str = "float32"
    random_weights: bool = False

    def __post_init__(self):
        check_teacher_options(self.default_lora_rank, self.lora_targets, self.dtype)
        if not isinstance(self.random_weights, bool):
            raise ValueError(f"random_weights must be true or false, got {self.random_weights!r}")


def build(config: SD15TeacherConfig, *, device="cpu"):
    from ._sd_family import SDFamilyTeacher, random_components, torch_dtype

    components, source = None, config.path
    if config.random_weights:
        components = random_components(**RANDOM_CONFIGS, seed=RANDOM_SEED)
        source = f"random-weights:sd15(seed={RANDOM_SEED})"
    return SDFamilyTeacher(
        source,
        device=device,
        dtype=torch_dtype(config.dtype),
        lora_targets=tuple(config.lora_targets),
        default_lora_rank=config.default_lora_rank,
        components=components,
    )


@hookimpl
def register_teachers(register):
    register("sd15", build, config=SD15TeacherConfig, description="Stable Diffusion 1.5 text-to-image (CLIP text, 512 px, LoRA r128 on attention)")
