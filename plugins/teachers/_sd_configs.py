"""Published configs of the Stable-Diffusion-family models the ``sd15``, ``inpaint``, ``superres`` and ``sd21-v``
teachers load, and tiny configs of the same classes for tests.

The real-size dicts are the values of the public ``config.json`` files (``unet/``, ``scheduler/``, ...) of
stable-diffusion-v1-5/stable-diffusion-v1-5, stable-diffusion-v1-5/stable-diffusion-inpainting,
stabilityai/stable-diffusion-x4-upscaler and stabilityai/stable-diffusion-2-1. They let the LoRA defaults be checked against the paper's
trainable-parameter counts without downloading anything: :func:`lora_parameter_count` builds the UNet on
the ``meta`` device (no memory, no weights) and counts the adapter's parameters.

No torch import at module level: the plugin files import these dicts cheaply.
"""

from __future__ import annotations

# --- real sizes ------------------------------------------------------------------------------------------
#: stable-diffusion-v1-5/stable-diffusion-v1-5 (formerly runwayml/stable-diffusion-v1-5), unet/config.json; 859.5M parameters
SD15_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

#: stable-diffusion-v1-5/stable-diffusion-inpainting (formerly runwayml/...), unet/config.json: SD1.5 with 9 input
#: channels (4 noisy latents + 1 mask + 4 masked-image latents)
SD_INPAINT_UNET = {**SD15_UNET, "in_channels": 9}

#: stabilityai/stable-diffusion-x4-upscaler, unet/config.json; 473.4M parameters. 7 input channels (4 latents + the
#: 3 RGB channels of the noise-augmented low-res image), ``class_labels`` = the augmentation's noise level.
X4_UPSCALER_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [256, 512, 512, 1024],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 7,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": 1000,
    "only_cross_attention": [True, True, True, False],
    "out_channels": 4,
    "sample_size": 128,
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

#: stabilityai/stable-diffusion-2-1 (768 px), unet/config.json; 865.9M parameters. SD1.5's layout with OpenCLIP-H's
#: 1024-wide text states, head *dims* growing with the width (5, 10, 20, 20 heads of 64), linear proj_in/proj_out,
#: and attention computed in float32 (``upcast_attention``: SD2.1's fix for NaNs of the 768 model in float16).
SD21_UNET = {
    **SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "sample_size": 96,
    "upcast_attention": True,
    "use_linear_projection": True,
}

#: SD1.5's (and SD-inpainting's) training schedule (scheduler/scheduler_config.json, read as DDIM)
SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

#: SD2.1-768's training schedule (scheduler/scheduler_config.json, DDIM): SD1.5's scaled-linear betas, v-prediction.
#: Not zero terminal SNR: alphas_cumprod[999] = 0.00466, alpha_T = 0.0683, sigma_T = 0.9977 (log-SNR -5.37).
#: (The hub file also holds PNDM's ``skip_prk_steps``, which DDIM ignores and this dict leaves out.)
SD21_SCHEDULER = {**SD15_SCHEDULER, "prediction_type": "v_prediction"}
#: SD2.1's text encoder: OpenCLIP ViT-H/14's text tower converted to a ``CLIPTextModel`` (text_encoder/config.json),
#: its last of 24 layers dropped (SD2 conditions on the penultimate layer); its tokenizer pads with "!" (id 0)
SD21_TEXT_ENCODER = {
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "max_position_embeddings": 77,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "projection_dim": 512,
    "vocab_size": 49408,
}

#: the x4 upscaler's denoising schedule: a v-prediction model
X4_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
}

#: the x4 upscaler's ``low_res_scheduler`` (DDPM): noise augmentation of the low-res image at ``noise_level``
X4_LOW_RES_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "variance_type": "fixed_small",
    "prediction_type": "epsilon",
}
X4_MAX_NOISE_LEVEL = 350  # model_index.json of the upscaler; the pipeline rejects larger noise levels
X4_VAE_SCALING = 0.08333  # the upscaler VAE's latent scaling (its VAE downsamples x4, not x8)

#: The Flash SD1.5 LoRA (official training code, examples/train_flash_sd.py + configs/flash_sd.yaml of
#: gojasper/flash-diffusion): rank 128 on the attention projections. The paper's "26.4M trainable parameters"
#: is this LoRA (25,509,888 on the SD1.5 UNet) plus the 0.87M-parameter discriminator head the method trains
#: too (conv3x3 1280->64, conv4x4/2 64->128, GroupNorm, conv4x4 128->1: 870,720).
FLASH_SD15_LORA_RANK = 128
FLASH_SD15_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FLASH_SD15_DISCRIMINATOR_PARAMS = 870_720

# --- tiny test sizes (same classes, random weights) -------------------------------------------------------
TINY_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "norm_num_groups": 32,
    "attention_head_dim": 8,
}
TINY_INPAINT_UNET = {**TINY_UNET, "in_channels": 9}
TINY_X4_UNET = {
    **TINY_UNET,
    "in_channels": 7,
    "num_class_embeds": 1000,
    "use_linear_projection": True,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}
#: SD2.1's UNet options at test size: linear projections, per-block head dims, float32 attention
TINY_SD21_UNET = {**TINY_UNET, "attention_head_dim": [4, 8], "use_linear_projection": True, "upcast_attention": True}
#: two blocks: the image is 2x the latents (SD's VAE is 8x, three blocks more)
TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [32, 64],
    "latent_channels": 4,
    "sample_size": 16,
    "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
}
#: three blocks: 4x upscaling, as the x4 upscaler's VAE
TINY_X4_VAE = {
    **TINY_VAE,
    "block_out_channels": [32, 32, 32],
    "sample_size": 32,
    "scaling_factor": X4_VAE_SCALING,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
}
TINY_CLIP_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}


def lora_parameter_count(unet_config: dict, rank: int, targets) -> int:
    """Trainable parameters of a rank-``rank`` peft LoRA on ``targets`` of a ``UNet2DConditionModel`` built
    from ``unet_config`` on the meta device (nothing allocated, nothing downloaded)."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)))
    return sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)


def check_teacher_options(rank: int, targets, dtype: str) -> None:
    """Validation shared by the SD-family teacher configs (raises ``ValueError``)."""
    if rank <= 0:
        raise ValueError(f"default_lora_rank must be positive, got {rank}")
    if not targets or isinstance(targets, str):
        raise ValueError(f"lora_targets must be a list of module names, got {targets!r}")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
