"""``flashbench run --jobs N``: the teacher baselines and variants of one study shared by N worker processes.

On a CPU, N single-threaded processes get more out of N cores than one process with N torch threads: the
toy networks are small, and most of a step's operators are too short to split well across threads. The
``flashbench run`` process is worker 0; it starts workers 1..N-1 (the same command with a hidden
``--worker DIR`` option), works beside them, waits for them and writes the report.

Work is taken, not assigned: a task (the teacher baselines of one seed, or one variant with the variants
that share its training recipe) belongs to the worker that first creates its claim file in the run's claim
folder (``O_CREAT | O_EXCL``: atomic on a local file system). A variant is evaluated against its seed's
teacher reference, so a worker takes it only once that seed's baselines are done; a worker with nothing
left to take exits, while the others finish what they hold. Every task is seeded by itself (its seed,
its recipe), so which worker runs it does not change its rows: with one thread per worker, ``--jobs 2``
writes the rows ``--jobs 1`` writes (tested).

``--shard I/N`` (SLURM arrays, several machines) keeps its static split: each shard runs every N-th variant.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

#: environment variable giving ``--jobs``'s default (``auto`` or a number)
JOBS_ENV = "FLASHBENCH_JOBS"
CLAIMS_FOLDER = ".claims"
#: set to ``lines`` for plain progress lines even on a terminal (:mod:`flashbench.progress`)
PROGRESS_ENV = "FLASHBENCH_PROGRESS"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_jobs(text: str | None) -> int | None:
    """``--jobs`` (or ``FLASHBENCH_JOBS``): a positive number, or ``auto``/None (decided by :func:`resolve_jobs`)."""
    from .errors import UserError

    if text is None or str(text).strip().lower() in ("", "auto"):
        return None
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UserError(f"--jobs: expected a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise UserError(f"--jobs: expected a positive integer or 'auto', got {text!r}")
    return value


def resolve_jobs(requested: int | None, *, tasks: int, cuda: bool, distributed: bool) -> int:
    """How many worker processes to run. ``auto`` (None): one per available core on a CPU, one on a GPU (a
    study's variants then share the device in turn) or under ``accelerate launch`` (the processes already
    split each batch). Never more than there are tasks to take."""
    if distributed:
        return 1
    n = requested if requested is not None else (1 if cuda else available_cores())
    return max(1, min(n, tasks))


class Claims:
    """The claim files of one ``--jobs`` run: whoever creates a task's file first runs the task."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _name(task: str) -> str:
        return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in task)

    def take(self, task: str) -> bool:
        """Claim ``task`` for this process; False when another process holds it."""
        try:
            fd = os.open(self.folder / self._name(task), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True

    def taken(self, task: str) -> bool:
        return (self.folder / self._name(task)).exists()


def new_claims(run_dir: Path) -> Claims:
    """A fresh claim folder for one invocation (claims of an interrupted run are not inherited: what it
    finished is known from its done markers, what it held is free again)."""
    return Claims(Path(run_dir) / CLAIMS_FOLDER / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}")


def remove_claims(claims: Claims) -> None:
    shutil.rmtree(claims.folder, ignore_errors=True)
    try:
        claims.folder.parent.rmdir()  # only when no other invocation's folder is left
    except OSError:
        pass


def worker_environment(threads: int) -> dict[str, str]:
    """The environment of a worker: ``threads`` torch/OpenMP threads, plain progress lines (workers share a
    terminal: interleaved tqdm bars would be unreadable). A worker runs with ``--worker``: it never starts others."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env[PROGRESS_ENV] = "lines"
    return env


class Workers:
    """Workers 1..N-1 of a ``--jobs N`` run, started as ``flashbench run ... --worker CLAIMS``."""

    def __init__(self, file: Path, scale: str, output: Path, claims: Claims, n: int, threads: int):
        self.procs: list[subprocess.Popen] = []
        cmd = [sys.executable, "-m", "flashbench.cli", "run", str(file), "--scale", scale, "--output", str(output), "--worker", str(claims.folder)]
        env = worker_environment(threads)
        for _ in range(1, n):
            self.procs.append(subprocess.Popen(cmd, env=env))

    def failed(self) -> list[int]:
        """Exit statuses of workers that ended with an error (so far)."""
        return [p.returncode for p in self.procs if p.poll() is not None and p.returncode != 0]

    def wait(self) -> list[int]:
        return [p.wait() for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
