"""The ``[study]`` section (name, title, seeds, default scale, ...) and seed lists (also ``[scale.<s>]
seeds``).
"""
from __future__ import annotations

from typing import Any

from .problems import _BAD, _desc, _Problems, _short, _unknown
from .reading import MAX_NAME_CHARS, MAX_SEEDS, NAME_RE
from .values import _as_str, _at_most, _each, _non_empty, _parse_value, _positive, _seed

STUDY_KEYS = ("name", "title", "reproduces", "panel", "version", "default_scale", "seeds", "primary_nfe")


def _parse_header(table, p: _Problems) -> dict:
    header: dict[str, Any] = {
        "name": None, "title": "", "reproduces": "", "panel": "", "version": 1,
        "default_scale": None, "seeds": (0,), "primary_nfe": None,
    }
    if table is None:
        p.add("study", 'missing [study] section; it needs at least name = "..."')
        return header
    if not isinstance(table, dict):
        p.add("study", f"must be a table, got {_desc(table)}")
        return header
    for k, v in table.items():
        kp = f"study.{k}"
        if k not in STUDY_KEYS:
            p.add(kp, _unknown("key", k, STUDY_KEYS))
        elif k == "name":
            value = _as_str(v, kp, p)
            if value is not _BAD and not NAME_RE.match(value):
                p.add(kp, f"must match [a-z0-9_-]+ (lower-case letters, digits, '_', '-'), got {_short(value)}")
            elif value is not _BAD and len(value) > MAX_NAME_CHARS:
                p.add(kp, f"must be at most {MAX_NAME_CHARS} characters (it names the run directory), got {len(value)}")
            elif value is not _BAD:
                header["name"] = value
        elif k in ("title", "reproduces", "panel", "default_scale"):
            value = _as_str(v, kp, p)
            if value is not _BAD:
                header[k] = value
        elif k in ("version", "primary_nfe"):
            value = _parse_value("int", (_positive,), v, kp, p)
            if value is not _BAD:
                header[k] = value
        elif k == "seeds":
            value = _parse_seeds(v, kp, p)
            if value is not _BAD:
                header["seeds"] = value
    if "name" not in table:
        p.add("study.name", 'required: a short id such as name = "ablation_losses" ([a-z0-9_-]+)')
    if not header["title"] and header["name"]:
        header["title"] = header["name"]
    return header


def _parse_seeds(v, kp: str, p: _Problems):
    value = _parse_value("tuple[int, ...]", (_non_empty, _at_most(MAX_SEEDS, "seeds"), _each(_seed)), v, kp, p)
    if value is _BAD:
        return _BAD
    dupes = sorted({s for s in value if value.count(s) > 1})
    if dupes:
        p.add(kp, f"duplicate seeds: {', '.join(map(str, dupes))}")
        return _BAD
    return value
