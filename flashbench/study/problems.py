"""Problems of a study file: the collector every check reports to, and how values are echoed in them.

Every check records a :class:`~flashbench.errors.StudyError` (file, key path, message) and goes on, so that
validation reports every problem at once; :data:`_BAD` stands for a value whose problem is recorded. Values are
echoed as :mod:`flashbench.formatting` writes them; the study's modules import its three echoes from here, under
the names they have always used: ``_fmt`` (a value as TOML spells it), ``_short`` (a string's repr, cut) and
``_desc`` (a value's type and value).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import StudyError
from ..formatting import describe as _desc, echo_text as _fmt, short_repr as _short
from ..registry import closest

__all__ = ["_BAD", "_Problems", "_desc", "_fmt", "_short", "_unknown"]


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


def _unknown(what: str, name: str, allowed) -> str:
    allowed = list(allowed)
    return f"unknown {what} {_short(name)};{closest(name, allowed)} allowed: {', '.join(allowed)}"
