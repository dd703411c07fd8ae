"""What a result depends on: the teacher baselines' names per teacher side, and the fingerprints a done
marker records (:func:`recipe`, :func:`training_recipe`) with the check that reads them (:class:`Completion`).
Plain data only: nothing here imports torch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

from ..config import FINGERPRINT_SINCE, ROW_NEUTRAL_FIELDS, TrainConfig

log = logging.getLogger("flashbench")

TEACHER = "teacher"  # the teacher with its own sampler and CFG
TEACHER_FEWSTEP = "teacher-fewstep"  # the teacher through the student's few-step sampler, no CFG
#: the training fields a teacher baseline depends on (its "teacher side"): variants that share them share baselines
TEACHER_SIDE = ("teacher", "conditioning", "dataset", "solver")
_NO_DEFAULT = object()


def baseline_suffixes(variants) -> dict[str, str]:
    """Teacher side -> the suffix of its baselines' names. The first variant's teacher side has none (its
    baselines are ``teacher`` / ``teacher-fewstep``, folder ``teacher-s<seed>``, as in a one-teacher study);
    each other teacher side a trained variant uses gets ``@<teacher name>`` (``teacher@toy-digits-flow``,
    folder ``teacher@toy-digits-flow-s<seed>``), so each student is compared with its own teacher. An
    evaluation-only variant on a teacher side no trained variant uses is compared with the first's."""
    variants = list(variants)
    if not variants:
        return {}
    out = {teacher_side(variants[0].train): ""}
    for v in variants:
        side = teacher_side(v.train)
        if v.train.evaluate_only or side in out:
            continue
        suffix = f"@{v.train.teacher.name}"
        if suffix in out.values():  # the same teacher with other options (or another solver, dataset...)
            suffix = f"{suffix}-{len(out)}"
        out[side] = suffix
    return out


def teacher_side(train: TrainConfig) -> str:
    """A fingerprint of the training fields a teacher baseline depends on (:data:`TEACHER_SIDE`, components all)."""
    return fingerprint({k: getattr(train, k).to_data() for k in TEACHER_SIDE})


def fingerprint(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_fields(variant) -> dict:
    """A variant's training fields as plain data, the row-neutral ones left out (and those still at the value
    they had before the field existed, :data:`~flashbench.config.FINGERPRINT_SINCE`, so old runs resume)."""
    from ..checkpoint import _plain

    return {
        f.name: _plain(getattr(variant.train, f.name))
        for f in dataclasses.fields(variant.train)
        if f.name not in ROW_NEUTRAL_FIELDS and getattr(variant.train, f.name) != FINGERPRINT_SINCE.get(f.name, _NO_DEFAULT)
    }


def recipe(variant, *, teacher_only: bool = False) -> str:
    """A fingerprint of what a variant's rows depend on (for the teacher baselines: the teacher side and
    the evaluation), recorded in its done marker."""
    from ..checkpoint import _plain

    train = train_fields(variant)
    if teacher_only:
        train = {k: train[k] for k in TEACHER_SIDE}
    ev = {
        f.name: _plain(getattr(variant.eval, f.name))
        for f in dataclasses.fields(variant.eval)
        if getattr(variant.eval, f.name) != FINGERPRINT_SINCE.get(f.name, _NO_DEFAULT)
    }
    return fingerprint({"train": train, "eval": ev})


def training_recipe(variant) -> str:
    """A fingerprint of what a variant's *student* depends on: its training fields (the neutral ones
    aside) and its seed. Variants that share it differ only in evaluation: one student serves them all."""
    return fingerprint({"train": train_fields(variant), "seed": variant.seed})


class Completion:
    """Which keys (variants, teacher baselines) the result store holds as done, and with which recipe."""

    def __init__(self, store):
        self.store = store
        self._rerun_warned: set[str] = set()

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
