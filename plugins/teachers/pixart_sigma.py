"""``pixart-sigma``: the PixArt-Sigma DiT teacher (not in the paper, which distils PixArt-alpha; issue 15, "today's
teachers"). Its recipe, ``studies/recipe_pixart_sigma.toml``, carries the paper's PixArt-alpha recipe over
(Appendix A: K = 16, phases of 10k iterations, omega in [2, 9], LPIPS distillation, lambda_adv
[0, .05, .1, .2]); nothing there was tuned for Sigma.

PixArt-Sigma is the PixArt-alpha architecture (a ``PixArtTransformer2DModel`` XL-2: 28 blocks of width 1152,
2x2 patches, learned sigma, VP epsilon on linear DDPM betas 1e-4 .. 2e-2), trained on SDXL's VAE latents
(scaling 0.13025) with T5 v1.1 XXL captions of up to **300 tokens** (PixArt-alpha: 120) and without
resolution / aspect-ratio micro-conditioning. The teacher is :class:`~flashbench_plugins.teachers._pixart.PixartSigmaTeacher`,
the ``pixart-alpha`` teacher with Sigma's pipeline and token length: conditioning (the prompt lower-cased and
stripped, padded to 300 tokens, T5 hidden states and attention mask; the null is the empty prompt, the
pipeline's ``negative_prompt=""``), epsilon from the first half of the output channels, the discriminator on
the frozen teacher's intermediate tokens, and the LoRA are all PixArt-alpha's.

Export: diffusers' ``PixArtSigmaPipeline`` has no ``load_lora_weights`` (diffusers 0.42), as
``PixArtAlphaPipeline``; the student is written as a peft adapter folder that the stock pipeline takes with
``PeftModel.from_pretrained(pipe.transformer, folder)`` (``_pixart.load_peft_adapter``). Sample it with
``pipe.scheduler = _pixart.few_step_scheduler(pipe.scheduler.config)``,
``timesteps=[999, 749, 499, 249][:n]``, ``guidance_scale=1``.

Default weights: ``PixArt-alpha/PixArt-Sigma-XL-2-1024-MS`` (1024 px, 128x128x4 latents), or a local diffusers
folder with the hub's layout; offline, a missing hub model fails with one line naming the id.

Config (the options of ``pixart-alpha`` but its ``resolution``, validated by the same rules): ``path``,
``max_sequence_length`` (300), ``default_lora_rank`` (64) with ``lora_alpha`` (8) on ``lora_targets``
(PixArt-alpha's; 55.06M trainable parameters on the real Sigma transformer: alpha-512's count, as Sigma has no
micro-conditioning embeddings to adapt), ``disc_blocks``, ``disc_features``, ``dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from ._pixart_configs import LORA_TARGETS, SIGMA_HUB_ID, SIGMA_MAX_SEQUENCE_LENGTH
from .pixart_alpha import PixartAlphaTeacherConfig


@dataclass(frozen=True)
class PixartSigmaTeacherConfig:
    path: str = SIGMA_HUB_ID
    max_sequence_length: int = SIGMA_MAX_SEQUENCE_LENGTH
    default_lora_rank: int = 64
    lora_alpha: float = 8.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    disc_blocks: int = 0
    disc_features: str = "tokens"
    dtype: str = "float32"

    def __post_init__(self):
        # one set of rules for the options the two PixArt teachers share: PixArt-alpha's config checks them
        shared = PixartAlphaTeacherConfig(
            path=self.path,
            max_sequence_length=self.max_sequence_length,
            default_lora_rank=self.default_lora_rank,
            lora_alpha=self.lora_alpha,
            lora_targets=self.lora_targets,
            disc_blocks=self.disc_blocks,
            disc_features=self.disc_features,
            dtype=self.dtype,
        )
        object.__setattr__(self, "lora_targets", shared.lora_targets)

    @property
    def source(self) -> str:
        return self.path or SIGMA_HUB_ID


def build(config: PixartSigmaTeacherConfig, *, device="cpu", dtype=None):
    import torch

    from ._pixart import PixartSigmaTeacher

    return PixartSigmaTeacher(
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
        "pixart-sigma",
        build,
        config=PixartSigmaTeacherConfig,
        description="PixArt-Sigma XL-2 1024-MS DiT, T5 text (300 tokens), LoRA exported as a peft adapter",
    )  # noqa: E501
