"""``toy-digits-flow``: the rectified-flow twin of ``toy-digits``, a 16x16 pixel-space coloured-digits teacher
trained here with SD3's objective, so the flow path of the method (trainer, ``flow-euler`` solver, few-step
sampler, export) runs end to end on a CPU in minutes.

Same classes and sizes as ``toy-digits`` (``UNet2DConditionModel`` + ``CLIPTextModel`` + SD's CLIP tokenizer,
no VAE); the noise process is :class:`~flashbench.method.noise.RectifiedFlow`: x_t = (1 - sigma) x0 + sigma eps,
the UNet outputs the velocity eps - x0 at timestep sigma * 1000 (float), read from the folder's
``FlowMatchEulerDiscreteScheduler`` config (shift 1.0). Its own sampler is ``flow-euler`` with CFG. Trained by
this project (recipe and measured time in :mod:`flashbench_plugins.toy.build`: logit-normal sigma, 10% null
prompts, EMA, one CPU thread); the float16 weights ship in ``flashbench_plugins/weights/toy-digits-flow-teacher``
and are rebuilt with ``python -m flashbench_plugins.toy.build --flow-teacher``.

LoRA on the same targets as ``toy-digits``; the student exports as a diffusers LoRA that
``ToyDigitsPipeline.load_lora_weights`` loads; ``ToyFlowTeacher.pipeline()`` (:mod:`._toy_flow`) samples it with
``FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)`` and ``sigmas=[1.0, 0.75, 0.5, 0.25][:n]``
(``[1.0, 0.5]`` for 2 steps), the step of the ``flash`` sampler.

Config: ``path`` (a diffusers folder; empty: the bundled weights), ``default_lora_rank`` (16).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl

BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "toy-digits-flow-teacher"


@dataclass(frozen=True)
class ToyDigitsFlowTeacherConfig:
    path: str = ""
    default_lora_rank: int = 16


def build(config: ToyDigitsFlowTeacherConfig, *, device="cpu", dtype=None):
    import torch

    from ._toy_flow import ToyFlowTeacher

    return ToyFlowTeacher(config.path or str(BUNDLED), device=device, dtype=dtype or torch.float32, default_lora_rank=config.default_lora_rank)


@hookimpl
def register_teachers(register):
    register(
        "toy-digits-flow",
        build,
        config=ToyDigitsFlowTeacherConfig,
        description="16x16 coloured-digits rectified-flow teacher trained here (SD1.5 classes, pixel space, velocity)",
    )
