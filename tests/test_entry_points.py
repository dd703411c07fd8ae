"""A third-party distribution adds a component through the ``flashbench`` entry-point group.

The demo distribution is built and installed with pip, but into a private ``--target`` folder put on
the path for these tests only: the shared virtual environment is never modified, so an interrupted
run leaves nothing behind and tests running beside these ones never see the demo plugin.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DIST = "fb-thirdparty-demo"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "fb-thirdparty-demo"
version = "0.0.1"
description = "A third-party flashbench plugin (flashbench's tests)"

# An entry point names a module: pluggy registers the module and finds its @hookimpl functions.
[project.entry-points.flashbench]
demo = "fb_thirdparty_demo.plugin"

[tool.setuptools]
packages = ["fb_thirdparty_demo"]
"""

PLUGIN = '''\
"""A demo teacher from outside flashbench."""
from dataclasses import dataclass

import flashbench


@dataclass(frozen=True)
class DemoTeacherConfig:
    size: int = 4


def build_demo_teacher(config, **context):
    raise RuntimeError("the demo teacher is never built in tests")


@flashbench.hookimpl
def register_teachers(register):
    register("demo-teacher", build_demo_teacher, config=DemoTeacherConfig,
             description="a demo teacher from a third-party package")
'''


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory) -> Path:
    """The demo distribution, pip-installed into a private site folder."""
    root = tmp_path_factory.mktemp("fb_thirdparty_demo")
    source = root / "src"
    (source / "fb_thirdparty_demo").mkdir(parents=True)
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "fb_thirdparty_demo" / "__init__.py").write_text("")
    (source / "fb_thirdparty_demo" / "plugin.py").write_text(PLUGIN)
    site = root / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(site.glob("fb_thirdparty_demo-*.dist-info"))
    return site


@pytest.fixture
def demo_on_path(demo_site, monkeypatch):
    monkeypatch.syspath_prepend(str(demo_site))
    monkeypatch.delenv("FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    yield demo_site
    for name in [m for m in sys.modules if m == "fb_thirdparty_demo" or m.startswith("fb_thirdparty_demo.")]:
        del sys.modules[name]


def _env(site: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _flashbench() -> list[str]:
    script = Path(sys.executable).parent / "flashbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flashbench.cli"]


def test_entry_point_component_is_collected(demo_on_path, monkeypatch):
    from flashbench.plugins import collect_components, get_plugin_manager

    components = collect_components(get_plugin_manager())
    demo = components.get("teacher", "demo-teacher")
    assert _normalise(demo.distribution) == DIST
    assert demo.plugin == "demo"  # pluggy names an entry-point plugin by its entry point
    assert demo.description == "a demo teacher from a third-party package"
    assert demo.make_config({"size": 8}).size == 8
    assert "toy-digits" in components["teacher"]  # the built-ins are still there

    monkeypatch.setenv("FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "demo-teacher" not in collect_components(get_plugin_manager())["teacher"]


def test_flashbench_plugins_lists_it(demo_site):
    result = subprocess.run([*_flashbench(), "plugins", "--kind", "teacher"], capture_output=True, text=True, env=_env(demo_site), timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    demo = next(row for row in rows if row[:2] == ["teacher", "demo-teacher"])
    assert _normalise(demo[2]) == DIST


def test_a_study_can_name_it(demo_site, tmp_path):
    study = tmp_path / "demo.toml"
    study.write_text(
        textwrap.dedent("""\
        [study]
        name = "demo"
        default_scale = "toy"
        [scale.toy]
        teacher = { name = "demo-teacher", size = 8 }
        dataset = "toy-digits"
        [scale.toy.eval]
        prompts = "toy-digits"
        evaluators = ["toy-fd"]
    """)
    )
    result = subprocess.run([*_flashbench(), "validate", str(study)], capture_output=True, text=True, env=_env(demo_site), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 1 variant (scale toy)")

    study.write_text(study.read_text().replace("size = 8", "sise = 8"))
    result = subprocess.run([*_flashbench(), "validate", str(study)], capture_output=True, text=True, env=_env(demo_site), timeout=120)
    assert result.returncode == 2
    assert result.stderr == (
        f"flashbench: error: {study}: scale.toy.teacher.sise: unknown option 'sise' for teacher 'demo-teacher'; did you mean 'size'? options: size\n"
    )
