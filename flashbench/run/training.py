"""Variant training: distil a variant's student (Algorithm 1) and evaluate it at the study's NFEs, for the
variant and for its siblings (variants that would train the identical student); an evaluation-only variant
evaluates a published checkpoint instead."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .recipes import TEACHER, recipe, training_recipe
from .rows import Failure, PublishedCost, ResultRow, Subject, TrainingCost, measured_rows

log = logging.getLogger("flashbench")


class VariantTraining:
    """Trains and evaluates the students of a study's variants."""

    def __init__(self, *, study, store, resources, evaluation, names, completion, stamp, state, progress: bool):
        self.study, self.store, self.resources, self.evaluation = study, store, resources, evaluation
        self.names, self.completion, self.stamp, self.state, self.progress = names, completion, stamp, state, progress

    def siblings(self, variant, index: int, eligible) -> list:
        """The variants after ``variant`` (same seed, same training recipe, not done, ``eligible``) that its
        student serves: they differ only in evaluation."""
        if variant.train.evaluate_only:
            return []
        return [
            v
            for v in self.study.variants[index + 1 :]
            if not v.train.evaluate_only
            and v.seed == variant.seed
            and training_recipe(v) == training_recipe(variant)
            and not self.completion.is_done(v.key, recipe(v))
            and eligible(v)
        ]

    def run(self, variant, index: int, *, siblings=()) -> list[tuple]:
        """Train ``variant`` and evaluate its student; then evaluate the same student for each of
        ``siblings`` (variants of the same training recipe and seed that differ only in evaluation: they
        would train an identical student). Returns ``[(variant, [ResultRow, ...]), ...]``, the variant first."""
        from ..method.trainer import NonFiniteLoss
        from ..training import TrainingLoop, build_trainer

        train, seed = variant.train, variant.seed
        if train.evaluate_only:
            return [(variant, self.run_published(variant, index))]
        teacher = self.resources.teacher(train.teacher)
        dataset = self.resources.dataset(train.dataset)
        vdir = self.store.variant_dir(variant.key)
        # the study's components (one teacher, one perceptual network); the LoRA initialisation seeded with the variant's seed
        trainer = build_trainer(
            train, self.resources.components, teacher=teacher, seed=seed, adapter_name=f"flash_{index}", tracking_dir=vdir / "logs", resources=self.resources
        )
        log.info("%s: student %s", variant.name, trainer.acceleration)
        try:
            try:
                summary = TrainingLoop(trainer).run(
                    dataset,
                    train.iterations,
                    seed=seed,
                    progress=self.progress and self.state.is_main_process,
                    desc=variant.name if len(self.study.seeds) == 1 else f"{variant.name} (seed {seed})",
                    log=lambda r: log.info("%s %s", variant.name, r),
                    checkpoint=vdir / "checkpoint.safetensors",
                )
            except NonFiniteLoss as exc:  # the last good checkpoint stays on disk
                log.error("%s failed: %s", variant.name, exc)
                return [
                    (
                        v,
                        [
                            ResultRow(
                                self.stamp,
                                Subject("student", v.name, v.key, seed, v.axes),
                                None,
                                None,
                                exc.term,
                                None,
                                0,
                                None,
                                failure=Failure(str(exc), exc.step),
                            )
                        ],
                    )
                    for v in (variant, *siblings)
                ]
            if not self.state.is_main_process:
                return [(v, []) for v in (variant, *siblings)]
            teacher.save_lora(trainer.adapter_name, vdir / "lora")
            cost = TrainingCost(
                trainable_params=summary.trainable_params,
                iterations=summary.iterations,
                seconds_per_step=summary.seconds_per_step,
                teacher_nfe_per_step=summary.teacher_nfe_per_step,
                student_nfe_per_step=summary.student_nfe_per_step,
                train_seconds=summary.seconds,
                processes=self.state.num_processes,
                global_batch=self.state.num_processes * train.batch_size,
                peak_memory_gb=summary.peak_memory_gb,
            )
            out = [(variant, self.student_rows(variant, vdir, cost))]
            for sibling in siblings:  # the same student, evaluated as the sibling asks
                sdir = self.store.variant_dir(sibling.key)
                teacher.save_lora(trainer.adapter_name, sdir / "lora")
                log.info("%s: the student of %s (same training recipe and seed), evaluated as %s asks", sibling.name, variant.name, sibling.name)
                out.append((sibling, self.student_rows(sibling, sdir, dataclasses.replace(cost, trained_with=variant.key))))
            return out
        finally:
            trainer.close()

    def run_published(self, variant, index: int) -> list[ResultRow]:
        """An evaluation-only variant: a published checkpoint (a LoRA on the teacher, or the ``teacher``
        path itself, e.g. SDXL-Turbo) sampled without CFG by the sampler its authors published (``eval.sampler``)."""
        train = variant.train
        teacher = self.resources.teacher(train.teacher)
        name = f"baseline_{index}"
        lora_params = teacher.load_lora(name, train.pretrained_lora) if train.pretrained_lora else 0
        try:
            return self.student_rows(variant, self.store.variant_dir(variant.key), PublishedCost(lora_params))
        finally:
            if train.pretrained_lora:
                teacher.remove_lora(name)

    def student_rows(self, variant, vdir: Path, cost: TrainingCost | PublishedCost) -> list[ResultRow]:
        """The rows of ``variant``'s student (the teacher's LoRA as it is now) at each of its NFEs."""
        train, ev, seed = variant.train, variant.eval, variant.seed
        baseline = self.names.suffix(train)  # another teacher side than the first's: name its baselines
        subject = Subject("student", variant.name, variant.key, seed, variant.axes, cost, TEACHER + baseline if baseline else None)
        rows = []
        for nfe in ev.nfe:
            measured = self.evaluation.sample_and_evaluate(
                self.evaluation.student_sampler(train, nfe, seed, sampler=ev.sampler),
                train,
                ev,
                seed,
                vdir / f"grid_nfe{nfe}.png",
                reference=self.names.reference_dir(train, ev, seed),
            )
            rows += measured_rows(self.store, self.stamp, subject, nfe, nfe, measured)
            log.info("%s %d NFE: %s", variant.name, nfe, {m: round(v.value, 4) for m, v in measured.values.items()})
        return rows
