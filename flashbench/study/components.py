"""Component checks: a field naming a component (teacher, losses, evaluators, ...) is checked against the
registries for its name, its kind's required tag and its options (see :mod:`flashbench.kinds`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..config import OPTIONAL_COMPONENT_FIELDS, ComponentSpec
from ..registry import closest
from .layers import _Set
from .problems import _BAD, _Problems
from .values import CONVERTERS, _annotation, _as_passthrough, _parse_value


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
            p.add(key, f"{kind} {spec.name!r} is not tagged {tag!r} (its tags: {', '.join(component.tags) or 'none'}); "
                       f"{field} takes one of: {', '.join(fitting) or '(none installed)'}{', none' if field in OPTIONAL_COMPONENT_FIELDS else ''}")
            return _BAD
        options, ok, mistyped = {}, True, []
        allowed = component.option_names()
        types = {f.name: _annotation(f.type) for f in dataclasses.fields(component.config)} if component.config else {}
        for name, raw in spec.options.items():
            okey = f"{key}.{name}"
            if name not in types:
                if allowed:
                    p.add(okey, f"unknown option {name!r} for {kind} {spec.name!r};{closest(name, allowed)} options: {', '.join(allowed)}")
                else:
                    p.add(okey, f"{kind} {spec.name!r} takes no options")
                ok = False
                continue
            value = _parse_value(types[name], (), raw, okey, p) if types[name] in CONVERTERS else _as_passthrough(raw, okey, p)
            if value is _BAD:
                ok, mistyped = False, mistyped + [name]
                continue
            options[name] = value
        # The values the config itself refuses, every one of them, beside the unknown and mistyped above
        # (unless a mistyped one is required: its absence would only add a derived problem).
        required = [f.name for f in dataclasses.fields(component.config) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING] if component.config else []  # type: ignore[misc]
        for message in [] if set(mistyped) & set(required) else component.config_problems(options):
            p.add(key, f"invalid options for {kind} {spec.name!r}: {message}; options: {', '.join(allowed) or '(none)'}")
            ok = False
        if not ok:
            return _BAD
        return ComponentSpec(spec.name, options)
