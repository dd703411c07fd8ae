"""Meta-tests (after datasette's ``tests/test_docs.py``): the docs cannot drift from the code.

- ``docs/plugins.md`` documents every hook of ``flashbench/hookspecs.py`` under a heading with its exact
  signature, and nothing else under such headings; the ``register`` callable's signature is the real one;
  every Python example on the page runs: it registers through its hook, the component builds and works.
- every hook is exercised by a test (a registry of which tests cover it, checked to exist, and the name
  found in the test files).
- ``docs/studies.md`` names every key of the study header, the sections, the claims, and every field of
  ``TrainConfig`` and ``EvalConfig``; its example study validates.
- relative links in the README and the docs point at files that exist.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pluggy
import pytest
import torch

from flashbench import PROJECT_NAME, hookspecs
from flashbench.config import EvalConfig, TrainConfig
from flashbench.plugins import collect_components
from flashbench.registry import HOOK_FOR_KIND

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_DOC = ROOT / "docs" / "plugins.md"
STUDIES_DOC = ROOT / "docs" / "studies.md"
HEADING = re.compile(r"^### `(\w+)\((.*)\)`\s*$", re.M)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
KIND_FOR_HOOK = {hook: kind for kind, hook in HOOK_FOR_KIND.items()}
LIFECYCLE = ("before_study", "after_variant", "after_study")

# Which tests exercise each hook ("file::test function"). test_every_hook_has_a_test checks that each exists.
HOOK_TESTS = {
    "register_teachers": ["test_entry_points.py::test_entry_point_component_is_collected", "test_example_plugin.py::test_a_study_trains_and_reports_with_it"],
    "register_conditionings": ["test_e2e.py::test_tables_shape_and_finite_metrics", "test_docs.py::test_hook_example_works"],
    "register_losses": ["test_e2e.py::test_nan_loss_fails_the_variant_and_the_study_goes_on", "test_docs.py::test_hook_example_works"],
    "register_timestep_distributions": ["test_e2e.py::test_every_figure5_panel_runs_on_the_toy_world", "test_docs.py::test_hook_example_works"],
    "register_solvers": ["test_e2e.py::test_tables_shape_and_finite_metrics", "test_docs.py::test_hook_example_works"],
    "register_samplers": ["test_samplers.py::test_a_third_party_sampler_is_registered_and_runs", "test_docs.py::test_hook_example_works"],
    "register_evaluators": ["test_e2e.py::test_missing_weights_fail_before_any_training", "test_docs.py::test_hook_example_works"],
    "register_datasets": ["test_e2e.py::test_tables_shape_and_finite_metrics", "test_docs.py::test_hook_example_works"],
    "register_face_detectors": ["test_datasets.py::test_a_third_party_face_detector_is_a_plugin_component", "test_docs.py::test_hook_example_works"],
    "before_study": ["test_e2e.py::test_lifecycle_hooks_and_single_loads", "test_docs.py::test_hook_example_works"],
    "after_variant": ["test_e2e.py::test_lifecycle_hooks_and_single_loads", "test_docs.py::test_hook_example_works"],
    "after_study": ["test_e2e.py::test_lifecycle_hooks_and_single_loads", "test_docs.py::test_hook_example_works"],
}


def hookspec_names() -> list[str]:
    return [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, f"{PROJECT_NAME}_spec")]


def _signature(name: str) -> str:
    return ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)


def _sections(text: str) -> dict[str, str]:
    """Each documented hook's section: from its heading to the next heading."""
    starts = [m.start() for m in re.finditer(r"^#{2,3} .*$", text, re.M)]
    out = {}
    for start, end in zip(starts, starts[1:] + [len(text)]):
        m = HEADING.match(text, start)
        if m:
            out[m.group(1)] = text[start:end]
    return out


def _plugins_doc() -> str:
    return PLUGINS_DOC.read_text(encoding="utf-8")


# --- docs/plugins.md against hookspecs.py -----------------------------------------------------------------------
def test_every_hook_is_documented_with_its_exact_signature():
    documented = {m.group(1): m.group(2) for m in HEADING.finditer(_plugins_doc())}
    specs = hookspec_names()
    assert specs, "no hookspecs found"
    assert sorted(set(specs) - set(documented)) == [], "hooks missing from docs/plugins.md"
    assert sorted(set(documented) - set(specs)) == [], "docs/plugins.md documents hooks that do not exist"
    for name in specs:
        assert documented[name] == _signature(name), f"{name}: docs say ({documented[name]}), hookspecs.py says ({_signature(name)})"


def test_every_hook_section_has_an_example():
    sections = _sections(_plugins_doc())
    for name in hookspec_names():
        assert PYTHON_BLOCK.search(sections[name]), f"docs/plugins.md: {name} has no ```python example"


def test_register_signature_is_the_real_one():
    captured = {}

    class Capture:
        @pluggy.HookimplMarker(PROJECT_NAME)
        def register_solvers(self, register):
            captured["register"] = register

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(Capture())
    collect_components(pm)
    parts, star = [], False
    for p in inspect.signature(captured["register"]).parameters.values():
        if p.name.startswith("_"):
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        default = "" if p.default is p.empty else "=" + ('""' if p.default == "" else repr(p.default))
        parts.append(p.name + default)
    documented = f"register({', '.join(parts)})"
    assert documented == 'register(name, factory, *, config=None, description="", tags=(), metric="")'
    assert documented in _plugins_doc()


def _load_example(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while the code runs
    exec(compile(code, f"docs/plugins.md[{name}]", "exec"), module.__dict__)
    return module


def _manager(module) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(module, name=module.__name__)
    return pm


class _StubTeacher:
    """What a conditioning sees of a teacher."""

    def encode_prompts(self, prompts, extras=None):
        return {"prompts": list(prompts)}

    def null_condition(self, prompts, extras=None):
        return {"prompts": [""] * len(prompts)}


def _check_component(kind: str, component) -> None:
    """Build a documented component with the context the runner gives it, and use it once."""
    if kind == "teacher":  # the example builds a class of a package the reader writes: check the registration
        assert component.config is not None and component.make_config({}).path == ""
        return
    if kind == "conditioning":
        cond, uncond = component.build({}).prepare(_StubTeacher(), ["a cat"], {})
        assert cond == {"prompts": ["a photo of a cat"]} and uncond == {"prompts": [""]}
    elif kind == "loss":
        loss = component.build({}, device="cpu", teacher=None)
        a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
        assert component.tags == ("distillation",)
        assert float(loss(a, b, None)) > 0 and float(loss(a, a, None)) == pytest.approx(0.0, abs=1e-6)
    elif kind == "timesteps":
        from flashbench.method.timesteps import TimestepDistribution

        dist = component.build({"power": 2.0}, num_timesteps=8, phase_length=10, num_phases=4)
        assert isinstance(dist, TimestepDistribution)
        pmf = dist.pmf(0)
        assert pmf.shape == (8,) and float(pmf.sum()) == pytest.approx(1.0) and pmf[-1] > pmf[0]
        idx = dist.sample(torch.Generator().manual_seed(0), 16, 0)
        assert int(idx.min()) >= 1 and int(idx.max()) <= 8
    elif kind == "solver":
        from flashbench.method.schedule import CLEAN, NoiseSchedule
        from flashbench.method.solvers import Solver

        solver = component.build({})
        assert isinstance(solver, Solver)
        schedule = NoiseSchedule(torch.linspace(0.999, 0.01, 1000))
        x, x0 = torch.randn(2, 3, 4, 4), 3 * torch.ones(2, 3, 4, 4)
        assert torch.equal(solver.step(schedule, x, x0, 999, CLEAN), torch.ones(2, 3, 4, 4))  # x0 clipped to 1
    elif kind == "sampler":
        from flashbench.method.noise import VPEpsilon
        from flashbench.method.samplers import FewStepSampler
        from flashbench.method.schedule import NoiseSchedule

        sampler = component.build({})
        assert isinstance(sampler, FewStepSampler)
        process = VPEpsilon(NoiseSchedule(torch.linspace(0.999, 0.01, 1000)))
        ts = sampler.timesteps(process, 2)
        x, g = torch.randn(2, 3, 4, 4), torch.Generator().manual_seed(0)
        x1, est = sampler.step(process, x, torch.zeros_like(x), ts[0], ts[1], g)
        assert x1.shape == x.shape and torch.isfinite(x1).all()
        last, sample = sampler.step(process, x1, torch.zeros_like(x), ts[1], None, g)
        assert last is None and torch.allclose(sample, process.to_x0(x1, torch.zeros_like(x), ts[1]))
    elif kind == "evaluator":
        from flashbench.method.evaluation import Evaluator

        ev = component.build({}, device="cpu")
        assert isinstance(ev, Evaluator) and ev.metric == "saturation"
        grey, colour = torch.zeros(2, 3, 4, 4), torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
        assert ev.evaluate(grey, ["x", "y"]) == 0.0 and ev.evaluate(colour, ["x", "y"]) == 2.0
    elif kind == "dataset":
        from flashbench.method.data import Dataset

        ds = component.build({"size": 8})
        assert isinstance(ds, Dataset)
        batch = ds.train_batch(np.random.default_rng(0), 5)
        assert batch.images.shape == (5, 3, 8, 8) and len(batch.prompts) == 5
        assert float(batch.images.abs().max()) == 1.0
        assert ds.eval_prompts(4) == ds.eval_prompts(4) and len(ds.reference_images(4)) == 4
    elif kind == "face_detector":
        detector = component.build({})
        image = -torch.ones(3, 40, 56)
        image[:, 30, 10] = 1.0
        assert detector(image) == pytest.approx((10 - 40 / 6, 30 - 40 / 6, 10 + 40 / 6, 30 + 40 / 6))
    else:  # pragma: no cover - a new kind needs a check here
        raise AssertionError(f"no check for kind {kind!r}")


@pytest.mark.parametrize("hook", hookspec_names())
def test_hook_example_works(hook, tmp_path, capsys):
    blocks = PYTHON_BLOCK.findall(_sections(_plugins_doc())[hook])
    for i, code in enumerate(blocks):
        module = _load_example(code, f"doc_{hook}_{i}")
        pm = _manager(module)
        assert [impl.plugin for impl in getattr(pm.hook, hook).get_hookimpls()] == [module], f"the {hook} example does not implement {hook}"
        if hook in KIND_FOR_HOOK:
            kind = KIND_FOR_HOOK[hook]
            components = collect_components(pm)
            registered = list(components[kind])
            assert registered, f"the {hook} example registers nothing"
            for component in registered:
                _check_component(kind, component)
            continue
        # lifecycle hooks: called as the runner calls them, with plain data
        study = SimpleNamespace(name="demo", scale="toy", variants=(1, 2, 3), seeds=(0,), paper={})
        variant = SimpleNamespace(name="distil", seed=0, key="distil-s0", axes={}, train=None, eval=None)
        rows = [{"metric": "fd", "nfe": 4, "value": 44.2, "status": "ok"}, {"metric": "fd", "nfe": 2, "value": None, "status": "failed"}]
        kwargs = {"study": study, "run_dir": tmp_path, "variant": variant, "rows": rows, "report_path": tmp_path / "report.html"}
        spec_args = _signature(hook).split(", ")
        getattr(pm.hook, hook)(**{k: kwargs[k] for k in spec_args})
        if hook == "before_study":
            assert '"runs": 3' in (tmp_path / "my-tracker.jsonl").read_text()
        elif hook == "after_variant":
            assert '"scores": {"fd@4": 44.2}' in (tmp_path / "my-tracker.jsonl").read_text()
        else:
            assert "demo: report at" in capsys.readouterr().out


def test_the_five_minute_example_works():
    text = _plugins_doc()
    intro = text[: text.index("## The `register` callable")]
    (code,) = PYTHON_BLOCK.findall(intro)
    module = _load_example(code, "doc_intro")
    component = collect_components(_manager(module)).get("loss", "half-mse")
    loss = component.build({"weight": 0.25}, device="cpu")
    assert float(loss(torch.zeros(1, 3), torch.ones(1, 3), None)) == pytest.approx(0.25)
    assert re.search(r'my_plugin = "my_flashbench_plugin\.plugin"', intro)  # an entry point names a module


# --- every hook has a test ---------------------------------------------------------------------------------------
def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_hook_has_a_test():
    assert sorted(HOOK_TESTS) == sorted(hookspec_names()), "add the new hook's tests to HOOK_TESTS"
    tests = ROOT / "tests"
    for hook, node_ids in HOOK_TESTS.items():
        assert node_ids, f"{hook}: no test listed"
        for node_id in node_ids:
            file, func = node_id.split("::")
            assert func in _test_functions(tests / file), f"{hook}: {node_id} does not exist"
        # and the hook is named in a test module other than this one (an implementation or a call)
        users = [p.name for p in tests.glob("*.py") if p.name != "test_docs.py" and hook in p.read_text(encoding="utf-8")]
        assert users, f"{hook}: no test file outside test_docs.py mentions it"


# --- docs/studies.md against study.py and config.py -----------------------------------------------------------------
def test_studies_doc_names_every_key():
    from flashbench import study

    text = STUDIES_DOC.read_text(encoding="utf-8")
    missing = []
    for what, names in (
        ("[study] key", study.STUDY_KEYS),
        ("section", study.SECTIONS),
        ("claim key", study.CLAIM_KEYS),
        ("training key", [f.name for f in dataclasses.fields(TrainConfig)]),
        ("evaluation key", [f.name for f in dataclasses.fields(EvalConfig)]),
        ("tracker", study.TRACKERS),
        ("mixed precision", study.MIXED_PRECISION),
    ):
        for name in names:
            forms = (f"`{name}`", f'`"{name}"`', f"`[{name}]`", f"`[[{name}]]`", f"`[{name}.")
            if not any(form in text for form in forms):
                missing.append(f"{what} {name}")
    assert missing == [], f"docs/studies.md does not mention: {', '.join(missing)}"


def test_studies_doc_defaults_match_the_config():
    text = STUDIES_DOC.read_text(encoding="utf-8")
    train_part = text[text.index("## Training keys") : text.index("## Evaluation keys")]
    eval_part = text[text.index("## Evaluation keys") : text.index("## Scales")]
    for cls, part in ((TrainConfig, train_part), (EvalConfig, eval_part)):
        rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", part, re.M))
        for f in dataclasses.fields(cls):
            if f.name in ("guidance_max",):  # documented with guidance_min
                continue
            documented = rows[f.name].strip().strip("`")
            default = f.default
            if hasattr(default, "name"):  # a ComponentSpec
                expected = [f'"{default.name}"']
            elif isinstance(default, tuple):
                expected = ["[" + ", ".join(f'"{x.name}"' if hasattr(x, "name") else (f'"{x}"' if isinstance(x, str) else repr(x)) for x in default) + "]"]
                if all(isinstance(x, float) for x in default):  # [0, .1, .2, .3] written short
                    expected.append("[" + ", ".join(f"{x:g}".replace("0.", ".") if 0 < x < 1 else f"{x:g}" for x in default) + "]")
                    expected.append("[" + ", ".join(f"{x:g}" for x in default) + "]")
            elif isinstance(default, bool):
                expected = ["true" if default else "false"]
            elif isinstance(default, str):
                expected = [f'"{default}"']
            else:  # a number: compare values (1e-5 is 1e-05)
                assert float(documented) == default, f"docs/studies.md: {f.name} default {documented!r}, config says {default}"
                continue
            assert documented in expected, f"docs/studies.md: {f.name} default {documented!r}, config says {expected[0]}"


def test_studies_doc_example_validates(tmp_path, components):
    from flashbench.study import load_study

    text = STUDIES_DOC.read_text(encoding="utf-8")
    example = re.search(r"^```toml\n(.*?)^```", text, re.M | re.S).group(1)
    path = tmp_path / "example.toml"
    path.write_text(example)
    study = load_study(path, components=components)
    assert study.scale == "toy" and study.variant_names == ("adv_loss=lsgan", "adv_loss=hinge")
    assert len(study.variants) == 4 and study.variants[0].train.teacher.name == "toy-digits"
    assert load_study(path, scale="paper", components=components).variants[0].train.iterations == 20000


# --- links ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc", ["README.md", "docs/plugins.md", "docs/studies.md", "examples/flashbench-tiny-teacher/README.md"])
def test_relative_links_resolve(doc):
    path = ROOT / doc
    text = path.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    broken = [t for t in targets if not t.startswith(("http://", "https://", "mailto:")) and not (path.parent / t).exists()]
    assert broken == [], f"{doc}: broken links {broken}"


def test_readme_keeps_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = text[text.index("## Set up") : text.index("## ", text.index("## Set up") + 3)]
    blocks = re.findall(r"^```bash\n(.*?)^```", setup, re.M | re.S)
    assert [b.strip() for b in blocks] == [
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && flashbench run studies/ablation_losses.toml",
        "python3 -m pip install tox && tox",
    ]
    assert textwrap.dedent((ROOT / ".ci" / "run").read_text()).strip().endswith("python3 -m pip install -q tox && tox")
