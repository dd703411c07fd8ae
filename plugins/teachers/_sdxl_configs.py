"""Model configs of the SDXL family: the published ones (to count parameters without downloading) and tiny
ones of the same classes (to test the plugins offline).

The ``*_CONFIG`` dicts are the ``config.json`` values of ``stabilityai/stable-diffusion-xl-base-1.0``
(``unet``, ``text_encoder``, ``text_encoder_2``, ``vae``, ``scheduler``) and of
``TencentARC/t2i-adapter-{canny,depth-midas}-sdxl-1.0`` (the two adapters share one architecture).
:func:`meta_sdxl_unet` builds the real-size UNet on the meta device (no memory, no download), where a LoRA
can be added and counted.

:func:`write_tiny_sdxl` and :func:`write_tiny_t2i_adapter` write random-initialised (seeded), tiny
diffusers folders with the real classes and the real folder layout (``model_index.json`` included), so that
a teacher loads them through the same ``from_pretrained`` path as the published weights.
"""

from __future__ import annotations

from pathlib import Path

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"

SDXL_UNET_CONFIG: dict = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}

#: CLIP ViT-L/14's text tower (penultimate hidden states, 768 wide)
SDXL_TEXT_ENCODER_CONFIG: dict = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
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

#: OpenCLIP ViT-bigG/14's text tower (penultimate hidden states, 1280 wide, and the projected pooled embedding)
SDXL_TEXT_ENCODER_2_CONFIG: dict = {
    "architectures": ["CLIPTextModelWithProjection"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "pad_token_id": 1,
    "projection_dim": 1280,
    "vocab_size": 49408,
}

SDXL_VAE_CONFIG: dict = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

SDXL_SCHEDULER_CONFIG: dict = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

#: TencentARC/t2i-adapter-canny-sdxl-1.0 and TencentARC/t2i-adapter-depth-midas-sdxl-1.0
SDXL_T2I_ADAPTER_CONFIG: dict = {
    "adapter_type": "full_adapter_xl",
    "channels": [320, 640, 1280, 1280],
    "downscale_factor": 16,
    "in_channels": 3,
    "num_res_blocks": 2,
}


def meta_sdxl_unet():
    """The real-size SDXL UNet (2.57B parameters) on the meta device: shapes only, no memory."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**SDXL_UNET_CONFIG)


def meta_t2i_adapter():
    """The real-size SDXL T2I-Adapter on the meta device."""
    import torch
    from diffusers import T2IAdapter

    with torch.device("meta"):
        return T2IAdapter(**SDXL_T2I_ADAPTER_CONFIG)


# --- tiny models for tests ------------------------------------------------------------------------------
#: tiny SDXL: 16x16 images, 8x8x4 latents (a two-level VAE: scale factor 2), three UNet levels like SDXL
TINY_UNET_CONFIG: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 1, 1],
    "attention_head_dim": [2, 4, 4],
    "cross_attention_dim": 64,  # 32 (text encoder) + 32 (text encoder 2), as 768 + 1280 = 2048 in SDXL
    "norm_num_groups": 32,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 6 * 8 + 32,  # 6 micro-conditioning numbers + the pooled embedding
}
TINY_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 16,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
TINY_TEXT_CONFIG: dict = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}
#: the XL adapter's residuals must land on the UNet's levels: with a VAE scale factor of 2 (SDXL: 8) the
#: pixel unshuffle is 4 (SDXL: 16) so that residual 0 has the size of the first down block's output
TINY_T2I_ADAPTER_CONFIG: dict = {
    "adapter_type": "full_adapter_xl",
    "channels": [32, 64, 64, 64],
    "downscale_factor": 4,
    "in_channels": 3,
    "num_res_blocks": 1,
}


def write_tiny_sdxl(root, *, seed: int = 0, force_zeros_for_empty_prompt: bool = True) -> Path:
    """A tiny SDXL-base-shaped diffusers folder (``model_index.json`` and the seven subfolders)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from flashbench_plugins.toy.models import write_clip_tokenizer

    root = Path(root)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_CONFIG, hidden_act="quick_gelu"))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_TEXT_CONFIG, hidden_act="gelu"))
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG)  # the published config has DDIM-era keys Euler ignores
    tokenizers = []
    for name, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):  # SDXL pads its second tokenizer with "!"
        folder = write_clip_tokenizer(root / "_tokenizers" / name, model_max_length=77)
        tokenizers.append(CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, pad_token=pad))
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        unet=unet.eval(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    pipe.save_pretrained(root)
    _rmtree(root / "_tokenizers")
    return root


def write_tiny_t2i_adapter(root, *, seed: int = 1) -> Path:
    """A tiny XL T2I-Adapter folder matching :func:`write_tiny_sdxl`'s UNet."""
    import torch
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    T2IAdapter(**TINY_T2I_ADAPTER_CONFIG).eval().save_pretrained(root)
    return Path(root)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
