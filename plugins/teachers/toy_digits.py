"""``toy-digits``: the embedded default teacher, a 16x16 pixel-space text-to-image model of coloured digits.

Same classes as SD1.5 (``UNet2DConditionModel``, ``CLIPTextModel``, ``CLIPTokenizer``, SD's scaled-linear
DDPM schedule), no VAE. Trained by this project (recipe in :mod:`flashbench_plugins.toy.build`:
5,000 AdamW steps, batch 32, 10% null prompts for CFG, EMA 0.999, ~10 CPU minutes); the weights
(float16 safetensors, ~5 MB) ship in ``flashbench_plugins/weights/toy-digits-teacher`` and are rebuilt
with ``python -m flashbench_plugins.toy.build --teacher``.

Config: ``path`` (a diffusers folder; empty: the bundled weights), ``lora_rank`` default 16 on attention,
feed-forward and conv layers, ``device``.
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

    from ._sd_family import SDFamilyTeacher
    from ._toy_pipeline import ToyDigitsPipeline

    source = config.path or str(BUNDLED)
    teacher = SDFamilyTeacher(source, device=device, dtype=dtype or torch.float32, default_lora_rank=config.default_lora_rank, pipeline_cls=ToyDigitsPipeline)

    def pipeline():
        from diffusers import LCMScheduler

        sched = LCMScheduler.from_config(teacher.scheduler.config, timestep_spacing="trailing")
        return ToyDigitsPipeline(teacher.unet, teacher.text_encoder, teacher.tokenizer, sched)

    teacher.pipeline = pipeline
    teacher.perceptual_net = "toy-digits"
    return teacher


@hookimpl
def register_teachers(register):
    register("toy-digits", build, config=ToyDigitsTeacherConfig, description="16x16 coloured-digits teacher trained here (SD1.5 classes, pixel space)")
