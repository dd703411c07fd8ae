"""Run a resolved study: per variant, distil (Algorithm 1), sample at the study's NFEs, evaluate, store
tidy rows; teacher baselines are rows too. The teacher, dataset and evaluators are loaded once per study.
Variants already marked done in the result store are skipped, and the running variant continues from
its last checkpoint, so a stopped (even SIGKILLed) study resumes.

Under ``accelerate launch`` every process trains each variant data-parallel; the main process alone
samples, evaluates, writes the result store and the report, and the others wait for it.

This module starts a run (:func:`run_study`: logging, ``--jobs`` workers, lifecycle hooks, the report) and
says where its time went; the parts live in :mod:`flashbench.run`:

- :mod:`~flashbench.run.resources`: the component cache (:class:`StudyResources`);
- :mod:`~flashbench.run.evaluation`: sampling and evaluation, the measurements and their bootstrap;
- :mod:`~flashbench.run.baselines`: the teacher baselines, their names per teacher side;
- :mod:`~flashbench.run.training`: variant training, its siblings, evaluation-only variants;
- :mod:`~flashbench.run.rows`: a result row as a typed record (:class:`ResultRow`);
- :mod:`~flashbench.run.recipes`: the fingerprints a done marker records;
- :mod:`~flashbench.run.runner`: the run loop (:class:`StudyRunner`).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from pathlib import Path

from .errors import UserError
from .run.evaluation import Measurement, measure
from .run.recipes import TEACHER, TEACHER_FEWSTEP, TEACHER_SIDE, baseline_suffixes
from .run.recipes import teacher_side as _teacher_side  # noqa: F401 (its name before the split; flashbench.cli reads it)
from .run.resources import StudyResources
from .run.rows import ResultRow
from .run.runner import StudyRunner

log = logging.getLogger("flashbench")

__all__ = [
    "PHASES",
    "TEACHER",
    "TEACHER_FEWSTEP",
    "TEACHER_SIDE",
    "Measurement",
    "ResultRow",
    "StudyResources",
    "StudyRunner",
    "baseline_suffixes",
    "global_batch_warning",
    "measure",
    "phase_seconds",
    "run_study",
    "time_breakdown",
]


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
        fixes.append("run one process (without accelerate launch)" if n == 1 else f"launch {n} processes (accelerate launch --num_processes {n})")
    if stated % processes == 0:
        fixes.append(f"set batch_size = {stated // processes}")
    fix = " or ".join(fixes) or "choose processes and batch_size whose product is the recipe's"
    which = ""
    if len(differing) < len(study.variant_names) or len(set(differing.values())) > 1:
        names = list(differing)
        which = f" (variant{'s' * (len(names) != 1)} {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}: {len(names)} of {len(study.variant_names)})"
    return f"warning: {study.path}: {run} differs from the recipe's global_batch = {stated}{which}; to train the recipe, {fix}"


def run_study(
    study,
    *,
    output_dir,
    components=None,
    device: str | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    jobs: int | None = 1,
    worker: Path | None = None,
) -> Path | None:
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
    saved_progress, saved_threads = os.environ.get(PROGRESS_ENV), torch.get_num_threads()  # restored on the way out
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
                print(f"{n_jobs} worker processes ({threads} thread{'s' * (threads != 1)} each) share the teacher baselines and variants", flush=True)
            workers = Workers(Path(study.path), study.scale, run_dir, claims, n_jobs, threads)

        def check_workers():
            if workers is not None and workers.failed():
                raise RuntimeError(
                    f"a worker process failed (exit status {workers.failed()[0]}); see {run_dir / 'run.log'}. "
                    "What finished is stored: run the same command again to resume"
                )

        runner = StudyRunner(
            study,
            store,
            components,
            device=device,
            progress=progress,
            shard=shard,
            claims=claims,
            primary=worker is None,
            check_workers=check_workers if workers else None,
        )
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
        if n_jobs > 1:  # a caller in the same process (a notebook, a test) keeps its own settings
            torch.set_num_threads(saved_threads)
            if saved_progress is None:
                os.environ.pop(PROGRESS_ENV, None)
            else:
                os.environ[PROGRESS_ENV] = saved_progress
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
