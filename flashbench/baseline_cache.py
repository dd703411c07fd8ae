"""Teacher baselines computed once per teacher recipe, seed and code, and reused by every study that asks.

The teacher rows of a seed (its CFG sampler at each step count, its few-step sampling, their intervals) and
the many-step reference the students' LPIPS-to-teacher reads depend only on the teacher side of the recipe
(teacher, conditioning, dataset, solver), the evaluation settings and the seed: the six toy Figure 5 studies
share them. The first study to compute them stores the folder ``variants/teacher-s<seed>`` and its rows
here; a later study with the same key copies them into its run and marks each row with ``baseline_cache``
(the key), so a report can say where its teacher rows came from.

The key also holds a fingerprint of flashbench's code (every file of the ``flashbench`` and
``flashbench_plugins`` packages, the toy weights included), torch's version and the device type: after any
change to the code, a cached baseline is not used. Weights outside the packages (a hub snapshot, a local
folder) are named by their path only: set ``FLASHBENCH_CACHE=off`` when they change under the same name.

Location: ``$FLASHBENCH_CACHE`` (a folder; ``off`` disables the cache), else ``~/.cache/flashbench``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("flashbench")

CACHE_ENV = "FLASHBENCH_CACHE"
OFF = ("off", "0", "no", "none", "false")
#: the fields of a cached row that belong to the study reading it, not to the baseline
STUDY_FIELDS = ("study", "scale", "git_hash", "attempt")


def cache_root() -> Path | None:
    """The teacher-baseline cache folder, or None when ``FLASHBENCH_CACHE`` turns it off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in OFF:
        return None
    base = Path(value).expanduser() if value else Path.home() / ".cache" / "flashbench"
    return base / "teacher-baselines"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of every file (path and bytes) of the ``flashbench`` and ``flashbench_plugins`` packages."""
    import flashbench
    import flashbench_plugins

    h = hashlib.sha256()
    for package in (flashbench, flashbench_plugins):
        root = Path(package.__file__).resolve().parent
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(teacher_recipe: str, seed: int, device: str) -> str:
    import torch

    data = {"recipe": teacher_recipe, "seed": seed, "code": code_fingerprint(), "torch": torch.__version__, "device": str(device).split(":")[0]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]


def load(key: str, variant_dir: Path) -> list[dict] | None:
    """The cached rows of ``key`` with its folder copied into ``variant_dir``; None on a miss."""
    root = cache_root()
    entry = root / key if root else None
    if entry is None or not (entry / "rows.json").is_file():
        return None
    try:
        rows = json.loads((entry / "rows.json").read_text(encoding="utf-8"))
        shutil.copytree(entry / "files", variant_dir, dirs_exist_ok=True)
    except (OSError, ValueError) as e:  # a damaged entry: compute the baselines again
        log.warning("teacher-baseline cache entry %s unreadable (%s): computing the baselines", entry, e)
        return None
    return [{k: v for k, v in row.items() if k not in STUDY_FIELDS} | {"baseline_cache": key} for row in rows]


def store(key: str, variant_dir: Path, rows: list[dict]) -> None:
    """Keep ``variant_dir`` and ``rows`` under ``key`` (written whole, then renamed: readers see all or nothing)."""
    root = cache_root()
    if root is None or (root / key).exists():
        return
    tmp = root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        shutil.copytree(variant_dir, tmp / "files")
        (tmp / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
        tmp.rename(root / key)
    except OSError as e:  # a read-only home, a full disk, another process first: the run goes on
        log.info("teacher baselines not cached (%s)", e)
        shutil.rmtree(tmp, ignore_errors=True)
