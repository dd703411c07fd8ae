"""The run loop of one study: check every pending variant's components before anything trains, sample the
teacher baselines, then train and evaluate the variants in the study's order (or, under ``--jobs N``, as
tasks claimed from the other workers), storing each variant's rows and done marker."""

from __future__ import annotations

import importlib.util
import logging
import sys
import time

from ..errors import StudyError, UserError
from .baselines import BaselineNames, TeacherBaselines
from .evaluation import Evaluation
from .recipes import Completion, recipe, training_recipe
from .resources import StudyResources
from .rows import RowStamp
from .training import VariantTraining

log = logging.getLogger("flashbench")


class StudyRunner:
    """Runs the pending work of ``study`` into ``store``, with the components of ``components``."""

    def __init__(
        self, study, store, components, *, device="cpu", progress=True, shard: tuple[int, int] = (0, 1), claims=None, primary: bool = True, check_workers=None
    ):
        import torch

        from accelerate import PartialState

        self.study, self.store, self.components = study, store, components
        self.device = torch.device(device)
        self.state = PartialState(cpu=self.device.type == "cpu")
        self.is_main = self.state.is_main_process
        self.progress = progress
        self.shard = shard
        # --jobs N (flashbench.jobs): tasks are claimed from ``claims`` instead of split by ``shard``; only the
        # ``primary`` worker writes the study and provenance; ``check_workers`` raises when a worker failed
        self.claims, self.primary, self.check_workers = claims, primary, check_workers
        self.resources = StudyResources(components, self.device)
        self.evaluation = Evaluation(self.resources, self.device, study.path)
        self.names = BaselineNames(study.variants, store)
        self.completion = Completion(store)
        self._parametrisation_warned: set = set()

    recipe = staticmethod(recipe)
    training_recipe = staticmethod(training_recipe)

    def is_done(self, key: str, recipe: str) -> bool:
        return self.completion.is_done(key, recipe)

    # --- before anything trains ---------------------------------------------------------------------
    def preflight(self, variants) -> None:
        """Build every component the pending variants need, before anything trains: missing weights, a
        missing dataset folder or a bad option fail here (one line, exit 2), not hours into a run."""
        from ..method.acceleration import supports_gradient_checkpointing
        from ..training import build_components

        for v in variants:
            train, ev = v.train, v.eval
            for tracker in train.trackers:
                module = {"tensorboard": "tensorboard", "wandb": "wandb"}[tracker]
                if importlib.util.find_spec(module) is None:
                    raise UserError(
                        f"{self.study.path}: trackers: {tracker!r} needs the {module} package (pip install {module}), or set trackers = [] in the study"
                    )
            teacher = self.resources.teacher(train.teacher)
            self._warn_parametrisation(v, teacher)
            if train.gradient_checkpointing and not supports_gradient_checkpointing(teacher.denoiser):
                raise StudyError(
                    self.study.path,
                    f"variant {v.name!r}: gradient_checkpointing",
                    f"the {train.teacher.name} teacher's {type(teacher.denoiser).__name__} cannot checkpoint its activations; allowed: false",
                )
            self.resources.dataset(train.dataset)
            self.resources.dataset(ev.prompts)
            build_components(train, self.resources, teacher)  # what build_trainer will build (nothing seeded)
            if train.evaluate_only and train.pretrained_lora:  # a published LoRA must be on the machine
                teacher.load_lora("preflight", train.pretrained_lora)
                teacher.remove_lora("preflight")
        # reference statistics (and unreadable reference images) too, before anything trains
        if self.is_main:
            for v in variants:
                self.evaluation.evaluators(v.eval)

    def _warn_parametrisation(self, variant, teacher) -> None:
        """One line (once per teacher and parametrisation) when the student's output, read as the study says,
        is amplified in its first x0 on this teacher's schedule (:func:`~flashbench.method.noise.parametrisation_warning`)."""
        from ..method.noise import parametrisation_warning
        from ..method.teacher import process_of

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
        from ..results import collect_provenance

        trained = [v.train.batch_size for v in self.study.variants if not v.train.evaluate_only]
        provenance = collect_provenance(self.study.scale, processes=self.state.num_processes, batch_sizes=trained)
        self.git_hash = provenance.get("git_hash") or provenance.get("git_commit") or "unknown"
        stamp = RowStamp(self.study.name, self.study.scale, self.git_hash)
        self.baselines = TeacherBaselines(
            study=self.study,
            store=self.store,
            names=self.names,
            evaluation=self.evaluation,
            completion=self.completion,
            stamp=stamp,
            device=self.device,
            is_main=self.is_main,
        )
        self.training = VariantTraining(
            study=self.study,
            store=self.store,
            resources=self.resources,
            evaluation=self.evaluation,
            names=self.names,
            completion=self.completion,
            stamp=stamp,
            state=self.state,
            progress=self.progress,
        )
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
        pending = [v for v in mine if not self.is_done(v.key, recipe(v))]
        skipped = len(self.study.variants) - len(pending)
        if skipped:
            log.info("resuming: %d of %d variants already done", skipped, len(self.study.variants))
        self.preflight(pending)
        for first in self.names.firsts(self.study).values():
            self.baselines.run(first)
        position = {v.key: i for i, v in enumerate(self.study.variants)}
        for index, variant in enumerate(self.study.variants):
            if variant not in mine or self.is_done(variant.key, recipe(variant)):
                continue
            log.info("variant %d/%d: %s (seed %d)", index + 1, len(self.study.variants), variant.name, variant.seed)
            siblings = self.training.siblings(variant, index, lambda v: v in mine)
            yield from self._run_and_store(variant, index, siblings, position)

    def _run_and_store(self, variant, index: int, siblings, position: dict):
        for done_variant, typed in self.training.run(variant, index, siblings=siblings):
            rows = [r.to_dict() for r in typed]  # the store and the lifecycle hooks take plain data
            if self.is_main:
                self.store.add_rows(rows)
                status = rows[0]["status"] if rows else "ok"
                self.store.mark_done(done_variant.key, {"status": status, "rows": len(rows), "recipe": recipe(done_variant)})
            self.state.wait_for_everyone()  # the others wait while the main process evaluates
            if not self.is_main:
                continue
            if self.progress:
                ok = [r for r in rows if r["status"] == "ok"]
                summary = ", ".join(f"{r['metric']}@{r['nfe']}={r['value']:.4g}" for r in ok) or rows[0].get("reason", "failed")
                print(f"[{position[done_variant.key] + 1}/{len(self.study.variants)}] {done_variant.name} (seed {done_variant.seed}): {summary}", flush=True)
            yield done_variant, rows

    def _run_claimed(self):
        """``--jobs N``: take tasks until none is left to take. A task is the teacher baselines of a seed
        (``teacher-s<seed>``, one per teacher side) or a variant with its siblings; a variant waits until its baselines
        are done (it is evaluated against their reference)."""
        claims = self.claims
        firsts = self.names.firsts(self.study)
        baseline_done = {key: lambda k=key: self.is_done(k, recipe(firsts[k], teacher_only=True)) for key in firsts}
        position = {v.key: i for i, v in enumerate(self.study.variants)}
        pending = [v for v in self.study.variants if not self.is_done(v.key, recipe(v))]
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
                if kind == "variant" and not baseline_done[self.names.key(item.train, item.seed)]():
                    continue  # its baselines are still running elsewhere
                if not claims.take(name):
                    tasks.remove(task)
                    continue
                tasks.remove(task)
                ran = True
                if kind == "baseline":
                    self.baselines.run(firsts[item])
                else:
                    index = position[item.key]
                    siblings = self.training.siblings(item, index, lambda v: claims.take(v.key))
                    log.info("variant %d/%d: %s (seed %d)", index + 1, len(self.study.variants), item.name, item.seed)
                    yield from self._run_and_store(item, index, siblings, position)
                break  # scan again from the start: the study's order first
            if not ran and tasks:
                time.sleep(1.0)
