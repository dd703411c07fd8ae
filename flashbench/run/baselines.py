"""The teacher baselines: per seed and teacher side, the teacher's own sampler with CFG at each of its step
counts, and (``teacher_at_student_nfe``) the teacher sampled the student's way. The many-step run is the
reference the students' LPIPS-to-teacher reads. Rows from another study's identical baselines are taken
from :mod:`flashbench.baseline_cache`."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import EvalConfig, TrainConfig
from .recipes import TEACHER, TEACHER_FEWSTEP, baseline_suffixes, recipe, teacher_side
from .rows import Subject, measured_rows

log = logging.getLogger("flashbench")


def teacher_steps(ev: EvalConfig) -> list[int]:
    """The teacher's step counts, most first: ``teacher_steps`` and (``teacher_at_student_nfe``) the student's."""
    steps = set(ev.teacher_steps)
    if ev.teacher_at_student_nfe:
        for n in ev.nfe:
            steps.add(n)  # the same number of sampler steps (2n NFE with CFG)
            if n % 2 == 0:
                steps.add(n // 2)  # the same NFE
    return sorted(steps, reverse=True)


class BaselineNames:
    """The names and folders of a study's teacher baselines, one set per teacher side (:func:`baseline_suffixes`)."""

    def __init__(self, variants, store):
        self.suffixes = baseline_suffixes(variants)
        self.store = store

    def suffix(self, train: TrainConfig) -> str:
        """``""`` for the study's first teacher side, ``"@<teacher>"`` for another."""
        return self.suffixes.get(teacher_side(train), "")

    def key(self, train: TrainConfig, seed: int) -> str:
        """The completion key (and folder) of the teacher baselines a variant of ``train`` is compared with."""
        return f"{TEACHER}{self.suffix(train)}-s{seed}"

    def reference_dir(self, train: TrainConfig, ev: EvalConfig, seed: int) -> Path:
        """Where the teacher's many-step samples (max of teacher_steps) are kept, one file per batch."""
        return self.store.variant_dir(self.key(train, seed)) / f"reference_steps{max(ev.teacher_steps)}"

    def firsts(self, study) -> dict:
        """Baseline key -> the variant whose teacher side and seed its baselines are sampled with: per seed,
        the seed's first variant, then the first trained variant of each other teacher side."""
        out = {}
        for seed in study.seeds:
            of_seed = [v for v in study.variants if v.seed == seed]
            for v in of_seed[:1] + [v for v in of_seed if not v.train.evaluate_only]:
                out.setdefault(self.key(v.train, seed), v)
        return out


class TeacherBaselines:
    """Samples, evaluates and stores the teacher baselines of one teacher side and seed at a time."""

    def __init__(self, *, study, store, names: BaselineNames, evaluation, completion, stamp, device, is_main: bool):
        self.study, self.store, self.names, self.evaluation = study, store, names, evaluation
        self.completion, self.stamp, self.device, self.is_main = completion, stamp, device, is_main

    def run(self, variant) -> None:
        """The teacher baselines of ``variant``'s teacher side and seed, unless done (or not the main process)."""
        key = self.names.key(variant.train, variant.seed)
        suffix = self.names.suffix(variant.train)
        teacher_recipe = recipe(variant, teacher_only=True)
        if self.completion.is_done(key, teacher_recipe) or not self.is_main:
            return
        from .. import baseline_cache

        train, ev, seed = variant.train, variant.eval, variant.seed
        vdir = self.store.variant_dir(key)
        cache_key = baseline_cache.cache_key(teacher_recipe, seed, str(self.device))
        cached = baseline_cache.load(cache_key, vdir)
        if cached is not None:  # another study computed these very baselines with this code
            rows = [
                {
                    **r,
                    "study": self.study.name,
                    "scale": self.study.scale,
                    "git_hash": self.stamp.git_hash,
                    "variant_key": key,
                    "variant": r["variant"].split("@")[0] + suffix,
                }
                for r in cached
            ]  # this study's names for that teacher
            log.info("teacher baselines of seed %d: from the cache (%s, key %s)", seed, baseline_cache.cache_root(), cache_key)
            self.store.add_rows(rows)
            self.store.mark_done(key, {"status": "ok", "rows": len(rows), "recipe": teacher_recipe, "baseline_cache": cache_key})
            return
        rows = []
        with_cfg = Subject("teacher", TEACHER + suffix, key, seed)
        # the many-step run comes first: it writes the reference the others are compared with
        order = sorted(teacher_steps(ev), key=lambda s: (s != max(ev.teacher_steps), -s))
        for steps in order:
            is_reference = steps == max(ev.teacher_steps)
            ref_dir = self.names.reference_dir(train, ev, seed)
            if is_reference:
                ref_dir.mkdir(parents=True, exist_ok=True)
            measured = self.evaluation.sample_and_evaluate(
                self.evaluation.teacher_sampler(train, ev, steps),
                train,
                ev,
                seed,
                vdir / f"grid_steps{steps:03d}_nfe{2 * steps}.png",
                reference=ref_dir,
                save_reference=is_reference,
            )
            rows += measured_rows(self.store, self.stamp, with_cfg, 2 * steps, steps, measured)
            log.info("teacher %d steps (%d NFE): %s", steps, 2 * steps, {m: round(v.value, 4) for m, v in measured.values.items()})
        if ev.teacher_at_student_nfe:
            # The teacher sampled the student's way (its few-step sampler and timesteps, no CFG): with the
            # CFG baseline above, the two ways a teacher can spend the student's NFE budget.
            fewstep = Subject("teacher", TEACHER_FEWSTEP + suffix, key, seed)
            for nfe in ev.nfe:
                measured = self.evaluation.sample_and_evaluate(
                    self.evaluation.student_sampler(train, nfe, seed, student=False),
                    train,
                    ev,
                    seed,
                    vdir / f"fewstep_nfe{nfe}.png",
                    reference=self.names.reference_dir(train, ev, seed),
                )
                rows += measured_rows(self.store, self.stamp, fewstep, nfe, nfe, measured)
                log.info("teacher, student's sampler, %d NFE: %s", nfe, {m: round(v.value, 4) for m, v in measured.values.items()})
        plain = [r.to_dict() for r in rows]
        baseline_cache.store(cache_key, vdir, plain)
        self.store.add_rows(plain)
        self.store.mark_done(key, {"status": "ok", "rows": len(plain), "recipe": teacher_recipe})
