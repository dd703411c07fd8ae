"""Typed configuration of one study variant: what a study file's ``[base]``, scales, matrix axes and
variants set. Paper-faithful defaults: SD1.5's recipe of Appendix A.1.

A component field holds either a registry name (``"lsgan"``) or a table ``{ name = "lsgan", ... }``
whose other keys are that component's options (checked against its config dataclass).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .kinds import COMPONENT_FIELDS as _FIELDS, OPTIONAL_FIELDS

# Training fields naming a component, and the registry kind (and required tag) each is looked up in: the
# kinds table's (flashbench.kinds). Loss fields accept "none" to switch the term off.
COMPONENT_FIELDS: dict[str, tuple[str, str | None]] = _FIELDS["train"]
OPTIONAL_COMPONENT_FIELDS = OPTIONAL_FIELDS


# Training fields that change neither what the training loop computes nor a variant's rows: logging,
# checkpoint cadence, trackers, and the recipe's stated global batch (the loop computes with the running one,
# processes x batch_size). Left out of the recipe fingerprints of rows and done markers.
#: what ``student_prediction`` may say (:func:`flashbench.method.noise.student_process`): "teacher" reads the
#: student's output as the teacher's; "auto" as the teacher's unless that amplifies the student's error at full
#: noise (a schedule ending near zero SNR), then as v; or a fixed parametrisation
STUDENT_PREDICTIONS = ("teacher", "auto", "epsilon", "v_prediction", "sample")

ROW_NEUTRAL_FIELDS = ("log_every", "checkpoint_every", "trackers", "global_batch")
# ... and those a checkpoint may be continued across: the run's length (a finished variant's last checkpoint
# continues to more iterations), evaluation-only baselines and compilation (the same weights either way).
RESUME_NEUTRAL_FIELDS = ROW_NEUTRAL_FIELDS + ("iterations", "evaluate_only", "pretrained_lora", "compile_student")


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.name != "none"

    def to_data(self) -> Any:
        return {"name": self.name, **self.options} if self.options else self.name

    def __hash__(self) -> int:  # options is a dict; hash by its items
        return hash((self.name, tuple(sorted(self.options.items(), key=lambda kv: kv[0]))))


@dataclass(frozen=True)
class TrainConfig:
    """One distillation run (Algorithm 1). Defaults are the paper's SD1.5 recipe."""

    teacher: ComponentSpec = ComponentSpec("sd15")
    conditioning: ComponentSpec = ComponentSpec("text")
    dataset: ComponentSpec = ComponentSpec("image-captions")
    solver: ComponentSpec = ComponentSpec("dpm-solver")
    timesteps: ComponentSpec = ComponentSpec("flash")
    distil_loss: ComponentSpec = ComponentSpec("mse")
    adv_loss: ComponentSpec = ComponentSpec("lsgan")
    dmd_loss: ComponentSpec = ComponentSpec("dmd")
    num_timesteps: int = 32  # K: the teacher's grid, a multiple of 4
    phase_length: int = 5000  # iterations per phase of pi and of the lambda schedules
    lambda_adv: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)  # one value per phase
    lambda_dmd: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7)
    guidance_min: float = 3.0  # omega ~ U[guidance_min, guidance_max]
    guidance_max: float = 13.0
    guidance_fixed: float = 0.0  # > 0: omega fixed at this value instead of sampled (Fig. 5d)
    adv_timesteps: tuple[float, ...] = (0.01, 0.25, 0.5, 0.75)  # t' for re-noising before the discriminator
    student_prediction: str = (
        "teacher"  # how the student's output is read: "teacher" (the teacher's parametrisation: the paper), "epsilon", "v_prediction" or "sample" (x0)  # noqa: E501
    )
    lcm_boundary: bool = False  # the authors' code: the student outputs c_skip z_t + c_out x0 (LCM's boundary condition)
    draws: str = "per_sample"  # the paper: a start index i and an omega per sample; "per_batch": one of each per batch, DMD its own omega (the authors' code)
    phase_counting: str = "batches"  # the paper: a phase is phase_length batches; "optimizer_calls": the authors' counter, which advances on each of the student's and the discriminator's updates  # noqa: E501
    iterations: int = 20000
    evaluate_only: bool = False  # a baseline: no training, sample the (pretrained) student as it is
    pretrained_lora: str = ""  # with evaluate_only: a published LoRA, "hub/id" or "hub/id::file.safetensors" or a path
    batch_size: int = 4  # per process
    global_batch: int = 0  # the recipe's processes x batch_size (Appendix A); 0: not stated. A run warns when its own differs
    learning_rate: float = 1e-5  # student LoRA, Adam
    disc_learning_rate: float = 1e-5  # discriminator head, Adam
    lora_rank: int = 0  # 0: the teacher plugin's default
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16" (accelerate)
    gradient_checkpointing: bool = False
    compile_student: bool = False  # torch.compile the denoiser (GPU; a first step pays the compile)
    log_every: int = 50
    checkpoint_every: int = 1000  # mid-variant checkpoints (LoRA, head, optimisers, RNG, step); 0: none
    trackers: tuple[str, ...] = ("tensorboard",)  # accelerate trackers for training metrics: tensorboard, wandb


@dataclass(frozen=True)
class EvalConfig:
    """Sampling and evaluation of a variant. Teacher baselines are rows of their own."""

    nfe: tuple[int, ...] = (2, 4)  # student steps (1 NFE each: no CFG)
    evaluators: tuple[ComponentSpec, ...] = (ComponentSpec("fid"), ComponentSpec("clip_score"))
    prompts: ComponentSpec = ComponentSpec("coco2017-val")
    sampler: ComponentSpec = ComponentSpec("flash")  # the few-step sampler of the student's rows (a published baseline: its own)
    num_samples: int = 5000
    batch_size: int = 16
    guidance: float = 7.5  # the teacher's CFG scale for its baseline samples
    teacher_steps: tuple[int, ...] = (25,)  # teacher baselines, in solver steps (2 NFE each with CFG)
    teacher_at_student_nfe: bool = True  # also sample the teacher at each student NFE
    grid_size: int = 8  # samples per grid image in the report
    bootstrap_resamples: int = 1000  # paired bootstrap resamples per result row for its 95% interval (0: no intervals)


# Fields (training or evaluation) added after run folders existed, at the value every earlier run had: left out
# of the recipe and checkpoint fingerprints while they hold it, so those runs resume instead of running again.
FINGERPRINT_SINCE: dict[str, Any] = {"sampler": ComponentSpec("flash"), "student_prediction": "teacher"}

FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
EVAL_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(EvalConfig)}
