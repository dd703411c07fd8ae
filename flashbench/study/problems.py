"""Problems of a study file: the collector every check reports to, and how values are echoed in them.

Every check records a :class:`~flashbench.errors.StudyError` (file, key path, message) and goes on, so that
validation reports every problem at once; :data:`_BAD` stands for a value whose problem is recorded.
"""
from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

from ..errors import StudyError
from ..registry import closest


class _Problems:
    def __init__(self, path: Path):
        self.path = path
        self.items: list[StudyError] = []
        self._seen: set[tuple[str | None, str]] = set()

    def add(self, key: str | None, message: str) -> None:
        if (key, message) not in self._seen:  # a base value shared by many variants is reported once
            self._seen.add((key, message))
            self.items.append(StudyError(self.path, key, message))


_BAD = object()  # a value that failed validation (its problem is already recorded)


def _fmt(v: Any) -> str:
    """A value as TOML would spell it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_fmt(x)}" for k, x in v.items()) + " }"
    return str(v)


def _short(s: str, limit: int = 60) -> str:
    """A string's repr, cut: error lines echo what the user wrote, not a megabyte of it."""
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "'..."


def _desc(v: Any) -> str:
    if isinstance(v, bool):
        return f"a boolean ({_fmt(v)})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a float ({_fmt(v)})"
    if isinstance(v, str):
        return f"a string ({_short(v)})"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (datetime.date, datetime.time)):
        return f"a date/time ({v.isoformat()})"
    return f"a {type(v).__name__}"


def _unknown(what: str, name: str, allowed) -> str:
    allowed = list(allowed)
    return f"unknown {what} {_short(name)};{closest(name, allowed)} allowed: {', '.join(allowed)}"
