"""``pixart-alpha``: the PixArt-alpha DiT teacher (Sec. 5.3.1 "Flash Pixart", Table 4; recipe in Appendix A:
K = 16, phases of 10k iterations, omega in [2, 9], LPIPS distillation, lambda_adv [0, .05, .1, .2]).

A ``PixArtTransformer2DModel`` over SD's VAE latents, conditioned on T5 hidden states with their attention
mask (up to 120 tokens) and, for the 1024-MS checkpoint, on the image resolution and aspect ratio; the null
condition for CFG is the encoded empty prompt, as in ``PixArtAlphaPipeline``. The transformer predicts
epsilon and a learned variance; the method uses epsilon. The discriminator reads the frozen teacher's
intermediate tokens (patch embedding + the first ``disc_blocks`` blocks) on the patch grid.

The student is a peft LoRA on the transformer, exported as a peft adapter folder that the stock pipeline
loads with ``PeftModel.from_pretrained(pipe.transformer, folder)`` (diffusers' ``PixArtAlphaPipeline`` has
no ``load_lora_weights``); see :mod:`flashbench_plugins.teachers._pixart`.

Config: ``path`` (a hub id or a local diffusers folder; empty: the hub checkpoint of ``resolution``),
``resolution`` (512: ``PixArt-alpha/PixArt-XL-2-512x512``, 1024: ``PixArt-alpha/PixArt-XL-2-1024-MS``; only
picks the default checkpoint, the latent size comes from the model's config), ``max_sequence_length`` (T5
tokens, 120 as PixArt-alpha), ``default_lora_rank`` (64) with ``lora_alpha`` (8, peft's default that the
official recipe keeps: scale alpha / rank = 1/8; 0 means alpha = rank) on ``lora_targets`` (attention,
feed-forward, patch / timestep / caption embeddings and output layer: 55.06M trainable parameters on
XL-2-512, 55.24M on XL-2-1024-MS; with the official implementation's 11.17M-parameter discriminator that is
66.41M, the paper's "66.5M"), ``disc_blocks`` (transformer blocks under the discriminator; 0: half of them),
``disc_features`` ("tokens": those intermediate tokens, as the paper describes; "output": the frozen
teacher's epsilon on the latent grid, which is what the official implementation's Pixart discriminator, 4
input channels, receives), ``dtype`` ("float32", "bfloat16", "float16": the weights' dtype; LoRA weights stay
float32; a ``dtype`` given to ``build`` wins).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from ._pixart_configs import HUB_IDS, LORA_TARGETS

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class PixartAlphaTeacherConfig:
    path: str = ""
    resolution: int = 512
    max_sequence_length: int = 120
    default_lora_rank: int = 64
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    disc_blocks: int = 0
    disc_features: str = "tokens"
    dtype: str = "float32"

    def __post_init__(self):
        if self.resolution not in HUB_IDS:
            raise ValueError(f"resolution must be one of {sorted(HUB_IDS)} (PixArt-alpha XL-2 checkpoints), got {self.resolution}")
        if self.max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be positive, got {self.max_sequence_length}")
        if self.default_lora_rank < 1:
            raise ValueError(f"default_lora_rank must be positive, got {self.default_lora_rank}")
        if self.lora_alpha < 0:
            raise ValueError(f"lora_alpha must be >= 0 (0: alpha = rank), got {self.lora_alpha}")
        if self.disc_blocks < 0:
            raise ValueError(f"disc_blocks must be >= 0 (0: half the transformer blocks), got {self.disc_blocks}")
        if self.disc_features not in ("tokens", "output"):
            raise ValueError(f"disc_features must be 'tokens' or 'output', got {self.disc_features!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if isinstance(self.lora_targets, str) or not self.lora_targets:
            raise ValueError(f"lora_targets must be a non-empty list of module names, got {self.lora_targets!r}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # a TOML list arrives as a list

    @property
    def source(self) -> str:
        return self.path or HUB_IDS[self.resolution]


def build(config: PixartAlphaTeacherConfig, *, device="cpu", dtype=None):
    import torch

    from ._pixart import PixartTeacher

    return PixartTeacher(
        config.source,
        device=device,
        dtype=dtype or getattr(torch, config.dtype),
        max_sequence_length=config.max_sequence_length,
        default_lora_rank=config.default_lora_rank,
        lora_alpha=config.lora_alpha,
        lora_targets=config.lora_targets,
        disc_blocks=config.disc_blocks,
        disc_features=config.disc_features,
    )


@hookimpl
def register_teachers(register):
    register(
        "pixart-alpha", build, config=PixartAlphaTeacherConfig, description="PixArt-alpha XL-2 DiT (512 or 1024-MS), T5 text, LoRA exported as a peft adapter"
    )  # noqa: E501
