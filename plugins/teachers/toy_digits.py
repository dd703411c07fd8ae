"""``toy-digits``: the embedded default teacher, a 16x16 pixel-space text-to-image model of coloured digits.

Same classes as SD1.5 (``UNet2DConditionModel``, ``CLIPTextModel``, ``CLIPTokenizer``, SD's scaled-linear
DDPM schedule), no VAE. Trained by this project (recipe in :mod:`flashbench_plugins.toy.build`:
5,000 AdamW steps, batch 32, 10% null prompts for CFG, EMA 0.999, ~10 CPU minutes); the weights
(float16 safetensors, ~5 MB) ship in ``flashbench_plugins/weights/toy-digits-teacher`` and are rebuilt
with ``python -m flashbench_plugins.toy.build --teacher``.

The teacher is :class:`~._toy_teacher.ToyDigitsTeacher`: the SD family's teacher with the toy pipeline and
``perceptual_net = "toy-digits"`` (what the ``lpips`` loss measures with by default).

Config: ``path`` (a diffusers folder; empty: the bundled weights), ``default_lora_rank`` (16; LoRA on attention,
feed-forward and conv layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl

BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "toy-digits-teacher"


@dataclass(frozen=True)
class ToyDigitsTeacherConfig:
    path: str = ""
    default_lora_rank: int = 16


def build(config: ToyDigitsTeacherConfig, *, device="cpu", dtype=None):
    import torch

    from ._toy_teacher import ToyDigitsTeacher

    return ToyDigitsTeacher(config.path or str(BUNDLED), device=device, dtype=dtype or torch.float32, default_lora_rank=config.default_lora_rank)


@hookimpl
def register_teachers(register):
    register("toy-digits", build, config=ToyDigitsTeacherConfig, description="16x16 coloured-digits teacher trained here (SD1.5 classes, pixel space)")
