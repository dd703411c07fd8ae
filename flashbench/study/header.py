"""The ``[study]`` section (name, title, seeds, default scale, ...) and seed lists (also ``[scale.<s>]
seeds``).
"""

from __future__ import annotations

from typing import Any

from .problems import _BAD, _desc, _Problems, _short, _unknown
from .reading import MAX_NAME_CHARS, MAX_SEEDS, NAME_RE
from .values import _STR, _adapter, _at_most, _each, _field, _model, _non_empty, _parse_table, _parse_value, _positive, _rule, _seed, _typed

STUDY_KEYS = ("name", "title", "reproduces", "panel", "version", "default_scale", "seeds", "primary_nfe")


def _name_rule(value: str) -> str | None:
    if not NAME_RE.match(value):
        return f"must match [a-z0-9_-]+ (lower-case letters, digits, '_', '-'), got {_short(value)}"
    if len(value) > MAX_NAME_CHARS:
        return f"must be at most {MAX_NAME_CHARS} characters (it names the run directory), got {len(value)}"
    return None


def _no_duplicates(value: tuple) -> str | None:
    dupes = sorted({s for s in value if value.count(s) > 1})
    return f"duplicate seeds: {', '.join(map(str, dupes))}" if dupes else None


#: a list of seeds, in [study] and in [scale.<s>]
SEEDS = _field("tuple[int, ...]", (_non_empty, _at_most(MAX_SEEDS, "seeds"), _each(_seed), _rule(_no_duplicates)))
_SEEDS = _adapter(SEEDS)

#: ``[study]``
StudyHeader = _model(
    "StudyHeader",
    {
        "name": _typed(_field("str", (_rule(_name_rule),))),
        **{k: _typed(_STR) for k in ("title", "reproduces", "panel")},
        "version": _typed(_field("int", (_positive,))),
        "default_scale": _typed(_STR),
        "seeds": _typed(SEEDS),
        "primary_nfe": _typed(_field("int", (_positive,))),
    },
    required=("name",),
)
assert tuple(StudyHeader.model_fields) == STUDY_KEYS


def _parse_header(table, p: _Problems) -> dict:
    header: dict[str, Any] = {
        "name": None,
        "title": "",
        "reproduces": "",
        "panel": "",
        "version": 1,
        "default_scale": None,
        "seeds": (0,),
        "primary_nfe": None,
    }
    if table is None:
        p.add("study", 'missing [study] section; it needs at least name = "..."')
        return header
    if not isinstance(table, dict):
        p.add("study", f"must be a table, got {_desc(table)}")
        return header

    def word(err: dict) -> str:
        if err["type"] == "missing":
            return 'required: a short id such as name = "ablation_losses" ([a-z0-9_-]+)'
        assert err["type"] == "extra_forbidden", err
        return _unknown("key", err["loc"][0], STUDY_KEYS)

    values = _parse_table(StudyHeader, table, "study", p, word)
    header.update((k, v) for k, v in values.items() if v is not _BAD)
    if not header["title"] and header["name"]:
        header["title"] = header["name"]
    return header


def _parse_seeds(v, kp: str, p: _Problems):
    return _parse_value(_SEEDS, v, kp, p)
