"""Sampling and evaluation: the inputs every variant of a seed shares, the teacher's and the students'
samplers, and one evaluation set streamed through the evaluators, each measurement with its bootstrap."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..config import ComponentSpec, EvalConfig, TrainConfig
from ..errors import UserError
from ..stats import SEED_OFFSET


@dataclass(frozen=True)
class Measurement:
    """One metric on one evaluation set: the value, its bootstrap replicates and 95% interval."""

    value: float
    higher_is_better: bool
    low: float
    high: float
    method: str
    replicates: object | None  # (B,) numpy array, None when the evaluator gives none
    seconds: float  # the bootstrap's
    eval_seconds: float = 0.0  # the evaluator's: its updates over the samples, and compute()


class EvaluationSet(NamedTuple):
    """What :meth:`Evaluation.sample_and_evaluate` measured."""

    values: dict  # metric -> Measurement
    n: int  # samples
    sample_seconds: float


def measure(evaluator, n: int, resamples: int, seed: int) -> Measurement:
    """``evaluator.compute()`` and, from the same kept samples, its paired bootstrap: resampled with the
    indices of ``(seed, n)`` (:func:`flashbench.stats.resample_counts`), shared by every row of the seed."""
    import numpy as np

    from ..method.evaluation import FrechetEvaluator, KernelEvaluator
    from ..stats import centred_interval, replicates

    t0 = time.perf_counter()
    value = float(evaluator.compute())
    compute_seconds = time.perf_counter() - t0
    hib = bool(evaluator.higher_is_better)
    t0 = time.perf_counter()
    reps = None
    if resamples > 0 and n > 1 and evaluator.replicates(np.ones((1, n), dtype=np.int32)) is not None:
        reps = replicates(evaluator.replicates, n, resamples, SEED_OFFSET + seed)
    if reps is None:
        why = "bootstrap disabled (bootstrap_resamples = 0)" if resamples <= 0 else f"{type(evaluator).__name__} gives no bootstrap replicates"
        return Measurement(value, hib, float("nan"), float("nan"), why, None, 0.0, compute_seconds)
    low, high = centred_interval(value, reps)
    method = (
        f"bootstrap (percentile, re-centred on the value) over the {n} samples, {resamples} resamples (seed {SEED_OFFSET + seed}), "
        f"paired across the rows of seed {seed}" + ("; reference fixed" if isinstance(evaluator, (FrechetEvaluator, KernelEvaluator)) else "")
    )
    return Measurement(value, hib, low, high, method, reps, time.perf_counter() - t0, compute_seconds)


class Evaluation:
    """Samples evaluation sets and measures them, with the study's components (:class:`StudyResources`)."""

    def __init__(self, resources, device, study_path):
        self.resources, self.device, self.study_path = resources, device, study_path
        self._inputs: dict = {}

    def eval_inputs(self, train: TrainConfig, ev: EvalConfig, seed: int):
        """Prompts, their conditioning and the initial noise: identical for every variant of a seed."""
        import torch

        key = (train.teacher, train.dataset, ev.prompts, ev.num_samples, seed)
        if key not in self._inputs:
            teacher = self.resources.teacher(train.teacher)
            prompts_ds = self.resources.dataset(ev.prompts)
            prompts = prompts_ds.eval_prompts(ev.num_samples, seed=0)
            extras = prompts_ds.eval_extras(ev.num_samples, seed=0)
            g = torch.Generator("cpu").manual_seed(10_000 + seed)
            noise = torch.randn((ev.num_samples, *teacher.latent_shape), generator=g)
            self._inputs[key] = (prompts, noise, extras)
        return self._inputs[key]

    def evaluators(self, ev: EvalConfig) -> list:
        out = []
        for spec in ev.evaluators:
            evaluator = self.resources.evaluator(spec)
            evaluator.prepare(self.resources.dataset(ev.prompts), ev.num_samples)
            out.append(evaluator)
        return out

    def sample_and_evaluate(
        self, sample_fn, train, ev: EvalConfig, seed: int, grid_path: Path, *, reference: Path, save_reference: bool = False
    ) -> EvaluationSet:
        """Generate the evaluation set batch by batch and stream it through every evaluator.

        Only one batch of images is in memory at a time; the teacher's many-step samples (for
        LPIPS-to-teacher), one file per batch in the folder ``reference``, are read back chunk by chunk,
        or written there with ``save_reference``. Each measurement carries its bootstrap replicates and
        95% interval (:func:`measure`).
        """
        prompts, noise, extras = self.eval_inputs(train, ev, seed)
        evaluators = self.evaluators(ev)
        for e in evaluators:
            e.reset()
        needs_ref = any(e.needs_teacher_reference for e in evaluators)
        grid, seconds, update_seconds = [], 0.0, {}
        for chunk, i in enumerate(range(0, len(prompts), ev.batch_size)):
            batch_prompts = prompts[i : i + ev.batch_size]
            t0 = time.perf_counter()
            batch_extras = {k: v[i : i + ev.batch_size].to(self.device) for k, v in extras.items()}
            images = sample_fn(batch_prompts, noise[i : i + ev.batch_size].to(self.device), batch_extras).float().cpu()
            seconds += time.perf_counter() - t0
            if save_reference:
                _save_chunk(reference, chunk, images)
            ref_images = images if save_reference else (_load_chunk(reference, chunk) if needs_ref else None)
            for e in evaluators:
                t0 = time.perf_counter()
                e.update(images, batch_prompts, reference=ref_images if e.needs_teacher_reference else None)
                update_seconds[e.metric] = update_seconds.get(e.metric, 0.0) + time.perf_counter() - t0
            if sum(len(g) for g in grid) < ev.grid_size:
                grid.append(images[: ev.grid_size - sum(len(g) for g in grid)])
        if save_reference:
            (reference / "complete").write_text(str(len(prompts)))
        if grid and ev.grid_size:
            import torch

            _image_grid(torch.cat(grid), ev.grid_size).save(grid_path)
        values = {}
        for e in evaluators:
            m = measure(e, len(prompts), ev.bootstrap_resamples, seed)
            values[e.metric] = dataclasses.replace(m, eval_seconds=m.eval_seconds + update_seconds.get(e.metric, 0.0))
        return EvaluationSet(values, len(prompts), seconds)

    # --- the samplers ----------------------------------------------------------------------------------
    def teacher_sampler(self, train: TrainConfig, ev: EvalConfig, steps: int):
        """The teacher's own sampler: its solver, ``steps`` steps with CFG at the study's guidance."""
        from ..method.sampling import teacher_sample

        teacher = self.resources.teacher(train.teacher)
        cond_plugin = self.resources.conditioning(train.conditioning)
        solver = self.resources.solver(train.solver)

        def fn(p, z, extras):
            c, u = cond_plugin.prepare(teacher, p, extras)
            return teacher_sample(teacher, solver, c, u, z, steps, ev.guidance)

        return fn

    def student_sampler(self, train: TrainConfig, nfe: int, seed: int, *, student: bool = True, sampler: ComponentSpec | None = None):
        """The few-step sampler (``sampler``, default ``flash``), no CFG (``student=False``: the teacher's network)."""
        import torch

        from ..method.sampling import student_sample
        from ..method.teacher import process_of

        teacher = self.resources.teacher(train.teacher)
        cond_plugin = self.resources.conditioning(train.conditioning)
        few_step = self.resources.sampler(sampler or ComponentSpec("flash"))
        try:
            few_step.check(process_of(teacher))
        except ValueError as e:
            raise UserError(f"{self.study_path}: eval.sampler: {e}") from None
        g = torch.Generator("cpu").manual_seed(20_000 + seed)

        def fn(p, z, extras):
            c, _ = cond_plugin.prepare(teacher, p, extras)
            return student_sample(teacher, c, z, nfe, g, student=student, sampler=few_step, prediction=train.student_prediction)

        return fn


def _image_grid(images, columns: int):
    import numpy as np
    from PIL import Image

    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    n, h, w, c = arr.shape
    rows = (n + columns - 1) // columns
    canvas = np.zeros((rows * (h + 1) + 1, columns * (w + 1) + 1, c), dtype=np.uint8) + 40
    for i in range(n):
        r, q = divmod(i, columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = arr[i]
    img = Image.fromarray(canvas)
    scale = max(1, 128 // h)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def _save_chunk(folder: Path, index: int, images) -> None:
    import torch
    from safetensors.torch import save_file

    tmp = folder / f".{index:05d}.tmp"
    save_file({"images": images.to(torch.float16).contiguous()}, str(tmp))
    tmp.replace(folder / f"{index:05d}.safetensors")


def _load_chunk(folder: Path, index: int):
    from safetensors.torch import load_file

    path = folder / f"{index:05d}.safetensors"
    if not path.exists():
        raise RuntimeError(f"missing teacher reference chunk {path}; delete {folder.parent} to recompute the baselines")
    return load_file(str(path))["images"].float()
