"""A result row as a typed record (the columns of :mod:`flashbench.results`), and the rows of one
evaluation set. :meth:`ResultRow.to_dict` is the line the result store writes: its keys, their order and
which of them a row has are part of the file format (the report and older runs read them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..stats import LEVEL


@dataclass(frozen=True)
class RowStamp:
    """The columns every row of a run shares."""

    study: str
    scale: str
    git_hash: str


@dataclass(frozen=True)
class Interval:
    """A value's 95% interval and the time measuring it took (``ci_*``, ``*_seconds``, ``bootstrap_file``)."""

    low: float
    high: float
    method: str
    bootstrap_seconds: float
    eval_seconds: float
    bootstrap_file: str | None = None  # None: no replicates (the column is absent)
    level: float = LEVEL

    def columns(self) -> dict:
        out = {
            "ci_low": self.low,
            "ci_high": self.high,
            "ci_level": self.level,
            "ci_method": self.method,
            "bootstrap_seconds": self.bootstrap_seconds,
            "eval_seconds": self.eval_seconds,
        }
        if self.bootstrap_file is not None:
            out["bootstrap_file"] = self.bootstrap_file
        return out


@dataclass(frozen=True)
class TrainingCost:
    """What training a student cost (:data:`flashbench.results.COST_COLUMNS`, in that order)."""

    trainable_params: int
    iterations: int
    seconds_per_step: float
    teacher_nfe_per_step: float
    student_nfe_per_step: float
    train_seconds: float
    processes: int
    global_batch: int
    peak_memory_gb: float | None
    trained_with: str | None = None  # a sibling's row: the variant whose student it evaluates (absent otherwise)

    def columns(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.trained_with is None:
            del out["trained_with"]
        return out


@dataclass(frozen=True)
class PublishedCost:
    """An evaluation-only variant's cost: the published LoRA's parameters, nothing trained."""

    trainable_params: int
    iterations: int = 0
    train_seconds: float = 0.0

    def columns(self) -> dict:
        return {"trainable_params": self.trainable_params, "iterations": self.iterations, "train_seconds": self.train_seconds}


@dataclass(frozen=True)
class Failure:
    """Why a variant has no measurement: training stopped (a non-finite loss at ``step``)."""

    reason: str
    step: int


@dataclass(frozen=True)
class Subject:
    """Whose rows: one variant, or one teacher baseline, at one seed."""

    role: str  # "student" or "teacher"
    variant: str
    variant_key: str
    seed: int
    axes: dict = field(default_factory=dict)  # the variant's study axes, {field: value}; {} for a baseline
    cost: TrainingCost | PublishedCost | None = None  # students only
    teacher_baseline: str | None = None  # a student on another teacher side than the study's first


@dataclass(frozen=True)
class ResultRow:
    """One row of ``results.jsonl``: one metric of one subject at one NFE."""

    stamp: RowStamp
    subject: Subject
    nfe: int | None
    steps: int | None
    metric: str
    value: float | None
    n: int
    higher_is_better: bool | None
    interval: Interval | None = None
    sample_seconds: float | None = None  # the evaluation set's sampling (None: no samples, a failed row)
    failure: Failure | None = None  # status "failed" (with its reason and step), else "ok"

    def to_dict(self) -> dict:
        s = self.subject
        row = {
            "study": self.stamp.study,
            "scale": self.stamp.scale,
            "variant": s.variant,
            "variant_key": s.variant_key,
            "seed": s.seed,
            "role": s.role,
            "nfe": self.nfe,
            "steps": self.steps,
            "metric": self.metric,
            "value": self.value,
            "n": self.n,
            "higher_is_better": self.higher_is_better,
            "status": "failed" if self.failure else "ok",
            "git_hash": self.stamp.git_hash,
        }
        row.update({f"axis.{k}": (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in s.axes.items()})
        if self.failure is not None:
            row.update(reason=self.failure.reason, step=self.failure.step)
        if self.interval is not None:
            row.update(self.interval.columns())
        if self.sample_seconds is not None:
            row["sample_seconds"] = self.sample_seconds
        if s.cost is not None:
            row.update(s.cost.columns())
        if s.teacher_baseline is not None:
            row["teacher_baseline"] = s.teacher_baseline
        return row


def measured_rows(store, stamp: RowStamp, subject: Subject, nfe: int, steps: int, measured) -> list[ResultRow]:
    """One row per metric of ``measured`` (an :class:`~flashbench.run.evaluation.EvaluationSet`), with its
    interval; the bootstrap replicates go to the subject's folder."""
    rows = []
    for metric, m in measured.values.items():
        file = None
        if m.replicates is not None:
            file = store.save_replicates(subject.variant_key, f"{metric}-nfe{nfe}-steps{steps}-{subject.variant}", m.replicates)
        interval = Interval(m.low, m.high, m.method, m.seconds, m.eval_seconds, file)
        rows.append(ResultRow(stamp, subject, nfe, steps, metric, m.value, measured.n, m.higher_is_better, interval, measured.sample_seconds))
    return rows
