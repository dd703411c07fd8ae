"""Typed component registries: one per kind, duplicates rejected, unknown names answered with the
closest match and the full list.

A factory that needs a component of another kind (a faceswap dataset, its face detector) finds it with
:func:`lookup`, in the registries the component being built was collected into: the same plugin manager's
built-ins, entry points and extra plugins, never a table of its own."""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import UserError

from .kinds import HOOK_FOR_KIND, KINDS, KNOWN_TAGS, check_built  # noqa: F401  (the kinds table: flashbench.kinds)


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    config: type | None = None
    description: str = ""
    tags: tuple[str, ...] = ()
    plugin: str = ""
    distribution: str = ""
    metric: str = ""  # evaluators: the metric name of their result rows, declared at registration ("": not declared)
    # (kind, name) -> component, in the registries of the plugin manager this component was collected from: what
    # lookup() gives its factory (a function, not the registries: a component holds no other component)
    find: Callable[[str, str], "Component"] | None = field(default=None, compare=False, repr=False)

    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config)] if self.config else []

    def make_config(self, options: dict[str, Any] | None = None):
        """The component's frozen config from study options; raises ``KeyError``/``TypeError`` on bad ones."""
        options = dict(options or {})
        if self.config is None:
            if options:
                raise KeyError(next(iter(options)))
            return None
        known = set(self.option_names())
        for key in options:
            if key not in known:
                raise KeyError(key)
        return self.config(**options)

    def config_problems(self, options: dict[str, Any] | None = None) -> list[str]:
        """Every value the config refuses in ``options`` (known option names), not only the first its
        ``__post_init__`` raises: when the whole set fails, each option is tried alone (on the defaults and
        the required options), and the whole set's error stands only when every option passes alone (a rule
        between two options). [] when the config accepts them."""
        if self.config is None:
            return []
        options = dict(options or {})
        try:
            self.config(**options)
            return []
        except (TypeError, ValueError) as e:
            whole = str(e)
        fields = dataclasses.fields(self.config)
        required = {f.name: options.get(f.name) for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}  # type: ignore[misc]
        if len(options) < 2 or not set(required) <= set(options):
            return [whole]
        try:
            self.config(**required)
        except (TypeError, ValueError) as e:
            return [str(e)]
        alone = []
        for name, value in options.items():
            if name in required:
                continue
            try:
                self.config(**{**required, name: value})
            except (TypeError, ValueError) as e:
                alone.append(str(e))
        return list(dict.fromkeys(alone)) or [whole]

    def build(self, options: dict[str, Any] | None = None, **context):
        """The component's object, checked against its kind's base class (:mod:`flashbench.kinds`)."""
        config = self.make_config(options)
        token = _BUILDING.set(self.find)
        try:
            obj = self.factory(config, **context)
        finally:
            _BUILDING.reset(token)
        check_built(self.kind, obj, name=self.name, plugin=self.plugin or "(unknown)", tags=self.tags)
        return obj

    def __post_init__(self):
        where = f"{self.kind} {self.name!r} (plugin {self.plugin or '(unknown)'})"
        if self.config is not None and not (
            dataclasses.is_dataclass(self.config) and isinstance(self.config, type) and self.config.__dataclass_params__.frozen
        ):
            raise ValueError(f"{where}: config= must be a frozen dataclass (@dataclass(frozen=True)), got {self.config!r}")
        unknown = [t for t in self.tags if t not in KNOWN_TAGS]
        if unknown:
            raise ValueError(f"{where}: unknown tag{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; known tags: {', '.join(sorted(KNOWN_TAGS))}")


@dataclass
class Registry:
    kind: str
    _items: dict[str, Component] = field(default_factory=dict)

    def add(self, component: Component) -> None:
        if component.name in self._items:
            other = self._items[component.name]
            raise ValueError(f"{self.kind} {component.name!r} registered twice (by {other.plugin} and {component.plugin})")
        self._items[component.name] = component

    def get(self, name: str) -> Component:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        names = sorted(self._items)
        return f"unknown {self.kind} {name!r};{closest(name, names)} available: {', '.join(names) or '(none)'}"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[Component]:
        return iter(sorted(self._items.values(), key=lambda c: c.name))

    def names(self) -> list[str]:
        return sorted(self._items)


def closest(name: str, choices) -> str:
    """`` did you mean 'x'?`` for the choice closest to ``name`` (difflib), or "": the one did-you-mean rule."""
    close = difflib.get_close_matches(str(name), sorted(choices), n=1)
    return f" did you mean {close[0]!r}?" if close else ""


# the lookup of the component whose factory is running (None outside a build): set by Component.build only
_BUILDING: contextvars.ContextVar[Callable[[str, str], Component] | None] = contextvars.ContextVar("flashbench_building", default=None)


def lookup(kind: str, name: str) -> Component:
    """The component ``name`` of ``kind`` for a factory that builds one of another kind (a faceswap dataset's
    face detector): from the registries the component being built was collected into; outside a build (a
    DataLoader worker rebuilding its batcher), from the installed plugins' (built-ins and entry points of group
    ``flashbench``). Unknown: a one-line :class:`UserError` with the closest name and the full list."""
    find = _BUILDING.get()
    if find is None:
        from .plugins import collect_components

        find = collect_components().get
    return find(kind, name)
