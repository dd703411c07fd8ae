"""``flux``: Flux.1, a rectified-flow MM-DiT teacher with Flux's resolution-dependent shift (not in the paper;
``studies/recipe_flux.toml`` is our recipe, not the authors').

A ``FluxTransformer2DModel`` (19 double-stream + 38 single-stream blocks in Flux.1-dev) over a 16-channel VAE
(``(z - shift_factor) * scaling_factor``), on latents packed 2x2 into tokens (64 channels) with their
(0, row, column) position ids; the teacher keeps the method's latents unpacked, (16, H/8, W/8), and packs
them around each forward. Text: T5-XXL hidden states (``max_sequence_length`` tokens, 512 for dev) and CLIP-L's
pooled output. Noise process: rectified flow, velocity output, sigma shifted by ``mu`` linear in the image's
token count (256 tokens: 0.5, 4096 tokens = 1024 px: 1.15), as ``FluxPipeline`` computes it for
``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)``; the teacher fixes mu at its ``resolution``.

**Guidance: how the Flash CFG target maps onto a guidance-distilled model.** Flux.1-dev was distilled from a
CFG model: omega is an *input* (its guidance embedding), and there is no conditional / unconditional pair to
combine. The method's guided teacher output omega u(x, t, c) + (1 - omega) u(x, t, null) (Alg. 1) becomes
*one* forward u(x, t, c, guidance = omega): the cond dicts carry a ``guidance`` entry (B,), and
``flashbench.method.guidance.guided_output`` sets it to omega and runs the conditional input alone; the null
condition (the empty prompt, returned so the cond / null pair keeps one shape) is never read. So omega ~
U[omega_min, omega_max] is the guidance value of the teacher's solver steps and of DMD's real score. The
student, which never sees omega (as in the paper), runs at the fixed ``student_guidance`` (3.5, the stock
pipeline's default ``guidance_scale``), so the exported LoRA samples in ``FluxPipeline`` with
``guidance_scale=student_guidance``. A checkpoint without a guidance embedding (Flux.1-schnell) gets true CFG
against the empty prompt, the VP teachers' path. The trainer still counts 2 teacher NFEs per guided step.

Default weights: ``black-forest-labs/FLUX.1-dev`` (gated on the hub: accept the licence, download it, give the
folder). The exported student is a diffusers LoRA that ``FluxPipeline.load_lora_weights`` loads (its
``lora_alpha`` in the file's metadata); sample it with the teacher's scheduler config and
``stochastic_sampling=True``, ``sigmas=[1.0, 0.75, 0.5, 0.25][:n]`` for n = 4 (``[1.0, 0.5]``, ``[1.0]``;
``FluxPipeline``'s own default sigmas are exactly these), ``guidance_scale=student_guidance`` and the teacher's
``height``/``width``; see ``FluxTeacher.pipeline``.

LoRA defaults (ours, not from the paper): rank 64, alpha = rank, on the attention projections of every block
(``to_q, to_k, to_v, to_out.0, add_q_proj, add_k_proj, add_v_proj, to_add_out``; the single-stream blocks
have q/k/v only): 104,595,456 trainable parameters on Flux.1-dev (26,148,864 at rank 16).

Config: ``path``, ``max_sequence_length`` (512; 256 for schnell), ``resolution`` (0: 1024 px; also fixes mu),
``student_guidance`` (3.5), ``default_lora_rank`` (64), ``lora_alpha`` (0: alpha = rank), ``lora_targets``,
``disc_blocks`` (double-stream blocks under the discriminator; 0: half of them, 9 of 19), ``disc_features``
("tokens": their image tokens on the 2x2 token grid, (B, 3072, 64, 64) at 1024 px; "output": the frozen
teacher's velocity on the latent grid), ``dtype`` (the weights' dtype: a 12B-parameter transformer wants
"bfloat16"; LoRA weights stay float32).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from ._flow_configs import FlowTeacherOptions

DEFAULT_PATH = "black-forest-labs/FLUX.1-dev"

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

#: ``transformer/config.json`` of Flux.1-dev (the keys ``FluxTransformer2DModel`` takes), to count on the meta device
FLUX_DEV_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}


@dataclass(frozen=True)
class FluxTeacherConfig(FlowTeacherOptions):
    path: str = DEFAULT_PATH
    max_sequence_length: int = 512
    student_guidance: float = 3.5
    lora_targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        if self.student_guidance < 0:
            raise ValueError(f"student_guidance must be >= 0, got {self.student_guidance}")
        super().__post_init__()


def build(config: FluxTeacherConfig, *, device="cpu", dtype=None):
    import torch

    from ._flow_family import FluxTeacher

    return FluxTeacher(
        config.path, device=device, dtype=dtype or getattr(torch, config.dtype), student_guidance=config.student_guidance, **config.teacher_kwargs()
    )


@hookimpl
def register_teachers(register):
    register(
        "flux", build, config=FluxTeacherConfig, description="Flux.1 MM-DiT, rectified flow (resolution shift), T5 + CLIP, omega as the guidance embedding"
    )
