"""``sd3``: Stable Diffusion 3 / 3.5, a rectified-flow MM-DiT teacher (the authors' later Flash SD3 release;
not in the paper, whose recipe for it is in ``studies/recipe_sd3.toml``).

An ``SD3Transformer2DModel`` over a 16-channel VAE (latents ``(z - shift_factor) * scaling_factor``), the
rectified-flow process x_t = (1 - sigma) x0 + sigma eps with SD3's fixed time shift read from the scheduler
config (3.0 for SD3-medium and SD3.5), velocity output. Text: CLIP-L and CLIP-G penultimate hidden states
(77 tokens, 768 + 1280 wide, zero-padded to the transformer's 4096) followed by ``max_sequence_length`` T5
tokens, and the two pooled embeddings (2048). The authors' Flash SD3 uses no T5 encoder: with ``use_t5 =
false`` (the default) T5 is not loaded and its tokens are zeros, exactly what ``StableDiffusion3Pipeline``
does when ``text_encoder_3`` is None. CFG's null is the empty prompt (the pipeline's negative prompt ""). The
discriminator reads the frozen teacher's image tokens after the first ``disc_blocks`` joint blocks (default:
half, 12 of SD3-medium's 24), (B, 1536, 64, 64) at 1024 px (:mod:`._flow_family`).

Default weights: ``stabilityai/stable-diffusion-3-medium-diffusers`` (gated on the hub: accept the licence
and download it, then give the folder); SD3.5 works by path (``stabilityai/stable-diffusion-3.5-medium``,
``-large``). The exported student is a diffusers LoRA that ``StableDiffusion3Pipeline.load_lora_weights``
loads (its ``lora_alpha`` in the file's metadata); sample it with the teacher's scheduler config and
``stochastic_sampling=True``, ``sigmas=[1.0, 0.75, 0.5, 0.25][:n]`` for n = 4 (``[1.0, 0.5]`` for 2, ``[1.0]``
for 1: the scheduler applies the shift) and ``guidance_scale=1``; see ``SD3Teacher.pipeline``.

LoRA defaults: the authors' Flash SD3 LoRA (gojasper/flash-diffusion, ``examples/train_flash_sd3.py``): rank
64, peft's default alpha 8, targets ``to_q, to_k, to_v, to_out.0, proj_in, proj_out, ff.net.0.proj,
ff.net.2, proj, linear, linear_1, linear_2``. On SD3-medium these name the image stream's attention
projections and feed-forward, the context stream's first feed-forward layer (``ff_context.net.0.proj``, via
``proj``), every AdaLN modulation (``norm1.linear``, ``norm1_context.linear``, ``norm_out.linear``), the
timestep and pooled-text embedders, the patch embedding (``pos_embed.proj``) and the output layer: 222
modules, **87,646,208** trainable parameters (the context stream's attention projections ``add_q_proj`` ...
``to_add_out`` are not adapted). With the authors' 16-channel discriminator (2,778,880 parameters) that is
90,425,088, the published "90.4M". Rank 64 on the attention projections alone would be 18,874,368 (image
stream) or 37,552,128 (both streams: add ``add_q_proj, add_k_proj, add_v_proj, to_add_out``).

Config: ``path``, ``use_t5`` (false), ``max_sequence_length`` (T5 tokens, 256 as the pipeline; zeros without
T5), ``resolution`` (0: the model's 1024 px), ``default_lora_rank`` (64), ``lora_alpha`` (8; 0 means alpha =
rank), ``lora_targets``, ``disc_blocks`` (0: half the joint blocks), ``disc_features`` ("tokens"; "output":
the frozen teacher's velocity on the 16-channel latent grid, the input of the authors' SD3 head), ``dtype``
("float32", "bfloat16", "float16": the weights' dtype; LoRA weights stay float32).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from ._flow_configs import FlowTeacherOptions

DEFAULT_PATH = "stabilityai/stable-diffusion-3-medium-diffusers"

#: the authors' Flash SD3 LoRA targets (the same list as their PixArt recipe)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "proj", "linear", "linear_1", "linear_2")

#: ``transformer/config.json`` of SD3-medium (the keys ``SD3Transformer2DModel`` takes), to count on the meta device
SD3_MEDIUM_TRANSFORMER = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 192,
}


@dataclass(frozen=True)
class SD3TeacherConfig(FlowTeacherOptions):
    path: str = DEFAULT_PATH
    use_t5: bool = False
    max_sequence_length: int = 256
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = LORA_TARGETS


def build(config: SD3TeacherConfig, *, device="cpu", dtype=None):
    import torch

    from ._flow_family import SD3Teacher

    return SD3Teacher(config.path, device=device, dtype=dtype or getattr(torch, config.dtype), use_t5=config.use_t5, **config.teacher_kwargs())


@hookimpl
def register_teachers(register):
    register(
        "sd3",
        build,
        config=SD3TeacherConfig,
        description="Stable Diffusion 3 / 3.5 MM-DiT, rectified flow (shift 3), CLIP-L+G (T5 off by default), LoRA r64 87.6M",
    )
