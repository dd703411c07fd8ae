"""Component checks: a field naming a component (teacher, losses, evaluators, ...) is checked against the
registries for its name, its kind's required tag and its options (see :mod:`flashbench.kinds`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import core_schema as cs

from ..config import OPTIONAL_COMPONENT_FIELDS, ComponentSpec
from ..registry import closest
from .layers import _Set
from .problems import _BAD, _Problems
from .values import CONVERTERS, PASSTHROUGH, _annotation, _field, _parse_table, _typed

_OPTIONS: dict[type | None, TypeAdapter] = {}


def options_adapter(config: type | None) -> TypeAdapter:
    """The validator of a component's study options: a TypeAdapter over the fields of its frozen config
    dataclass, each optional (the config's own defaults apply), no other key. A field of a type the study
    converts (:data:`~flashbench.study.values.CONVERTERS`) is converted and checked as in ``[base]``; any other
    is passed through, frozen and checked for NaN/inf and NUL. The config's ``__post_init__`` rules are not
    run here: :meth:`~flashbench.registry.Component.config_problems` lists every value they refuse."""
    if config not in _OPTIONS:
        fields = {
            f.name: cs.typed_dict_field(_field(_annotation(f.type)) if _annotation(f.type) in CONVERTERS else PASSTHROUGH, required=False)
            for f in (dataclasses.fields(config) if config else ())
        }
        _OPTIONS[config] = TypeAdapter(_typed(cs.typed_dict_schema(fields, extra_behavior="forbid")))
    return _OPTIONS[config]


class _ComponentChecker:
    """Checks component names, tags and options against the registries, once per place written."""

    def __init__(self, components, p: _Problems, scale: str):
        self.components, self.p, self.scale = components, p, scale
        self._cache: dict[tuple[int, str], Any] = {}

    def spec(self, s: _Set, field: str, kind: str, tag: str | None, section: str):
        cache_key = (id(s), field)
        if cache_key not in self._cache:
            key, note = s.key, ""
            if key is None:
                where = f"base.eval.{field}" if section == "eval" else f"base.{field}"
                key, note = where, f" (the default; set {field} in [base] or [scale.{self.scale}])"
            if isinstance(s.value, tuple):
                out = [self._one(spec, f"{key}[{i}]", field, kind, tag, note) for i, spec in enumerate(s.value)]
                result = _BAD if any(x is _BAD for x in out) else tuple(out)
            else:
                result = self._one(s.value, key, field, kind, tag, note)
            self._cache[cache_key] = result
        return self._cache[cache_key]

    def _one(self, spec: ComponentSpec, key: str, field: str, kind: str, tag, note: str):
        p = self.p
        if spec.name == "none" and field in OPTIONAL_COMPONENT_FIELDS:
            if spec.options:
                p.add(key, f"'none' switches the {field} term off and takes no options")
                return _BAD
            return spec
        registry = self.components[kind]
        if spec.name not in registry:
            extra = " (or 'none' to switch the term off)" if field in OPTIONAL_COMPONENT_FIELDS else ""
            p.add(key, registry.unknown_message(spec.name) + extra + note)
            return _BAD
        component = registry.get(spec.name)
        if tag and tag not in component.tags:
            fitting = [c.name for c in registry if tag in c.tags]
            p.add(
                key,
                f"{kind} {spec.name!r} is not tagged {tag!r} (its tags: {', '.join(component.tags) or 'none'}); "
                f"{field} takes one of: {', '.join(fitting) or '(none installed)'}{', none' if field in OPTIONAL_COMPONENT_FIELDS else ''}",
            )
            return _BAD
        allowed = component.option_names()

        def word(err: dict) -> str:
            assert err["type"] == "extra_forbidden", err
            name = err["loc"][0]
            if allowed:
                return f"unknown option {name!r} for {kind} {spec.name!r};{closest(name, allowed)} options: {', '.join(allowed)}"
            return f"{kind} {spec.name!r} takes no options"

        values = _parse_table(options_adapter(component.config), spec.options, key, p, word)
        options = {k: v for k, v in values.items() if v is not _BAD}
        mistyped = [k for k, v in values.items() if v is _BAD]
        ok = not mistyped and set(spec.options) <= set(allowed)
        # The values the config itself refuses, every one of them, beside the unknown and mistyped above
        # (unless a mistyped one is required: its absence would only add a derived problem).
        required = (
            [f.name for f in dataclasses.fields(component.config) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            if component.config
            else []
        )  # type: ignore[misc]
        for message in [] if set(mistyped) & set(required) else component.config_problems(options):
            p.add(key, f"invalid options for {kind} {spec.name!r}: {message}; options: {', '.join(allowed) or '(none)'}")
            ok = False
        if not ok:
            return _BAD
        return ComponentSpec(spec.name, options)
