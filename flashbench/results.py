"""The result store: one directory per study run, tidy rows in an append-only JSON-lines file.

Layout of a run directory::

    RUN_DIR/study.json                the resolved study (``write_study``)
    RUN_DIR/provenance.json           run-level provenance (``write_provenance``, ``collect_provenance``)
    RUN_DIR/results.jsonl             tidy rows, one JSON object per line, append-only (``add_rows``)
    RUN_DIR/variants/<key>/done.json  marker: the variant is complete, its rows are in results.jsonl
    RUN_DIR/variants/<key>/bootstrap/ bootstrap replicates of each of its rows (``save_replicates``)
    RUN_DIR/variants/<key>/...        the runner's files for that variant (sample grids ``*.png``, LoRA, ...)
    RUN_DIR/tables/*.csv *.md *.tex   written by the report
    RUN_DIR/report.html               written by the report
    RUN_DIR/run.log                   plain log, written by the runner

Tidy row schema: one row per (variant, seed, NFE, metric).

=====================  ==========================================================================
column                 meaning
=====================  ==========================================================================
study                  the study's name
scale                  the scale it ran at (``"paper"``, ``"toy"``, ...)
variant                the variant's name; ``"teacher"`` for the teacher baselines
variant_key            the unit of completion (one variant at one seed); ``"teacher-s<seed>"`` for baselines
                       (``"teacher@<teacher>-s<seed>"`` for a study's other teachers)
teacher_baseline       (student rows of a variant on another teacher than the study's first) the name of its
                       teacher's baseline rows, ``"teacher@<teacher>"``; absent: ``"teacher"``
seed                   the seed (int)
role                   ``"student"`` or ``"teacher"``
nfe                    network evaluations per sample (int): student steps; teacher steps x 2 with CFG
steps                  sampler steps (int)
metric                 e.g. ``"fd"``, ``"clip_score"``, ``"lpips_to_teacher"``
value                  float, or null when the measurement failed or was not finite
n                      number of samples the metric was computed on
higher_is_better       bool, the metric's direction
status                 ``"ok"`` or ``"failed"``; an optional ``reason`` column says why
axis.<field>           the value of each study axis for this variant, e.g. ``"axis.adv_loss": "lsgan"``
trainable_params       cost of the variant (null for the teacher baselines) ...
iterations             ... training iterations
seconds_per_step       ... mean wall time of one training step
teacher_nfe_per_step   ... teacher network evaluations per training step
student_nfe_per_step   ... student network evaluations per training step
train_seconds          ... total training wall time
processes              ... data-parallel processes that trained it (accelerate's ``num_processes``)
global_batch           ... samples per optimiser step: processes x the per-process ``batch_size``
ci_low, ci_high        the value's 95% interval (null without one: an evaluator that gives no
                       bootstrap, ``bootstrap_resamples = 0``, or a row written before intervals)
ci_level, ci_method    0.95, and how the interval was computed (see ``flashbench.stats``)
bootstrap_file         the row's bootstrap replicates, ``variants/<key>/bootstrap/*.npy``, relative
                       to the run directory: the report pairs two rows of a seed through them
bootstrap_seconds      time spent on the row's bootstrap
git_hash               the commit the row was produced by
attempt                stamped by the store: which attempt at ``variant_key`` wrote the row
=====================  ==========================================================================

Crash safety. Each ``add_rows`` call appends whole lines in one write, then flushes and fsyncs; a
crash mid-write leaves at most one truncated line, which ``rows`` skips. A variant counts only once
its ``done.json`` marker exists (written atomically *after* its rows), and only the rows of the
attempt named in that marker count: a variant killed half-way and run again is never counted twice.

The contract for writers (the runner): for each ``variant_key``, append all its rows with
``add_rows`` (one or several calls), then call ``mark_done(key, info)`` from the same store object.
The teacher baselines follow the same contract with their ``teacher-s<seed>`` keys.

Nothing here imports torch or the diffusion libraries: provenance reads installed versions from
package metadata.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UserError

try:  # POSIX: serialise appends from several shard processes writing to one store
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

RESULTS_FILE = "results.jsonl"
STUDY_FILE = "study.json"
PROVENANCE_FILE = "provenance.json"
VARIANTS_DIR = "variants"
DONE_FILE = "done.json"
BOOTSTRAP_DIR = "bootstrap"

# Columns every row has once stored (missing ones are filled with null), in this order.
CORE_COLUMNS = (
    "study",
    "scale",
    "variant",
    "variant_key",
    "seed",
    "role",
    "nfe",
    "steps",
    "metric",
    "value",
    "n",
    "higher_is_better",
    "status",
)
COST_COLUMNS = (
    "trainable_params",
    "iterations",
    "seconds_per_step",
    "teacher_nfe_per_step",
    "student_nfe_per_step",
    "train_seconds",
    "processes",
    "global_batch",
)
AXIS_PREFIX = "axis."

# Distributions whose versions go into the provenance (read from metadata, never imported).
PROVENANCE_PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "accelerate",
    "open_clip_torch",
    "clean-fid",
    "pandas",
    "pluggy",
    "flashbench",
)


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------
def to_jsonable(obj: Any, where: str = "") -> Any:
    """``obj`` as plain JSON data: numpy/torch scalars become Python numbers, tuples lists, paths
    strings; non-finite floats become ``None`` (strict JSON has no NaN). Raises ``TypeError``
    naming the offending key for anything else."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)  # also turns IntEnum / bool-like subclasses into plain int
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v, where) for v in sorted(obj, key=repr)]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_data") and callable(obj.to_data):  # config.ComponentSpec
        return to_jsonable(obj.to_data(), where)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, where)
    # numpy scalars and 0-d arrays/tensors, by duck typing so neither numpy nor torch is imported.
    if callable(getattr(obj, "item", None)) and getattr(obj, "ndim", 0) == 0:
        return to_jsonable(obj.item(), where)
    raise TypeError(f"{where or 'value'}: {type(obj).__name__} is not JSON-serialisable")


def _dumps(obj: Any, **kwargs) -> str:
    return json.dumps(to_jsonable(obj), allow_nan=False, ensure_ascii=False, **kwargs)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_with(path: Path | str, write: Callable[[Any], None], *, binary: bool = False) -> None:
    """Call ``write(file handle)`` on a temporary file beside ``path``, fsync it and rename it over ``path``,
    so readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_with`)."""
    atomic_write_with(path, lambda f: f.write(text))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, _dumps(obj, indent=2) + "\n")


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------
class ResultStore:
    """One study run's results. Creates nothing until the first write."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)
        # One attempt id per variant key per store object; mark_done records it and ends it.
        self._attempts: dict[str, str] = {}
        self.skipped_lines = 0  # lines of results.jsonl that were not valid JSON, at the last rows()

    # ---- paths ---------------------------------------------------------------------------
    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS_FILE

    def _variant_path(self, key: str) -> Path:
        if not isinstance(key, str) or not key or key in (".", "..") or "/" in key or "\\" in key or "\0" in key:
            raise ValueError(f"invalid variant key {key!r}: it names a directory under {VARIANTS_DIR}/")
        return self.run_dir / VARIANTS_DIR / key

    def variant_dir(self, key: str) -> Path:
        """The directory for ``key``'s files, created if needed."""
        path = self._variant_path(key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- bootstrap replicates ------------------------------------------------------------
    def save_replicates(self, key: str, name: str, replicates) -> str:
        """Store one row's bootstrap replicates as ``variants/<key>/bootstrap/<name>.npy`` (float64, no
        pickle); returns the path relative to the run directory, for the row's ``bootstrap_file``."""
        import numpy as np

        safe = "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in name)
        folder = self.variant_dir(key) / BOOTSTRAP_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f"{safe}.npy"
        tmp = path.with_name(f".{safe}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(replicates, dtype=np.float64), allow_pickle=False)
        tmp.replace(path)
        return path.relative_to(self.run_dir).as_posix()

    def load_replicates(self, relative: Any):
        """The replicates a row's ``bootstrap_file`` names, or None (no file, unreadable, outside the run)."""
        import numpy as np

        if not isinstance(relative, str) or not relative:
            return None
        path = (self.run_dir / relative).resolve()
        if self.run_dir.resolve() not in path.parents:
            return None
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return data if data.ndim == 1 else None

    # ---- completion markers --------------------------------------------------------------
    def is_done(self, key: str) -> bool:
        return (self._variant_path(key) / DONE_FILE).is_file()

    def done_info(self, key: str) -> dict | None:
        """The ``info`` recorded by ``mark_done`` (plus ``attempt`` and ``finished``), or None."""
        path = self._variant_path(key) / DONE_FILE
        try:
            data = _read_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # unreadable marker: treat the variant as not done
            return None
        return data if isinstance(data, dict) else None

    def mark_done(self, key: str, info: dict) -> None:
        """Mark ``key`` complete, after all of its rows were appended. Atomic."""
        data = dict(to_jsonable(dict(info)))
        attempt = self._attempts.pop(key, None)
        if attempt is None:
            # This object wrote no rows for the key (another store object did, e.g. a worker
            # process): take the latest attempt in the file as this one. The runner should append
            # and mark done through one object, so that a rerun writing no rows still gets a fresh
            # id and the rows of an earlier killed attempt are not counted.
            attempt = self._last_attempt_in_file(key) or self._new_attempt()
        data["attempt"] = attempt
        data["finished"] = _utc_now()
        atomic_write_json(self.variant_dir(key) / DONE_FILE, data)

    def _last_attempt_in_file(self, key: str) -> str | None:
        last = None
        for row in self.all_rows():
            if row.get("variant_key") == key and row.get("attempt"):
                last = row["attempt"]
        return last

    @staticmethod
    def _new_attempt() -> str:
        return uuid.uuid4().hex[:12]

    # ---- rows ----------------------------------------------------------------------------
    def add_rows(self, rows: list[dict]) -> None:
        """Append ``rows`` as complete JSON lines (one write, flushed and fsynced).

        Each row needs a ``variant_key``. Values are converted to plain JSON (numpy scalars to
        numbers); a non-finite ``value`` is stored as null with ``status`` "failed". Rows without a
        ``status`` get "ok" when their value is a number."""
        if not rows:
            return
        lines = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise TypeError(f"row {i}: expected a dict, got {type(row).__name__}")
            key = row.get("variant_key")
            self._variant_path(key)  # validates the key
            data = {col: None for col in CORE_COLUMNS}
            data.update(to_jsonable(row, f"row {i}"))
            raw = row.get("value")
            if data["value"] is None and raw is not None:  # NaN / inf: keep the row, flag it
                data["status"] = "failed"
                data.setdefault("reason", None)
                if data["reason"] is None:
                    data["reason"] = f"non-finite value ({raw})"
            if data["status"] is None:
                data["status"] = "ok" if data["value"] is not None else "failed"
            data["attempt"] = self._attempts.setdefault(key, self._new_attempt())
            lines.append(_dumps(data))
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.results_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            # A crash mid-write leaves a last line without its newline: start on a fresh line so
            # the torn one stays alone (and skipped) instead of swallowing our first row.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def all_rows(self) -> list[dict]:
        """Every decodable row in results.jsonl, complete variants or not (for diagnostics)."""
        self.skipped_lines = 0
        try:
            with open(self.results_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in text.split("\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:  # a line torn by a crash mid-write
                self.skipped_lines += 1
                continue
            if isinstance(row, dict):
                out.append(row)
            else:
                self.skipped_lines += 1
        return out

    def rows(self) -> list[dict]:
        """The rows of complete variants: those with a done.json marker, from the attempt it names."""
        done: dict[str, dict | None] = {}
        out = []
        for row in self.all_rows():
            key = row.get("variant_key")
            if not isinstance(key, str):
                continue
            if key not in done:
                try:
                    done[key] = self.done_info(key)
                except ValueError:
                    done[key] = None
            info = done[key]
            if info is None:
                continue
            attempt = info.get("attempt")
            if attempt is not None and row.get("attempt") != attempt:
                continue  # rows of an earlier, killed attempt at the same variant
            out.append(row)
        return out

    def dataframe(self):
        """``rows()`` as a pandas DataFrame, with the core columns even when empty."""
        import pandas as pd

        rows = self.rows()
        df = pd.DataFrame(rows)
        for col in CORE_COLUMNS:
            if col not in df.columns:
                df[col] = None
        return df

    # ---- study and provenance ------------------------------------------------------------
    def write_study(self, data: dict) -> None:
        atomic_write_json(self.run_dir / STUDY_FILE, data)

    def read_study(self) -> dict:
        return self._read_required(STUDY_FILE, "not a flashbench run directory")

    def write_provenance(self, data: dict) -> None:
        atomic_write_json(self.run_dir / PROVENANCE_FILE, data)

    def read_provenance(self) -> dict:
        return self._read_required(PROVENANCE_FILE, "run directory without provenance")

    def _read_required(self, name: str, what: str) -> dict:
        path = self.run_dir / name
        try:
            data = _read_json(path)
        except FileNotFoundError:
            raise UserError(f"{self.run_dir}: {what} (no {name})") from None
        except ValueError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object")
        return data


# --------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------
def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def git_hash(cwd: Path | str | None = None) -> str:
    """The commit of the repository at ``cwd`` (default: the working directory), with "+dirty" when
    tracked files have uncommitted changes; "unknown" outside a repository or without git."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return "unknown"
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return commit + ("+dirty" if status else "")


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _usable_cpus() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _gpus() -> list[dict] | None:
    """GPU names, only if torch is already imported by the caller (importing it here costs seconds)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            out.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
        return out
    except Exception:  # a broken CUDA setup must not stop a run from recording what it can
        return None


def collect_provenance(scale: str, *, processes: int = 1, batch_sizes: Sequence[int] = ()) -> dict:
    """Run-level provenance: code version, library versions, hardware, time. Never imports torch.

    ``processes``: the data-parallel processes training each variant (accelerate's ``num_processes``);
    ``batch_sizes``: the per-process ``batch_size`` of the variants that train. ``global_batch`` is each
    distinct processes x batch_size, ascending (the paper's recipes state theirs, e.g. SD1.5: 4 x 2 GPUs = 8).
    """
    torch = sys.modules.get("torch")
    cuda = getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None
    return {
        "scale": scale,
        "processes": processes,
        "global_batch": sorted({processes * b for b in batch_sizes}),
        "git_hash": git_hash(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": _package_versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": _usable_cpus(),
        "gpus": _gpus(),
        "cuda": cuda,
        "hostname": socket.gethostname(),
        "timestamp": _utc_now(),
        "argv": list(sys.argv),
    }


__all__ = [
    "ResultStore",
    "atomic_write_text",
    "atomic_write_json",
    "collect_provenance",
    "git_hash",
    "to_jsonable",
    "CORE_COLUMNS",
    "COST_COLUMNS",
    "AXIS_PREFIX",
]
