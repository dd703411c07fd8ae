"""The kinds table (flashbench.kinds): every rule about a component kind read from one place."""

from __future__ import annotations

import dataclasses

import pluggy
import pytest

from flashbench import PROJECT_NAME, hookimpl, hookspecs, kinds
from flashbench.config import COMPONENT_FIELDS, OPTIONAL_COMPONENT_FIELDS, EvalConfig, TrainConfig
from flashbench.plugins import collect_components
from flashbench.registry import HOOK_FOR_KIND, KINDS


def test_every_component_hookspec_is_a_kind_and_back():
    specs = {name for name in dir(hookspecs) if name.startswith("register_")}
    assert specs == set(HOOK_FOR_KIND.values())
    assert KINDS == tuple(k.name for k in kinds.KIND_TABLE)


def test_study_keys_are_config_fields_of_their_section():
    fields = {"train": {f.name for f in dataclasses.fields(TrainConfig)}, "eval": {f.name for f in dataclasses.fields(EvalConfig)}}
    for kind in kinds.KIND_TABLE:
        for key in kind.keys:
            assert key.field in fields[key.section], (kind.name, key)
    assert COMPONENT_FIELDS["adv_loss"] == ("loss", "adversarial")
    assert set(OPTIONAL_COMPONENT_FIELDS) == {"distil_loss", "adv_loss", "dmd_loss"}
    assert kinds.COMPONENT_FIELDS["eval"]["sampler"] == ("sampler", None)


def test_every_built_in_builds_its_kinds_base(components):
    """The built-ins that need no weights build to an instance of their kind's base class."""
    for kind, name, options, context in [
        ("solver", "ddim", {}, {}),
        ("sampler", "lcm", {}, {}),
        ("timesteps", "flash", {}, dict(num_timesteps=8, phase_length=10, num_phases=4)),
        ("loss", "mse", {}, dict(device="cpu", teacher=None)),
        ("loss", "lsgan", {}, dict(device="cpu", teacher=None)),
        ("loss", "dmd", {}, dict(device="cpu", teacher=None)),
        ("dataset", "toy-digits", {}, {}),
        ("face_detector", "boxes", {}, {}),
        ("face_detector", "center", {}, {}),
    ]:
        components.get(kind, name).build(options, **context)  # raises TypeError otherwise


def _collect(register_fn):
    class Plugin:
        pass

    setattr(Plugin, register_fn.__name__, hookimpl(register_fn))
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin(), name="bad-plugin")
    return collect_components(pm)


def test_a_config_must_be_a_frozen_dataclass():
    @dataclasses.dataclass
    class Mutable:
        k: int = 8

    def register_solvers(self, register):
        register("ddim2", lambda c: None, config=Mutable)

    with pytest.raises(ValueError, match=r"^solver 'ddim2' \(plugin bad-plugin\): config= must be a frozen dataclass"):
        _collect(register_solvers)


def test_tags_must_be_known():
    def register_losses(self, register):
        register("l1", lambda c, **kw: None, tags=("distilation",))

    with pytest.raises(ValueError, match=r"unknown tag 'distilation'; known tags: adversarial, distillation, distribution_matching"):
        _collect(register_losses)


def test_a_factory_returning_the_wrong_class_is_one_line():
    def register_timestep_distributions(self, register):
        register("bad", lambda c, **kw: [0.25] * 4)

    components = _collect(register_timestep_distributions)
    with pytest.raises(TypeError) as e:
        components.get("timesteps", "bad").build({}, num_timesteps=4, phase_length=1, num_phases=4)
    assert str(e.value) == (
        "timesteps 'bad' (plugin bad-plugin): its factory returned builtins.list, which is not a "
        "flashbench.method.timesteps.TimestepDistribution; a timesteps factory must return one"
    )


def test_hookspec_docstrings_promise_the_context_the_runner_passes():
    """Each component hook's docstring states ``factory(config, *, <context>)`` with exactly the kinds table's
    context, which is what StudyResources passes (and nothing else)."""
    import inspect

    for kind in kinds.KIND_TABLE:
        doc = inspect.getdoc(getattr(hookspecs, kind.hook))
        expected = f"factory(config, *, {', '.join(kind.context)})" if kind.context else "factory(config)"
        assert expected in " ".join(doc.split()), (kind.name, expected, doc)


def test_the_runner_passes_each_factory_its_kinds_context(components):
    """StudyResources builds through the table: a recording factory sees exactly the context keys."""
    from flashbench.config import ComponentSpec
    from flashbench.runner import StudyResources

    seen = {}

    class Recording:
        def get(self, kind, name):
            class C:
                def build(self, options, **context):
                    seen[kind] = sorted(context)
                    return object()

            return C()

    res = StudyResources(Recording(), "cpu")
    res.teacher(ComponentSpec("t"))
    res.loss(ComponentSpec("l"), teacher=object())
    res.evaluator(ComponentSpec("e"))
    res.sampler(ComponentSpec("s"))
    res.dataset(ComponentSpec("d"))
    res.conditioning(ComponentSpec("c"))
    for kind, keys in seen.items():
        assert keys == sorted(kinds.BY_NAME[kind].context), kind


def test_a_factory_looks_up_another_kind_in_the_registries_it_was_collected_into():
    """flashbench.registry.lookup: what a factory building a component of another kind (a faceswap dataset's face
    detector) sees is its own plugin manager's registries, during its build only."""
    from flashbench.errors import UserError
    from flashbench.registry import _BUILDING, lookup

    class Plugin:
        @hookimpl
        def register_solvers(self, register):
            register("mine", lambda config: ("solver", config))

        @hookimpl
        def register_datasets(self, register):
            register("uses-mine", lambda config: lookup("solver", "mine").factory(None))
            register("uses-mein", lambda config: lookup("solver", "mein"))

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin(), name="lookup-plugin")
    components = collect_components(pm)
    assert _BUILDING.get() is None
    with pytest.raises(TypeError, match="not a flashbench.method.data.Dataset"):  # built: the solver's tuple came back
        components.get("dataset", "uses-mine").build({})
    assert _BUILDING.get() is None  # reset after a failed build too
    with pytest.raises(UserError, match=r"^unknown solver 'mein'; did you mean 'mine'\? available: mine$"):
        components.get("dataset", "uses-mein").build({})


def test_the_fake_plugin_registers_every_kind():
    """conftest's FakePlugin promises one or two components of every kind: a kind added to the table without
    one there fails here."""
    from conftest import make_fake_components

    fake = make_fake_components()
    assert {c.kind for c in fake.all()} == set(KINDS)
