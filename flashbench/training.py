"""A trainer wired from its configuration, and the loop that drives it.

:func:`build_trainer` is the one place that turns a :class:`~flashbench.config.TrainConfig` into a
:class:`~flashbench.method.trainer.FlashTrainer`: the components its specs name (teacher, conditioning,
solver, timestep distribution, the three loss terms) built through the registries by the run's component
cache (:class:`flashbench.run.resources.StudyResources`, which gives each factory the context its kind
names), the seed of the LoRA initialisation, and an accelerator with the configuration's trackers.

:class:`TrainingLoop` runs a trainer for a number of iterations: batches, the loss history, progress,
trackers, and the checkpoints that let a stopped run continue bit for bit. The step it drives (Algorithm 1)
lives in :mod:`flashbench.method.trainer`, free of I/O.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import checkpoint as ckpt
from .config import TrainConfig
from .method.trainer import FlashTrainer, new_accelerator

logger = logging.getLogger("flashbench")


def make_accelerator(cfg: TrainConfig, device, tracking_dir: Path | None = None):
    """The accelerator of one trainer: ``cfg``'s mixed precision, on the CPU when ``device`` is; with
    ``tracking_dir``, ``cfg.trackers`` log under it (no tracker without one)."""
    trackers = list(cfg.trackers) if tracking_dir is not None else []
    return new_accelerator(cfg.mixed_precision, device, log_with=trackers or None, project_dir=str(tracking_dir) if trackers else None)


@dataclass(frozen=True)
class TrainerComponents:
    """The components a :class:`FlashTrainer` is built with besides its teacher (a loss term is None when
    its spec is ``"none"``)."""

    conditioning: object
    solver: object
    timesteps: object
    distil: object
    gan: object
    dmd: object


def build_components(cfg: TrainConfig, resources, teacher, *, seed: int | None = None) -> TrainerComponents:
    """The components ``cfg``'s specs name for a trainer on ``teacher``, built by ``resources`` (a
    :class:`~flashbench.run.resources.StudyResources`: conditioning, datasets and losses built once, solver and
    timesteps afresh) in the order a study run's trainers have always been built: conditioning, solver, timesteps,
    then the three losses (the distillation loss is given the teacher). With ``seed``, the global torch RNG is
    seeded just before the losses (the LoRA initialisation draws from it; a loss built now, a perceptual network,
    draws from it first). Without, nothing is seeded: a study's preflight builds what its trainers will use."""
    conditioning = resources.conditioning(cfg.conditioning)
    solver = resources.solver(cfg.solver)
    timesteps = resources.timesteps(cfg)
    if seed is not None:
        torch.manual_seed(seed)
    distil, gan, dmd = resources.loss(cfg.distil_loss, teacher), resources.loss(cfg.adv_loss), resources.loss(cfg.dmd_loss)
    return TrainerComponents(conditioning, solver, timesteps, distil, gan, dmd)


def build_trainer(
    cfg: TrainConfig, components, *, seed: int, adapter_name: str, teacher=None, device=None, tracking_dir: Path | None = None, accelerator=None, resources=None
) -> FlashTrainer:
    """A :class:`FlashTrainer` for ``cfg``, its components built from ``cfg``'s specs by ``components`` (the
    registries, :func:`flashbench.plugins.collect_components`) with :func:`build_components`.

    ``teacher``: the teacher to distil (default: ``cfg.teacher``, built on ``device``, default the CPU);
    the distillation loss is given it. ``seed``: the LoRA initialisation (global torch RNG, seeded here
    before the losses are built, as a study run has always done), the discriminator head and the trainer's
    draws. ``tracking_dir``: where ``cfg.trackers`` log (none without it). ``accelerator``: an
    Accelerator the caller made (``accelerate launch`` scripts; the loop logs to its trackers only with a
    ``tracking_dir``); default :func:`make_accelerator`.
    ``resources``: a :class:`~flashbench.run.resources.StudyResources` whose built components to share (a
    study run's: one teacher, one perceptual network); default a fresh one.
    """
    if resources is None:
        from .run.resources import StudyResources

        resources = StudyResources(components, teacher.device if teacher is not None else torch.device(device or "cpu"))
    if teacher is None:
        teacher = resources.teacher(cfg.teacher)
    parts = build_components(cfg, resources, teacher, seed=seed)
    if accelerator is None:
        accelerator = make_accelerator(cfg, teacher.device, tracking_dir)
    return FlashTrainer(
        teacher,
        parts.conditioning,
        parts.solver,
        parts.timesteps,
        cfg,
        distil=parts.distil,
        gan=parts.gan,
        dmd=parts.dmd,
        adapter_name=adapter_name,
        seed=seed,
        accelerator=accelerator,
        tracking=tracking_dir is not None,
    )


@dataclass
class TrainSummary:
    iterations: int
    seconds: float
    seconds_per_step: float
    teacher_nfe_per_step: float
    student_nfe_per_step: float
    trainable_params: int
    history: list[dict] = field(default_factory=list)
    #: torch.cuda.max_memory_allocated over the training loop, in GiB (2**30 bytes), the teacher's weights included
    #: (reset when the loop starts); None on a CPU
    peak_memory_gb: float | None = None


class TrainingLoop:
    """Drives ``trainer.step`` over a dataset: the loss history (every ``cfg.log_every`` steps and the last),
    a progress bar, the accelerator's trackers (a trainer built with a ``tracking_dir``) and checkpoints."""

    def __init__(self, trainer: FlashTrainer):
        self.trainer = trainer
        self.accelerator = trainer.accelerator

    @property
    def tracking(self) -> bool:
        """Whether the loop logs to the accelerator's trackers (a trainer built with a tracking folder)."""
        return self.trainer.tracking

    def save_checkpoint(self, path: Path, *, step: int, data_rng: np.random.Generator, counters: dict) -> None:
        """Everything the loop needs to continue bit for bit, written atomically by the main process."""
        if self.accelerator.is_main_process:
            ckpt.save_training(path, self.trainer, step=step, data_rng=data_rng, counters=counters)
        self.accelerator.wait_for_everyone()

    def run(self, dataset, iterations: int, *, seed: int, progress: bool = True, log=None, desc: str = "train", checkpoint: Path | None = None) -> TrainSummary:
        """Run iterations [0, iterations), continuing from ``checkpoint`` when it holds one for this
        configuration; with ``cfg.checkpoint_every`` > 0 a checkpoint is written every that many steps
        and at the end (so a run killed while evaluating does not train again). ``log``: called with each
        row of the loss history. The trackers are finished when the loop ends, also on an error."""
        try:
            return self._run(dataset, iterations, seed=seed, progress=progress, log=log, desc=desc, checkpoint=checkpoint)
        finally:
            if self.tracking:  # not end_training(): it would also tear down the process group other variants use
                for tracker in self.accelerator.trackers:
                    tracker.finish()

    def _run(self, dataset, iterations, *, seed, progress, log, desc, checkpoint):
        from .progress import progress_bar  # tqdm on a terminal, a line every 5% in a log file

        trainer, cfg = self.trainer, self.trainer.cfg
        rng = np.random.default_rng(seed)
        history: list[dict] = []
        counters = {"teacher_nfe": 0.0, "student_nfe": 0.0, "seconds": 0.0}
        start = 0
        state = ckpt.load_training(checkpoint, trainer, rng) if checkpoint is not None else None
        if state is not None:
            start = int(state["step"])
            history = list(state.get("history", []))
            counters = {k: float(state.get(k, 0.0)) for k in counters}
            logger.info("%s: resuming from the checkpoint at step %d of %d", desc, start, iterations)
        if self.tracking:
            self.accelerator.init_trackers(desc, config=ckpt.tracker_config(cfg))
        every = cfg.checkpoint_every if checkpoint is not None else 0
        cuda = trainer.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(trainer.device)
        t0 = time.perf_counter()
        bar = progress_bar(range(start, iterations), desc=desc, disable=not progress)
        batches = trainer.local_batches(dataset, rng, start)
        for it in bar:
            batch = next(batches)
            stats = trainer.step(batch, it)
            counters["teacher_nfe"] += stats.teacher_nfe
            counters["student_nfe"] += stats.student_nfe
            if it % cfg.log_every == 0 or it == iterations - 1:
                row = {"step": it, "phase": stats.phase, **stats.losses}
                history.append(row)
                if log:
                    log(row)
                if self.tracking:
                    self.accelerator.log({f"loss/{k}": v for k, v in stats.losses.items()} | {"phase": stats.phase}, step=it)
                bar.set_postfix({k: f"{v:.3g}" for k, v in stats.losses.items() if k != "total"})
            if every and ((it + 1) % every == 0 or it + 1 == iterations):
                elapsed = counters["seconds"] + time.perf_counter() - t0
                self.save_checkpoint(checkpoint, step=it + 1, data_rng=rng, counters={**counters, "seconds": elapsed, "history": history})
        seconds = counters["seconds"] + time.perf_counter() - t0
        n = max(1, iterations)
        peak = torch.cuda.max_memory_allocated(trainer.device) / 2**30 if cuda else None
        return TrainSummary(
            iterations, seconds, seconds / n, counters["teacher_nfe"] / n, counters["student_nfe"] / n, trainer.trainable_params, history, peak_memory_gb=peak
        )
