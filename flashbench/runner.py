"""Run a resolved study: per variant, distil (Algorithm 1), sample at the study's NFEs, evaluate, store
tidy rows; teacher baselines are rows too. The teacher, dataset and evaluators are loaded once per study.
Variants already marked done in the result store are skipped, and the running variant continues from
its last checkpoint, so a stopped (even SIGKILLed) study resumes.

Under ``accelerate launch`` every process trains each variant data-parallel; the main process alone
samples, evaluates, writes the result store and the report, and the others wait for it.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path

from dataclasses import dataclass

from .config import FINGERPRINT_SINCE, ROW_NEUTRAL_FIELDS, ComponentSpec, EvalConfig, TrainConfig
from .errors import StudyError, UserError
from .stats import LEVEL, SEED_OFFSET

log = logging.getLogger("flashbench")

TEACHER = "teacher"  # the teacher with its own sampler and CFG
_NO_DEFAULT = object()
TEACHER_FEWSTEP = "teacher-fewstep"  # the teacher through the student's few-step sampler, no CFG
#: the training fields a teacher baseline depends on (its "teacher side"): variants that share them share baselines
TEACHER_SIDE = ("teacher", "conditioning", "dataset", "solver")


def baseline_suffixes(variants) -> dict[str, str]:
    """Teacher side -> the suffix of its baselines' names. The first variant's teacher side has none (its
    baselines are ``teacher`` / ``teacher-fewstep``, folder ``teacher-s<seed>``, as in a one-teacher study);
    each other teacher side a trained variant uses gets ``@<teacher name>`` (``teacher@toy-digits-flow``,
    folder ``teacher@toy-digits-flow-s<seed>``), so each student is compared with its own teacher. An
    evaluation-only variant on a teacher side no trained variant uses is compared with the first's."""
    variants = list(variants)
    if not variants:
        return {}
    out = {_teacher_side(variants[0].train): ""}
    for v in variants:
        side = _teacher_side(v.train)
        if v.train.evaluate_only or side in out:
            continue
        suffix = f"@{v.train.teacher.name}"
        if suffix in out.values():  # the same teacher with other options (or another solver, dataset...)
            suffix = f"{suffix}-{len(out)}"
        out[side] = suffix
    return out


def _train_fields(variant) -> dict:
    """A variant's training fields as plain data, the row-neutral ones left out."""
    from .checkpoint import _plain

    return {f.name: _plain(getattr(variant.train, f.name)) for f in dataclasses.fields(variant.train)
            if f.name not in ROW_NEUTRAL_FIELDS and getattr(variant.train, f.name) != FINGERPRINT_SINCE.get(f.name, _NO_DEFAULT)}


def _teacher_side(train: TrainConfig) -> str:
    """A fingerprint of the training fields a teacher baseline depends on (:data:`TEACHER_SIDE`, components all)."""
    return _fingerprint({k: getattr(train, k).to_data() for k in TEACHER_SIDE})


def _fingerprint(data: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def measure(evaluator, n: int, resamples: int, seed: int) -> Measurement:
    """``evaluator.compute()`` and, from the same kept samples, its paired bootstrap: resampled with the
    indices of ``(seed, n)`` (:func:`flashbench.stats.resample_counts`), shared by every row of the seed."""
    import numpy as np

    from .method.evaluation import FrechetEvaluator, KernelEvaluator
    from .stats import centred_interval, replicates

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
    method = (f"bootstrap (percentile, re-centred on the value) over the {n} samples, {resamples} resamples (seed {SEED_OFFSET + seed}), "
              f"paired across the rows of seed {seed}" + ("; reference fixed" if isinstance(evaluator, (FrechetEvaluator, KernelEvaluator)) else ""))
    return Measurement(value, hib, low, high, method, reps, time.perf_counter() - t0, compute_seconds)


class StudyResources:
    """Components built once per study, keyed by their spec (the teacher is the expensive one)."""

    def __init__(self, components, device):
        self.components, self.device = components, device
        self._cache: dict = {}
        self.loads: dict[str, int] = {}

    def _get(self, kind: str, spec: ComponentSpec, **available):
        """``spec`` built once, its factory given exactly the context the kinds table names for ``kind``
        (:mod:`flashbench.kinds`; the device always available, the rest from ``available``)."""
        from .kinds import BY_NAME

        available = {"device": self.device, **available}
        context = {name: available.get(name) for name in BY_NAME[kind].context}
        key = (kind, spec.name, repr(sorted(spec.options.items())), id(context.get("teacher")))
        if key not in self._cache:
            self.loads[kind] = self.loads.get(kind, 0) + 1
            log.info("loading %s %s", kind, spec.name)
            self._cache[key] = self.components.get(kind, spec.name).build(spec.options, **context)
        return self._cache[key]

    def teacher(self, spec):
        return self._get("teacher", spec)

    def dataset(self, spec):
        return self._get("dataset", spec)

    def conditioning(self, spec):
        return self._get("conditioning", spec)

    def evaluator(self, spec):
        return self._get("evaluator", spec)

    def sampler(self, spec: ComponentSpec):
        return self._get("sampler", spec)

    def loss(self, spec, teacher=None):
        return self._get("loss", spec, teacher=teacher) if spec.enabled else None


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


class StudyRunner:
    def __init__(self, study, store, components, *, device="cpu", progress=True, shard: tuple[int, int] = (0, 1),
                 claims=None, primary: bool = True, check_workers=None):
        import torch

        from accelerate import PartialState

        self.study, self.store, self.components = study, store, components
        self.device = torch.device(device)
        self.state = PartialState(cpu=self.device.type == "cpu")
        self.is_main = self.state.is_main_process
        self.suffixes = baseline_suffixes(study.variants)
        self.progress = progress
        self.shard = shard
        # --jobs N (flashbench.jobs): tasks are claimed from ``claims`` instead of split by ``shard``; only the
        # ``primary`` worker writes the study and provenance; ``check_workers`` raises when a worker failed
        self.claims, self.primary, self.check_workers = claims, primary, check_workers
        self.resources = StudyResources(components, self.device)
        self._eval_inputs: dict = {}
        self._rerun_warned: set[str] = set()
        self._parametrisation_warned: set = set()

    # --- shared evaluation inputs ----------------------------------------------------------------------
    def eval_inputs(self, train: TrainConfig, ev: EvalConfig, seed: int):
        """Prompts, their conditioning and the initial noise: identical for every variant of a seed."""
        import torch

        key = (train.teacher, train.dataset, ev.prompts, ev.num_samples, seed)
        if key not in self._eval_inputs:
            teacher = self.resources.teacher(train.teacher)
            prompts_ds = self.resources.dataset(ev.prompts)
            prompts = prompts_ds.eval_prompts(ev.num_samples, seed=0)
            extras = prompts_ds.eval_extras(ev.num_samples, seed=0)
            g = torch.Generator("cpu").manual_seed(10_000 + seed)
            noise = torch.randn((ev.num_samples, *teacher.latent_shape), generator=g)
            self._eval_inputs[key] = (prompts, noise, extras)
        return self._eval_inputs[key]

    def evaluators(self, ev: EvalConfig) -> list:
        out = []
        for spec in ev.evaluators:
            evaluator = self.resources.evaluator(spec)
            evaluator.prepare(self.resources.dataset(ev.prompts), ev.num_samples)
            out.append(evaluator)
        return out

    def sample_and_evaluate(self, sample_fn, train, ev: EvalConfig, seed: int, grid_path: Path, *, save_reference: Path | None = None):
        """Generate the evaluation set batch by batch and stream it through every evaluator.

        Only one batch of images is in memory at a time; the teacher's many-step reference (for
        LPIPS-to-teacher) is read back chunk by chunk, or written when ``save_reference`` is given.
        Returns ({metric: Measurement}, number of samples, seconds spent sampling); each measurement
        carries its bootstrap replicates and 95% interval (:func:`measure`).
        """
        prompts, noise, extras = self.eval_inputs(train, ev, seed)
        evaluators = self.evaluators(ev)
        for e in evaluators:
            e.reset()
        ref_dir = save_reference or self.reference_dir(train, ev, seed)
        needs_ref = any(e.needs_teacher_reference for e in evaluators)
        grid, seconds, update_seconds = [], 0.0, {}
        for chunk, i in enumerate(range(0, len(prompts), ev.batch_size)):
            batch_prompts = prompts[i : i + ev.batch_size]
            t0 = time.perf_counter()
            batch_extras = {k: v[i : i + ev.batch_size].to(self.device) for k, v in extras.items()}
            images = sample_fn(batch_prompts, noise[i : i + ev.batch_size].to(self.device), batch_extras).float().cpu()
            seconds += time.perf_counter() - t0
            if save_reference is not None:
                _save_chunk(save_reference, chunk, images)
            reference = images if save_reference is not None else (_load_chunk(ref_dir, chunk) if needs_ref else None)
            for e in evaluators:
                t0 = time.perf_counter()
                e.update(images, batch_prompts, reference=reference if e.needs_teacher_reference else None)
                update_seconds[e.metric] = update_seconds.get(e.metric, 0.0) + time.perf_counter() - t0
            if sum(len(g) for g in grid) < ev.grid_size:
                grid.append(images[: ev.grid_size - sum(len(g) for g in grid)])
        if save_reference is not None:
            (save_reference / "complete").write_text(str(len(prompts)))
        if grid and ev.grid_size:
            import torch

            _image_grid(torch.cat(grid), ev.grid_size).save(grid_path)
        values = {}
        for e in evaluators:
            m = measure(e, len(prompts), ev.bootstrap_resamples, seed)
            values[e.metric] = dataclasses.replace(m, eval_seconds=m.eval_seconds + update_seconds.get(e.metric, 0.0))
        return values, len(prompts), seconds

    # --- teacher baselines -------------------------------------------------------------------------
    def teacher_steps(self, ev: EvalConfig) -> list[int]:
        steps = set(ev.teacher_steps)
        if ev.teacher_at_student_nfe:
            for n in ev.nfe:
                steps.add(n)  # the same number of sampler steps (2n NFE with CFG)
                if n % 2 == 0:
                    steps.add(n // 2)  # the same NFE
        return sorted(steps, reverse=True)

    def baseline_suffix(self, train: TrainConfig) -> str:
        """``""`` for the study's first teacher side, ``"@<teacher>"`` for another (:func:`baseline_suffixes`)."""
        return self.suffixes.get(_teacher_side(train), "")

    def baseline_key(self, train: TrainConfig, seed: int) -> str:
        """The completion key (and folder) of the teacher baselines a variant of ``train`` is compared with."""
        return f"{TEACHER}{self.baseline_suffix(train)}-s{seed}"

    def reference_dir(self, train, ev, seed) -> Path:
        """Where the teacher's many-step samples (max of teacher_steps) are kept, one file per batch."""
        return self.store.variant_dir(self.baseline_key(train, seed)) / f"reference_steps{max(ev.teacher_steps)}"

    def _teacher_sampler(self, train, ev, steps):
        """The teacher's own sampler: its solver, ``steps`` steps with CFG at the study's guidance."""
        from .method.sampling import teacher_sample

        teacher = self.resources.teacher(train.teacher)
        cond_plugin = self.resources.conditioning(train.conditioning)
        solver = self.components.get("solver", train.solver.name).build(train.solver.options)

        def fn(p, z, extras):
            c, u = cond_plugin.prepare(teacher, p, extras)
            return teacher_sample(teacher, solver, c, u, z, steps, ev.guidance)

        return fn

    # --- completion, per recipe ----------------------------------------------------------------------
    @staticmethod
    def recipe(variant, *, teacher_only: bool = False) -> str:
        """A fingerprint of what a variant's rows depend on (for the teacher baselines: the teacher side and
        the evaluation), recorded in its done marker."""
        from .checkpoint import _plain

        train = _train_fields(variant)
        if teacher_only:
            train = {k: train[k] for k in ("teacher", "conditioning", "dataset", "solver")}
        ev = {f.name: _plain(getattr(variant.eval, f.name)) for f in dataclasses.fields(variant.eval)
              if getattr(variant.eval, f.name) != FINGERPRINT_SINCE.get(f.name, _NO_DEFAULT)}
        return _fingerprint({"train": train, "eval": ev})

    @staticmethod
    def training_recipe(variant) -> str:
        """A fingerprint of what a variant's *student* depends on: its training fields (the neutral ones
        aside) and its seed. Variants that share it differ only in evaluation: one student serves them all."""
        return _fingerprint({"train": _train_fields(variant), "seed": variant.seed})

    def is_done(self, key: str, recipe: str) -> bool:
        """Done with this recipe. A variant done with another one (the study file was edited since) runs
        again; its training continues from its checkpoint when the training recipe is unchanged."""
        info = self.store.done_info(key)
        if info is None:
            return False
        recorded = info.get("recipe")
        if recorded is None or recorded == recipe:
            return True
        if key not in self._rerun_warned:
            self._rerun_warned.add(key)
            log.warning("%s was done with another recipe (%s, now %s): running it again", key, recorded, recipe)
        return False

    def run_teacher_baselines(self, variant) -> None:
        """The teacher baselines of ``variant``'s teacher side and seed: the teacher's own sampler with CFG at
        each of :meth:`teacher_steps`, and (``teacher_at_student_nfe``) sampled the student's way."""
        key = self.baseline_key(variant.train, variant.seed)
        suffix = self.baseline_suffix(variant.train)
        recipe = self.recipe(variant, teacher_only=True)
        if self.is_done(key, recipe) or not self.is_main:
            return
        from . import baseline_cache

        train, ev, seed = variant.train, variant.eval, variant.seed
        vdir = self.store.variant_dir(key)
        cache_key = baseline_cache.cache_key(recipe, seed, str(self.device))
        rows = baseline_cache.load(cache_key, vdir)
        if rows is not None:  # another study computed these very baselines with this code
            rows = [{**r, "study": self.study.name, "scale": self.study.scale, "git_hash": self.git_hash, "variant_key": key,
                     "variant": r["variant"].split("@")[0] + suffix} for r in rows]  # this study's names for that teacher
            log.info("teacher baselines of seed %d: from the cache (%s, key %s)", seed, baseline_cache.cache_root(), cache_key)
            self.store.add_rows(rows)
            self.store.mark_done(key, {"status": "ok", "rows": len(rows), "recipe": recipe, "baseline_cache": cache_key})
            return
        rows = []
        # the many-step run comes first: it writes the reference the others are compared with
        order = sorted(self.teacher_steps(ev), key=lambda s: (s != max(ev.teacher_steps), -s))
        for steps in order:
            is_reference = steps == max(ev.teacher_steps)
            ref_dir = self.reference_dir(train, ev, seed)
            if is_reference:
                ref_dir.mkdir(parents=True, exist_ok=True)
            values, n, seconds = self.sample_and_evaluate(
                self._teacher_sampler(train, ev, steps), train, ev, seed, vdir / f"grid_steps{steps:03d}_nfe{2 * steps}.png",
                save_reference=ref_dir if is_reference else None,
            )
            rows += self._measured_rows("teacher", key, TEACHER + suffix, seed, {}, 2 * steps, steps, values, n, sample_seconds=seconds)
            log.info("teacher %d steps (%d NFE): %s", steps, 2 * steps, {m: round(v.value, 4) for m, v in values.items()})
        if ev.teacher_at_student_nfe:
            # The teacher sampled the student's way (its few-step sampler and timesteps, no CFG): with the
            # CFG baseline above, the two ways a teacher can spend the student's NFE budget.
            for nfe in ev.nfe:
                values, n, seconds = self.sample_and_evaluate(
                    self._student_sampler(train, nfe, seed, student=False), train, ev, seed, vdir / f"fewstep_nfe{nfe}.png")
                rows += self._measured_rows("teacher", key, TEACHER_FEWSTEP + suffix, seed, {}, nfe, nfe, values, n, sample_seconds=seconds)
                log.info("teacher, student's sampler, %d NFE: %s", nfe, {m: round(v.value, 4) for m, v in values.items()})
        baseline_cache.store(cache_key, vdir, rows)
        self.store.add_rows(rows)
        self.store.mark_done(key, {"status": "ok", "rows": len(rows), "recipe": recipe})

    # --- one variant -------------------------------------------------------------------------------
    def run_variant(self, variant, index: int, *, siblings=()) -> list[tuple]:
        """Train ``variant`` and evaluate its student; then evaluate the same student for each of
        ``siblings`` (variants of the same training recipe and seed that differ only in evaluation: they
        would train an identical student). Returns ``[(variant, rows), ...]``, the variant first."""
        import torch

        from .method.trainer import FlashTrainer, NonFiniteLoss

        train, seed = variant.train, variant.seed
        if train.evaluate_only:
            return [(variant, self.run_baseline(variant, index))]
        teacher = self.resources.teacher(train.teacher)
        dataset = self.resources.dataset(train.dataset)
        cond_plugin = self.resources.conditioning(train.conditioning)
        solver = self.components.get("solver", train.solver.name).build(train.solver.options)
        timesteps = self.components.get("timesteps", train.timesteps.name).build(
            train.timesteps.options, num_timesteps=train.num_timesteps, phase_length=train.phase_length, num_phases=len(train.lambda_adv)
        )
        torch.manual_seed(seed)  # LoRA initialisation
        trainer = FlashTrainer(
            teacher, cond_plugin, solver, timesteps, train,
            distil=self.resources.loss(train.distil_loss, teacher), gan=self.resources.loss(train.adv_loss), dmd=self.resources.loss(train.dmd_loss),
            adapter_name=f"flash_{index}", seed=seed, tracking_dir=self.store.variant_dir(variant.key) / "logs",
        )
        vdir = self.store.variant_dir(variant.key)
        log.info("%s: student %s", variant.name, trainer.acceleration)
        try:
            try:
                summary = trainer.train(dataset, train.iterations, seed=seed, progress=self.progress and self.is_main,
                                        desc=variant.name if len(self.study.seeds) == 1 else f"{variant.name} (seed {seed})",
                                        log=lambda r: log.info("%s %s", variant.name, r), checkpoint=vdir / "checkpoint.safetensors")
            except NonFiniteLoss as exc:  # the last good checkpoint stays on disk
                log.error("%s failed: %s", variant.name, exc)
                return [(v, [self._row("student", v.key, v.name, seed, v.axes, None, None, exc.term, None, None, 0, status="failed",
                                       reason=str(exc), step=exc.step)]) for v in (variant, *siblings)]
            if not self.is_main:
                return [(v, []) for v in (variant, *siblings)]
            teacher.save_lora(trainer.adapter_name, vdir / "lora")
            cost = dict(trainable_params=summary.trainable_params, iterations=summary.iterations, seconds_per_step=summary.seconds_per_step,
                        teacher_nfe_per_step=summary.teacher_nfe_per_step, student_nfe_per_step=summary.student_nfe_per_step,
                        train_seconds=summary.seconds, processes=self.state.num_processes,
                        global_batch=self.state.num_processes * train.batch_size, peak_memory_gb=summary.peak_memory_gb)
            out = [(variant, self.student_rows(variant, teacher, cond_plugin, vdir, cost))]
            for sibling in siblings:  # the same student, evaluated as the sibling asks
                sdir = self.store.variant_dir(sibling.key)
                teacher.save_lora(trainer.adapter_name, sdir / "lora")
                log.info("%s: the student of %s (same training recipe and seed), evaluated as %s asks", sibling.name, variant.name, sibling.name)
                out.append((sibling, self.student_rows(sibling, teacher, cond_plugin, sdir, {**cost, "trained_with": variant.key})))
            return out
        finally:
            trainer.close()

    def run_baseline(self, variant, index: int) -> list[dict]:
        """An evaluation-only variant: a published checkpoint (a LoRA on the teacher, or the ``teacher``
        path itself, e.g. SDXL-Turbo) sampled without CFG by the sampler its authors published (``eval.sampler``)."""
        train = variant.train
        teacher = self.resources.teacher(train.teacher)
        cond_plugin = self.resources.conditioning(train.conditioning)
        name = f"baseline_{index}"
        lora_params = teacher.load_lora(name, train.pretrained_lora) if train.pretrained_lora else 0
        try:
            cost = dict(trainable_params=lora_params, iterations=0, train_seconds=0.0)
            return self.student_rows(variant, teacher, cond_plugin, self.store.variant_dir(variant.key), cost)
        finally:
            if train.pretrained_lora:
                teacher.remove_lora(name)

    def student_rows(self, variant, teacher, cond_plugin, vdir: Path, cost: dict) -> list[dict]:
        train, ev, seed = variant.train, variant.eval, variant.seed
        rows = []
        for nfe in ev.nfe:
            values, n, seconds = self.sample_and_evaluate(self._student_sampler(train, nfe, seed, sampler=ev.sampler), train, ev, seed,
                                                          vdir / f"grid_nfe{nfe}.png")
            baseline = self.baseline_suffix(train)  # another teacher side than the first's: name its baselines
            rows += self._measured_rows("student", variant.key, variant.name, seed, variant.axes, nfe, nfe, values, n,
                                        sample_seconds=seconds, **cost, **({"teacher_baseline": TEACHER + baseline} if baseline else {}))
            log.info("%s %d NFE: %s", variant.name, nfe, {m: round(v.value, 4) for m, v in values.items()})
        return rows

    def _student_sampler(self, train, nfe: int, seed: int, *, student: bool = True, sampler: ComponentSpec | None = None):
        """The few-step sampler (``sampler``, default ``flash``), no CFG (``student=False``: the teacher's network)."""
        import torch

        from .method.sampling import student_sample
        from .method.teacher import process_of

        teacher = self.resources.teacher(train.teacher)
        cond_plugin = self.resources.conditioning(train.conditioning)
        few_step = self.resources.sampler(sampler or ComponentSpec("flash"))
        try:
            few_step.check(process_of(teacher))
        except ValueError as e:
            raise UserError(f"{self.study.path}: eval.sampler: {e}") from None
        g = torch.Generator("cpu").manual_seed(20_000 + seed)

        def fn(p, z, extras):
            c, _ = cond_plugin.prepare(teacher, p, extras)
            return student_sample(teacher, c, z, nfe, g, student=student, sampler=few_step, prediction=train.student_prediction)

        return fn

    def _measured_rows(self, role, key, name, seed, axes, nfe, steps, values: dict, n, **extra) -> list[dict]:
        """One row per metric, with its interval; the bootstrap replicates go to the variant's folder."""
        rows = []
        for metric, m in values.items():
            interval = {"ci_low": m.low, "ci_high": m.high, "ci_level": LEVEL, "ci_method": m.method,
                        "bootstrap_seconds": m.seconds, "eval_seconds": m.eval_seconds}
            if m.replicates is not None:
                interval["bootstrap_file"] = self.store.save_replicates(key, f"{metric}-nfe{nfe}-steps{steps}-{name}", m.replicates)
            rows.append(self._row(role, key, name, seed, axes, nfe, steps, metric, m.value, m.higher_is_better, n, **interval, **extra))
        return rows

    def _row(self, role, key, name, seed, axes, nfe, steps, metric, value, hib, n, **extra):
        row = {
            "study": self.study.name, "scale": self.study.scale, "variant": name, "variant_key": key, "seed": seed,
            "role": role, "nfe": nfe, "steps": steps, "metric": metric, "value": value, "n": n,
            "higher_is_better": hib, "status": extra.pop("status", "ok"), "git_hash": self.git_hash,
        }
        row.update({f"axis.{k}": (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in axes.items()})
        row.update(extra)
        return row

    def preflight(self, variants) -> None:
        """Build every component the pending variants need, before anything trains: missing weights, a
        missing dataset folder or a bad option fail here (one line, exit 2), not hours into a run."""
        from .method.acceleration import supports_gradient_checkpointing

        for v in variants:
            train, ev = v.train, v.eval
            for tracker in train.trackers:
                module = {"tensorboard": "tensorboard", "wandb": "wandb"}[tracker]
                if importlib.util.find_spec(module) is None:
                    raise UserError(f"{self.study.path}: trackers: {tracker!r} needs the {module} package (pip install {module}), "
                                    f"or set trackers = [] in the study")
            teacher = self.resources.teacher(train.teacher)
            self._warn_parametrisation(v, teacher)
            if train.gradient_checkpointing and not supports_gradient_checkpointing(teacher.denoiser):
                raise StudyError(self.study.path, f"variant {v.name!r}: gradient_checkpointing",
                                 f"the {train.teacher.name} teacher's {type(teacher.denoiser).__name__} cannot checkpoint its activations; allowed: false")
            self.resources.dataset(train.dataset)
            self.resources.dataset(ev.prompts)
            self.resources.conditioning(train.conditioning)
            for spec in (train.distil_loss,):
                self.resources.loss(spec, teacher)
            for spec in (train.adv_loss, train.dmd_loss):
                self.resources.loss(spec)
            self.components.get("solver", train.solver.name).build(train.solver.options)
            self.components.get("timesteps", train.timesteps.name).build(
                train.timesteps.options, num_timesteps=train.num_timesteps, phase_length=train.phase_length, num_phases=len(train.lambda_adv)
            )
            if train.evaluate_only and train.pretrained_lora:  # a published LoRA must be on the machine
                teacher.load_lora("preflight", train.pretrained_lora)
                teacher.remove_lora("preflight")
        # reference statistics (and unreadable reference images) too, before anything trains
        if self.is_main:
            for v in variants:
                self.evaluators(v.eval)

    def _warn_parametrisation(self, variant, teacher) -> None:
        """One line (once per teacher and parametrisation) when the student's output, read as the study says,
        is amplified in its first x0 on this teacher's schedule (:func:`~flashbench.method.noise.parametrisation_warning`)."""
        from .method.noise import parametrisation_warning
        from .method.teacher import process_of

        key = (variant.train.teacher, variant.train.student_prediction)
        if variant.train.evaluate_only or key in self._parametrisation_warned or not (self.is_main and self.primary):
            return
        self._parametrisation_warned.add(key)
        line = parametrisation_warning(process_of(teacher), variant.train.student_prediction)
        if line:
            log.warning("variant %s: %s", variant.name, line)
            print(f"warning: {self.study.path}: variant {variant.name!r}: {line}", file=sys.stderr, flush=True)

    # --- the study -----------------------------------------------------------------------------------
    def run(self):
        """Run pending work; yields (variant, rows) after each variant is stored."""
        from .results import collect_provenance

        trained = [v.train.batch_size for v in self.study.variants if not v.train.evaluate_only]
        provenance = collect_provenance(self.study.scale, processes=self.state.num_processes, batch_sizes=trained)
        self.git_hash = provenance.get("git_hash") or provenance.get("git_commit") or "unknown"
        if self.is_main and self.primary:
            self.store.write_study(self.study.to_data())
            self.store.write_provenance(provenance)
        if self.claims is not None:
            yield from self._run_claimed()
            return
        i, n = self.shard
        mine = [v for k, v in enumerate(self.study.variants) if k % n == i]  # shards split the variants
        if not mine:
            log.info("shard %d/%d has no variants (the study has %d)", i, n, len(self.study.variants))
            return
        pending = [v for v in mine if not self.is_done(v.key, self.recipe(v))]
        skipped = len(self.study.variants) - len(pending)
        if skipped:
            log.info("resuming: %d of %d variants already done", skipped, len(self.study.variants))
        self.preflight(pending)
        for first in self.baseline_firsts().values():
            self.run_teacher_baselines(first)
        position = {v.key: i for i, v in enumerate(self.study.variants)}
        for index, variant in enumerate(self.study.variants):
            if variant not in mine or self.is_done(variant.key, self.recipe(variant)):
                continue
            log.info("variant %d/%d: %s (seed %d)", index + 1, len(self.study.variants), variant.name, variant.seed)
            siblings = self._siblings(variant, index, lambda v: v in mine)
            yield from self._run_and_store(variant, index, siblings, position)

    def baseline_firsts(self) -> dict:
        """Baseline key -> the variant whose teacher side and seed its baselines are sampled with: per seed,
        the seed's first variant, then the first trained variant of each other teacher side."""
        out = {}
        for seed in self.study.seeds:
            of_seed = [v for v in self.study.variants if v.seed == seed]
            for v in of_seed[:1] + [v for v in of_seed if not v.train.evaluate_only]:
                out.setdefault(self.baseline_key(v.train, seed), v)
        return out

    def _siblings(self, variant, index: int, eligible) -> list:
        """The variants after ``variant`` (same seed, same training recipe, not done, ``eligible``) that its
        student serves: they differ only in evaluation."""
        if variant.train.evaluate_only:
            return []
        return [v for v in self.study.variants[index + 1:]
                if not v.train.evaluate_only and v.seed == variant.seed and self.training_recipe(v) == self.training_recipe(variant)
                and not self.is_done(v.key, self.recipe(v)) and eligible(v)]

    def _run_and_store(self, variant, index: int, siblings, position: dict):
        for done_variant, rows in self.run_variant(variant, index, siblings=siblings):
            if self.is_main:
                self.store.add_rows(rows)
                status = rows[0]["status"] if rows else "ok"
                self.store.mark_done(done_variant.key, {"status": status, "rows": len(rows), "recipe": self.recipe(done_variant)})
            self.state.wait_for_everyone()  # the others wait while the main process evaluates
            if not self.is_main:
                continue
            if self.progress:
                ok = [r for r in rows if r["status"] == "ok"]
                summary = ", ".join(f"{r['metric']}@{r['nfe']}={r['value']:.4g}" for r in ok) or rows[0].get("reason", "failed")
                print(f"[{position[done_variant.key] + 1}/{len(self.study.variants)}] {done_variant.name} (seed {done_variant.seed}): {summary}",
                      flush=True)
            yield done_variant, rows

    def _run_claimed(self):
        """``--jobs N``: take tasks until none is left to take. A task is the teacher baselines of a seed
        (``teacher-s<seed>``, one per teacher side) or a variant with its siblings; a variant waits until its baselines
        are done (it is evaluated against their reference)."""
        claims = self.claims
        firsts = self.baseline_firsts()
        baseline_done = {key: lambda k=key: self.is_done(k, self.recipe(firsts[k], teacher_only=True)) for key in firsts}
        position = {v.key: i for i, v in enumerate(self.study.variants)}
        pending = [v for v in self.study.variants if not self.is_done(v.key, self.recipe(v))]
        skipped = len(self.study.variants) - len(pending)
        if skipped and self.primary:
            log.info("resuming: %d of %d variants already done", skipped, len(self.study.variants))
        if pending:
            self.preflight(pending)
        tasks: list[tuple[str, object]] = [("baseline", key) for key in firsts if not baseline_done[key]()]
        tasks += [("variant", v) for v in pending]
        while tasks:
            if self.check_workers is not None:
                self.check_workers()
            ran = False
            for task in list(tasks):
                kind, item = task
                name = item if kind == "baseline" else item.key
                if claims.taken(name):  # another worker holds it (or a sibling's student served it)
                    tasks.remove(task)
                    continue
                if kind == "variant" and not baseline_done[self.baseline_key(item.train, item.seed)]():
                    continue  # its baselines are still running elsewhere
                if not claims.take(name):
                    tasks.remove(task)
                    continue
                tasks.remove(task)
                ran = True
                if kind == "baseline":
                    self.run_teacher_baselines(firsts[item])
                else:
                    index = position[item.key]
                    siblings = self._siblings(item, index, lambda v: claims.take(v.key))
                    log.info("variant %d/%d: %s (seed %d)", index + 1, len(self.study.variants), item.name, item.seed)
                    yield from self._run_and_store(item, index, siblings, position)
                break  # scan again from the start: the study's order first
            if not ran and tasks:
                time.sleep(1.0)


def _save_chunk(folder: Path, index: int, images) -> None:
    from safetensors.torch import save_file

    tmp = folder / f".{index:05d}.tmp"
    save_file({"images": images.to(torch_half()).contiguous()}, str(tmp))
    tmp.replace(folder / f"{index:05d}.safetensors")


def _load_chunk(folder: Path, index: int):
    from safetensors.torch import load_file

    path = folder / f"{index:05d}.safetensors"
    if not path.exists():
        raise RuntimeError(f"missing teacher reference chunk {path}; delete {folder.parent} to recompute the baselines")
    return load_file(str(path))["images"].float()


def torch_half():
    import torch

    return torch.float16


def _setup_logging(run_dir: Path, rank: int = 0, worker: bool = False) -> logging.Handler:
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / ("run.log" if rank == 0 else f"run.rank{rank}.log"), encoding="utf-8")
    # the workers of --jobs N append to the same run.log, each line tagged with its process id
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s " + ("[pid %(process)d] " if worker else "") + "%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # the console gets progress bars and a summary line per variant, not the log
    return handler


def global_batch_warning(study, processes: int) -> str | None:
    """One line when the global batch a run trains with (``processes`` x ``batch_size``) differs from the
    ``global_batch`` its recipe states (Appendix A: SD1.5 4 x 2 GPUs = 8; SDXL and Pixart 2 x 4 = 8), else
    None. ``batch_size`` is per process: the same study under another process count trains another recipe."""
    differing: dict[str, tuple[int, int]] = {}  # variant name -> (batch_size, stated global_batch)
    for v in study.variants:
        t = v.train
        if not t.evaluate_only and t.global_batch and processes * t.batch_size != t.global_batch:
            differing.setdefault(v.name, (t.batch_size, t.global_batch))
    if not differing:
        return None
    batch, stated = next(iter(differing.values()))
    run = f"global batch {processes * batch} ({processes} process{'es' * (processes != 1)} x {batch})"
    fixes = []
    if stated % batch == 0:
        n = stated // batch
        fixes.append("run one process (without accelerate launch)" if n == 1 else
                     f"launch {n} processes (accelerate launch --num_processes {n})")
    if stated % processes == 0:
        fixes.append(f"set batch_size = {stated // processes}")
    fix = " or ".join(fixes) or "choose processes and batch_size whose product is the recipe's"
    which = ""
    if len(differing) < len(study.variant_names) or len(set(differing.values())) > 1:
        names = list(differing)
        which = f" (variant{'s' * (len(names) != 1)} {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}: {len(names)} of {len(study.variant_names)})"
    return (f"warning: {study.path}: {run} differs from the recipe's global_batch = {stated}{which}; "
            f"to train the recipe, {fix}")


def run_study(study, *, output_dir, components=None, device: str | None = None, progress: bool = True,
              shard: tuple[int, int] = (0, 1), jobs: int | None = 1, worker: Path | None = None) -> Path | None:
    """Run every pending variant of ``study`` (of shard ``i`` of ``n``) into ``output_dir``; returns the
    HTML report's path (None on the processes other than the main one under ``accelerate launch``, and in
    a ``--jobs`` worker). Shards of one study may run at once against the same ``output_dir``.

    ``jobs``: worker processes sharing the study's tasks (:mod:`flashbench.jobs`); None: one per core on a
    CPU, one on a GPU. ``worker``: run as a worker of another process's ``--jobs`` run (its claim folder).
    """
    import torch

    from .jobs import PROGRESS_ENV, Claims, Workers, available_cores, new_claims, remove_claims, resolve_jobs
    from .plugins import collect_components
    from .report import render_report
    from .results import ResultStore

    from accelerate import PartialState

    components = components or collect_components()
    run_dir = Path(output_dir)
    # Under `accelerate launch`: one device per process, and a long collective timeout, because the
    # other processes wait at a barrier while the main one samples and evaluates a variant.
    cpu = device == "cpu" or not torch.cuda.is_available()  # accelerate needs to be told to use gloo on CPUs
    state = PartialState(cpu=cpu, timeout=datetime.timedelta(hours=12))
    if state.num_processes > 1:
        device = str(state.device)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    n_jobs = 1
    if worker is None and shard == (0, 1):
        tasks = len(study.variants) + len(study.seeds)
        n_jobs = resolve_jobs(jobs, tasks=tasks, cuda=device.startswith("cuda"), distributed=state.num_processes > 1)
    handler = _setup_logging(run_dir, rank=state.process_index, worker=worker is not None or n_jobs > 1)
    warning = global_batch_warning(study, state.num_processes) if state.is_main_process and worker is None else None
    if warning:
        print(warning, file=sys.stderr, flush=True)
        log.warning("%s", warning)
    claims, workers = None, None
    try:
        store = ResultStore(run_dir)
        if worker is not None:
            claims = Claims(worker)
        elif n_jobs > 1:
            threads = max(1, available_cores() // n_jobs)
            torch.set_num_threads(threads)
            os.environ[PROGRESS_ENV] = "lines"  # the workers share this terminal
            claims = new_claims(run_dir)
            log.info("%d worker processes, %d torch thread%s each", n_jobs, threads, "s" * (threads != 1))
            if progress:
                print(f"{n_jobs} worker processes ({threads} thread{'s' * (threads != 1)} each) share the teacher baselines and variants",
                      flush=True)
            workers = Workers(Path(study.path), study.scale, run_dir, claims, n_jobs, threads)

        def check_workers():
            if workers is not None and workers.failed():
                raise RuntimeError(f"a worker process failed (exit status {workers.failed()[0]}); see {run_dir / 'run.log'}. "
                                   "What finished is stored: run the same command again to resume")

        runner = StudyRunner(study, store, components, device=device, progress=progress, shard=shard,
                             claims=claims, primary=worker is None, check_workers=check_workers if workers else None)
        hook = components.pm.hook
        if state.is_main_process and worker is None:
            hook.before_study(study=study, run_dir=run_dir)
        t0 = time.perf_counter()
        for variant, rows in runner.run():
            hook.after_variant(study=study, variant=variant, rows=rows, run_dir=run_dir)
        if workers is not None:
            failed = [code for code in workers.wait() if code != 0]
            if failed:
                check_workers()
        if not state.is_main_process or worker is not None:
            return None  # the main process writes the report
        wall = time.perf_counter() - t0
        report = render_report(run_dir)
        hook.after_study(study=study, run_dir=run_dir, report_path=report)
        log.info("study %s done in %.0fs; report %s", study.name, wall, report)
        try:
            rows, provenance = store.rows(), store.read_provenance()
        except UserError:  # nothing stored (a study with nothing to run): no times to give
            rows = None
        if rows:
            from .projection import projection_lines  # [paper.compute]: this run's step time against the paper's GPU-hours

            for line in [time_breakdown(rows, wall_seconds=wall, workers=n_jobs), *projection_lines(study.paper, rows, provenance)]:
                log.info("%s", line)
                if progress:
                    print(line, flush=True)
        return report
    finally:
        if workers is not None:
            workers.stop()
        if claims is not None and worker is None:
            remove_claims(claims)
        log.removeHandler(handler)
        handler.close()


#: the phases of a run, in the order :func:`phase_seconds` reports them
PHASES = ("teacher baselines", "training", "student sampling", "evaluation", "bootstrap")


def phase_seconds(rows) -> dict[str, float]:
    """Seconds spent per phase, summed over a run's stored rows (and so over its worker processes): the
    teacher baselines' sampling and evaluation; the students' training (a student serving several variants
    counted once), sampling, evaluation (the evaluators' updates and ``compute()``) and bootstrap. Rows
    written before a column existed add nothing to it."""
    import math

    def num(row, col):
        v = row.get(col)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else 0.0

    out = dict.fromkeys(PHASES, 0.0)
    sampled, trained = set(), set()
    for r in rows:
        teacher = r.get("role") == "teacher"
        sample_key = (r.get("variant_key"), r.get("variant"), r.get("nfe"), r.get("steps"), r.get("attempt"))
        if sample_key not in sampled:
            sampled.add(sample_key)
            out["teacher baselines" if teacher else "student sampling"] += num(r, "sample_seconds")
        out["teacher baselines" if teacher else "evaluation"] += num(r, "eval_seconds")
        out["bootstrap"] += num(r, "bootstrap_seconds")
        if not teacher and not r.get("trained_with") and (r.get("variant_key"), r.get("attempt")) not in trained:
            trained.add((r.get("variant_key"), r.get("attempt")))
            out["training"] += num(r, "train_seconds")
    return out


def time_breakdown(rows, *, wall_seconds: float | None = None, workers: int = 1) -> str:
    """One line: the run's wall time and where the time went (:func:`phase_seconds`)."""
    phases = phase_seconds(rows)
    total = sum(phases.values()) or 1.0
    parts = ", ".join(f"{name} {sec / 60:.1f} min ({100 * sec / total:.0f}%)" for name, sec in phases.items())
    head = f"time: {wall_seconds / 60:.1f} min wall with {workers} worker process{'es' * (workers != 1)}; " if wall_seconds is not None else "time: "
    return head + f"process time by phase: {parts}"
