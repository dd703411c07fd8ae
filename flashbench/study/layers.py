"""Layers: the values ``[base]``, ``[scale.<s>]``, each explicit variant and each matrix axis set, where each
was written, and their merge into one variant's configs (last wins: defaults <- base <- scale <- variant
<- matrix cell), with the cross-field rules and the component checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import EvalConfig, TrainConfig
from ..kinds import COMPONENT_FIELDS as KIND_FIELDS
from .naming import VARIANT_NAME_RE, _render
from .problems import _BAD, _desc, _fmt, _Problems, _short, _unknown
from .values import EVAL_CHECKS, EVAL_TYPES, TRAIN_CHECKS, TRAIN_TYPES, _adapter, _field, _model, _parse_table, _parse_value, _STR, _typed

if TYPE_CHECKING:
    from .components import _ComponentChecker

_DEFAULT, _BASE, _SCALE, _VARIANT, _MATRIX = range(5)  # layer ranks, later wins


@dataclass
class _Set:
    """A field's value, as written, and where it was written."""

    value: Any
    raw: Any
    key: str | None  # None: the dataclass default
    rank: int


@dataclass
class _Layer:
    train: dict[str, _Set]
    eval: dict[str, _Set]


#: each field's schema (type and checks), by section: a layer's values and a matrix axis's values
TRAIN_FIELDS = {f: _field(t, TRAIN_CHECKS.get(f, ())) for f, t in TRAIN_TYPES.items()}
EVAL_FIELDS = {f: _field(t, EVAL_CHECKS.get(f, ())) for f, t in EVAL_TYPES.items()}
_FIELD_VALUES = {"train": {f: _adapter(s) for f, s in TRAIN_FIELDS.items()}, "eval": {f: _adapter(s) for f, s in EVAL_FIELDS.items()}}
_NAME = _adapter(_STR)

#: ``[base]``, ``[scale.<s>]`` and each explicit variant: training fields and an ``eval`` table of evaluation fields
EvalLayer = _model("EvalLayer", {f: _typed(s) for f, s in EVAL_FIELDS.items()})
TrainLayer = _model("TrainLayer", {**{f: _typed(s) for f, s in TRAIN_FIELDS.items()}, "eval": EvalLayer})


def _parse_layer(table, key: str, p: _Problems, rank: int, extra=()) -> _Layer:
    layer = _Layer({}, {})
    if not isinstance(table, dict):
        p.add(key, f"must be a table, got {_desc(table)}")
        return layer

    def word(err: dict) -> str:
        loc = err["loc"]
        if err["type"] == "extra_forbidden" and len(loc) == 1:
            return _unknown("key", loc[0], [*extra, *TRAIN_TYPES, "eval"])
        if err["type"] == "extra_forbidden":
            return _unknown("evaluation setting", loc[1], EVAL_TYPES)
        assert loc == ("eval",) and err["type"] == "model_type", err
        return f"must be a table of evaluation settings ([{key}.eval]), got {_desc(err['input'])}"

    # a bad value stays _BAD (no fallback to a lower layer: that would add derived noise)
    written = {k: v for k, v in table.items() if k not in extra}
    values = _parse_table(TrainLayer, written, key, p, word, nested=("eval",))
    for k, value in values.items():
        if k != "eval":
            layer.train[k] = _Set(value, written[k], f"{key}.{k}", rank)
        elif value is not _BAD:
            layer.eval = {ek: _Set(ev, written[k][ek], f"{key}.eval.{ek}", rank) for ek, ev in value.items()}
    return layer


def _parse_variants(raw, p: _Problems, where: str = "variants") -> list[tuple[str, _Layer]]:
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        p.add(where, f"must be an array of tables: one [[{where}]] section per variant")
        return []
    out: list[tuple[str, _Layer]] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(raw):
        key = f"{where}[{i}]"
        layer = _parse_layer(table, key, p, _VARIANT, extra=("name",))
        name = table.get("name")
        if name is None:
            p.add(f"{key}.name", 'required: each [[variants]] needs a name, e.g. name = "distil+adv"')
            continue
        if _parse_value(_NAME, name, f"{key}.name", p) is _BAD:
            continue
        if not VARIANT_NAME_RE.match(name):
            p.add(f"{key}.name", f"must match {VARIANT_NAME_RE.pattern[:-2]} (letters, digits, '.', '_', '+', '-'), got {_short(name)}")
            continue
        if name in seen:
            p.add(f"{key}.name", f"duplicate variant name {name!r} (also {where}[{seen[name]}])")
            continue
        seen[name] = i
        out.append((name, layer))
    return out


@dataclass
class _Axis:
    name: str  # as written: "adv_loss" or "eval.nfe"
    section: str  # "train" | "eval"
    field: str
    size: int  # values as written (for the size check, valid or not)
    values: list[_Set]


def _parse_matrix(table, p: _Problems, where: str = "matrix") -> list[_Axis]:
    if not isinstance(table, dict):
        p.add(where, f"must be a table of axes, got {_desc(table)}")
        return []
    if not table:
        p.add(where, f'is empty: add an axis (e.g. adv_loss = ["lsgan", "hinge"]) or remove [{where}]')
        return []
    items = []
    for k, v in table.items():
        if k == "eval" and isinstance(v, dict):  # eval.nfe = [...] written as a dotted key
            items.extend((f"eval.{ek}", ev) for ek, ev in v.items())
        else:
            items.append((k, v))
    allowed = [*TRAIN_TYPES, *(f"eval.{f}" for f in EVAL_TYPES)]
    axes = []
    named: set[str] = set()
    for name, values in items:
        kp = f"{where}.{name}"
        if name in named:  # "eval.nfe" quoted and eval.nfe dotted: the same axis twice
            p.add(kp, "axis given twice (as a quoted and a dotted key); keep one")
            continue
        named.add(name)
        section, fname = ("eval", name[5:]) if name.startswith("eval.") else ("train", name)
        types = EVAL_TYPES if section == "eval" else TRAIN_TYPES
        if fname not in types:
            p.add(kp, _unknown("matrix axis", name, allowed))
            continue
        if not isinstance(values, list):
            p.add(kp, f"must be an array of the axis's values, got {_desc(values)}")
            continue
        if not values:
            p.add(kp, "empty axis: give at least one value, or remove the axis")
            continue
        sets: list[_Set] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(values):
            ikp = f"{kp}[{i}]"
            value = _parse_value(_FIELD_VALUES[section][fname], raw, ikp, p)
            if value is _BAD:
                continue
            label = _render(raw)
            if label in seen:
                p.add(ikp, f"duplicate value {_fmt(raw)} (also {kp}[{seen[label]}])")
                continue
            seen[label] = i
            sets.append(_Set(value, raw, ikp, _MATRIX))
        axes.append(_Axis(name, section, fname, len(values), sets))
    return axes


def _defaults(cls) -> dict[str, _Set]:
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = _Set(value, None, None, _DEFAULT)
    return out


def _resolve_one(layers: list[_Layer], cell: list[tuple[_Axis, _Set]], checker: _ComponentChecker, p: _Problems) -> tuple[TrainConfig, EvalConfig] | None:
    train, ev = _defaults(TrainConfig), _defaults(EvalConfig)
    for layer in layers:
        train.update(layer.train)
        ev.update(layer.eval)
    for axis, s in cell:
        (ev if axis.section == "eval" else train)[axis.field] = s

    ok = True
    # Cross-field rules, reported where the more specific of the two values was written.
    for low, high, rule in (
        ("guidance_min", "guidance_max", "guidance_min must be <= guidance_max"),
        ("phase_length", "iterations", "phase_length must be <= iterations (a run must reach its first phase change)"),
    ):
        a, b = train[low], train[high]
        if a.value is _BAD or b.value is _BAD:  # already reported where it was written
            continue
        if a.value > b.value:
            at, other = (a, b) if a.rank >= b.rank else (b, a)
            where = other.key or "the default"
            p.add(at.key or f"base.{low}", f"{rule}: {low} = {_fmt(a.value)}, {high} = {_fmt(b.value)} (from {where})")
            ok = False

    values: dict[str, dict[str, Any]] = {"train": {}, "eval": {}}
    for section, merged in (("train", train), ("eval", ev)):
        for field, s in merged.items():
            kind_tag = KIND_FIELDS[section].get(field)  # a field naming a component: (kind, required tag)
            if s.value is _BAD:
                value = _BAD
            else:
                value = checker.spec(s, field, *kind_tag, section) if kind_tag else s.value
            if value is _BAD:
                ok = False
            values[section][field] = value
    if not ok:
        return None
    return TrainConfig(**values["train"]), EvalConfig(**values["eval"])
