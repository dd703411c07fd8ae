"""The worked third-party plugin of ``examples/flashbench-tiny-teacher``, as a user would meet it: pip-installed
(into a private ``--target`` folder put on ``PYTHONPATH``, so the shared environment is never modified),
listed by ``flashbench plugins`` with its distribution, passing its own contract tests against the installed
copy, and trained by ``flashbench run`` in a study that names it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flashbench-tiny-teacher"
DIST, PACKAGE, TEACHER = "flashbench-tiny-teacher", "flashbench_tiny_teacher", "tiny-unet"


def _copy_source(dest: Path) -> Path:
    """The example's files only (an in-tree build would leave build/ and *.egg-info in the repository)."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
    return dest


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("example_plugin")
    source = _copy_source(root / "src")
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
    assert list(site.glob("flashbench_tiny_teacher-*.dist-info")), "pip wrote no dist-info: entry points would be invisible"
    return site


def _env(site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _flashbench() -> list[str]:
    script = Path(sys.executable).parent / "flashbench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flashbench.cli"]


def test_entry_point_names_a_module():
    import tomllib

    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    target = project["entry-points"]["flashbench"]["tiny_teacher"]
    assert target == "flashbench_tiny_teacher.plugin" and ":" not in target  # a module, not an object in it


def test_flashbench_plugins_lists_it_with_its_distribution(site, tmp_path):
    result = subprocess.run([*_flashbench(), "plugins", "--json"], capture_output=True, text=True, env=_env(site), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    teacher = next(c for c in json.loads(result.stdout) if c["name"] == TEACHER)
    assert teacher["kind"] == "teacher" and teacher["distribution"] == DIST and teacher["plugin"] == "tiny_teacher"
    assert teacher["options"]["sample_size"] == 16 and "third-party example" in teacher["description"]
    table = subprocess.run([*_flashbench(), "plugins", "--kind", "teacher"], capture_output=True, text=True, env=_env(site), cwd=tmp_path, timeout=120).stdout
    assert any(line.split()[:3] == ["teacher", TEACHER, DIST] for line in table.splitlines())


def test_its_contract_tests_pass_against_the_installed_copy(site, tmp_path):
    # the tests and the pytest settings, without the package's source: the import must find the installed one
    checkout = tmp_path / "checkout"
    shutil.copytree(EXAMPLE / "tests", checkout / "tests")
    shutil.copyfile(EXAMPLE / "pyproject.toml", checkout / "pyproject.toml")
    where = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"], capture_output=True, text=True, env=_env(site), cwd=checkout, timeout=60
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], capture_output=True, text=True, env=_env(site), cwd=checkout, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "error" not in summary, summary
    # every test of the published contract ran against the plugin's teacher
    from flashbench.testing import TeacherContract

    contract = [n for n in dir(TeacherContract) if n.startswith("test_")]
    skipped = 2  # the opt-in offline and bf16 checks: the example's weights are built from its config, not downloaded
    assert int(summary.split()[0]) >= len(contract) - skipped + 3, summary
    assert f"{skipped} skipped" in summary, summary


@pytest.mark.slow
def test_a_study_trains_and_reports_with_it(site, tmp_path):
    study = tmp_path / "tiny.toml"
    study.write_text(
        textwrap.dedent("""\
        [study]
        name = "tiny_teacher_demo"
        title = "Flash on a third-party teacher"
        default_scale = "toy"
        primary_nfe = 4
        [scale.toy]
        teacher = { name = "tiny-unet", sample_size = 16, seed = 0 }
        dataset = "toy-digits"
        num_timesteps = 8
        iterations = 3
        phase_length = 1
        batch_size = 4
        learning_rate = 1e-3
        disc_learning_rate = 1e-3
        guidance_min = 1.5
        guidance_max = 3.0
        mixed_precision = "no"
        [scale.toy.eval]
        nfe = [4]
        prompts = "toy-digits"
        evaluators = ["toy-fd", "toy-clip-score"]
        num_samples = 8
        batch_size = 8
        teacher_steps = [2]
        grid_size = 4
    """)
    )
    out = tmp_path / "run"
    result = subprocess.run(
        [*_flashbench(), "run", str(study), "--output", str(out)], capture_output=True, text=True, env=_env(site), cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    students = [r for r in rows if r["role"] == "student"]
    assert {r["metric"] for r in students} == {"fd", "clip_score"} and all(r["status"] == "ok" for r in rows)
    assert (out / "variants" / "base-s0" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert "Flash on a third-party teacher" in (out / "report.html").read_text()
