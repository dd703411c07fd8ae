"""Published configurations of the PixArt-alpha and PixArt-Sigma XL-2 transformers (``transformer/config.json`` of the hub
folders, keeping the keys :class:`diffusers.PixArtTransformer2DModel` takes), so the real-size model can be
built on the meta device to count LoRA parameters without downloading anything.

The two checkpoints differ only in ``sample_size`` (latent side: 64 for 512 px, 128 for 1024 px) and in
what follows from it: the 1024-MS model is trained with resolution / aspect-ratio micro-conditioning
(``use_additional_conditions`` defaults to ``sample_size == 128``) and a position-embedding
interpolation scale of 2.
"""

from __future__ import annotations

HUB_IDS = {512: "PixArt-alpha/PixArt-XL-2-512x512", 1024: "PixArt-alpha/PixArt-XL-2-1024-MS"}

_XL_2 = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "attention_type": "default",
    "caption_channels": 4096,  # T5 v1.1 XXL hidden size
    "cross_attention_dim": 1152,
    "dropout": 0.0,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,  # learned sigma: epsilon and the variance interpolation, 4 channels each
    "patch_size": 2,
    "upcast_attention": False,
}

TRANSFORMER_CONFIGS = {
    512: {**_XL_2, "sample_size": 64},
    1024: {**_XL_2, "sample_size": 128},
}

#: LoRA target modules of the official Flash Pixart recipe (rank 64; peft's default alpha 8): attention
#: and feed-forward layers of every block plus the patch embedding (``proj``), the timestep / caption /
#: micro-conditioning embeddings (``linear``, ``linear_1``, ``linear_2``) and the output layer
#: (``proj_out``). ``proj_in`` names no PixArt module; it is kept so the list reads as the recipe's.
LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "proj",
    "linear",
    "linear_1",
    "linear_2",
)

#: PixArt-Sigma (Chen et al. 2024, the ``pixart-sigma`` teacher): the same XL-2 transformer (28 blocks, width 1152,
#: learned sigma, VP epsilon on PixArt's linear DDPM betas), trained on SDXL's VAE latents (scaling 0.13025) with T5
#: captions of up to 300 tokens and *without* resolution / aspect-ratio micro-conditioning: its config sets
#: ``use_additional_conditions`` to false explicitly (sample_size 128 would otherwise turn it on), and
#: ``PixArtSigmaPipeline`` passes no resolution or aspect ratio.
SIGMA_HUB_ID = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
SIGMA_MAX_SEQUENCE_LENGTH = 300
SIGMA_TRANSFORMER_CONFIG = {**_XL_2, "sample_size": 128, "interpolation_scale": 2, "use_additional_conditions": False}
