"""The ``flashbench`` command: exit codes, one line per problem, no traceback, no torch where not needed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flashbench.cli import main
from flashbench.errors import UserError

DATA = Path(__file__).parent / "data"
LOSSES = DATA / "studies" / "losses.toml"

BAD_STUDY = """\
[study]
name = "Bad Name"
seeds = []

[base]
iteration = 5

[scale.toy]
num_timesteps = 30
adv_loss = "mse"
teacher = "toy-digits"
dataset = "toy-digits"
eval = { prompts = "toy-prompts", evaluators = ["toy-fd"] }
"""


def test_validate_ok(capsys, fake_components):
    # (the fake world has no sd15: its paper scale cannot resolve, so check the toy scale alone)
    assert main(["validate", str(LOSSES), "--scale", "toy"], components=fake_components) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "OK: 4 variants (scale toy)"
    assert err == ""
    for name in ("distil", "distil+adv", "distil+dmd", "all"):
        assert any(line.split()[0] == name for line in out.splitlines()[3:])
    assert "adv_loss" in out.splitlines()[2]  # the settings that differ between variants


def test_validate_json_is_the_resolved_study(capsys, fake_components):
    assert main(["validate", str(LOSSES), "--json", "--scale", "toy"], components=fake_components) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scale"] == "toy" and len(data["variants"]) == 8


def test_validate_bad_file_prints_every_problem(capsys, tmp_path, fake_components):
    path = tmp_path / "bad.toml"
    path.write_text(BAD_STUDY)
    assert main(["validate", str(path), "--scale", "toy"], components=fake_components) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert "Traceback" not in err
    assert all(line.startswith(f"flashbench: error: {path}: ") for line in lines)
    keys = [line[len(f"flashbench: error: {path}: ") :].split(":")[0] for line in lines]
    assert keys == ["study.name", "study.seeds", "base.iteration", "scale.toy.num_timesteps", "scale.toy.adv_loss"]


def test_validate_paper_scale_of_a_toy_only_machine(capsys, fake_components):
    assert main(["validate", str(LOSSES), "--scale", "paper"], components=fake_components) == 2
    assert "unknown teacher 'sd15'" in capsys.readouterr().err
    assert main(["validate", str(LOSSES), "--all-scales"], components=fake_components) == 2
    err = capsys.readouterr().err
    assert err.count("unknown teacher 'sd15'") == 1
    # every scale by default: the paper scale's unknown teacher is found without --scale paper
    assert main(["validate", str(LOSSES)], components=fake_components) == 2
    err = capsys.readouterr().err
    assert err.count("unknown teacher 'sd15'") == 1 and err.count("\n") == len(err.splitlines())


def test_validate_missing_file(capsys, tmp_path, fake_components):
    assert main(["validate", str(tmp_path / "nope.toml")], components=fake_components) == 2
    err = capsys.readouterr().err
    assert err == f"flashbench: error: {tmp_path / 'nope.toml'}: no such study file\n"


def test_plugins_lists_every_component(capsys, fake_components):
    assert main(["plugins"], components=fake_components) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "DISTRIBUTION", "TAGS", "DESCRIPTION"]
    assert len(lines) == 1 + len(fake_components.all())
    assert any(line.split()[:2] == ["loss", "lsgan"] and "adversarial" in line and "fake LSGAN" in line for line in lines)
    # aligned columns: NAME starts at the same offset on every line
    offsets = {line.index(line.split()[1], len(line.split()[0])) for line in lines}
    assert len(offsets) == 1


def test_plugins_json_and_filters(capsys, fake_components):
    assert main(["plugins", "--json", "--kind", "loss"], components=fake_components) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["kind"] for c in data} == {"loss"}
    lsgan = next(c for c in data if c["name"] == "lsgan")
    assert lsgan["tags"] == ["adversarial"] and lsgan["options"] == {"head_channels": 16, "label_smoothing": 0.0}
    assert main(["plugins", "-v", "--kind", "teacher"], components=fake_components) == 0
    assert "    channels = [8, 16]" in capsys.readouterr().out
    assert main(["plugins", "--kind", "losses"], components=fake_components) == 2
    assert "did you mean 'loss'" in capsys.readouterr().err


def test_report_on_missing_dir(capsys, tmp_path):
    assert main(["report", str(tmp_path / "nope")]) == 2
    out, err = capsys.readouterr()
    assert err == f"flashbench: error: {tmp_path / 'nope'}: no such run directory\n"


def test_run_bad_study_writes_nothing(capsys, tmp_path, fake_components, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.toml"
    path.write_text(BAD_STUDY)
    output = tmp_path / "out"
    assert main(["run", str(path), "--scale", "toy", "--output", str(output)], components=fake_components) == 2
    assert len(capsys.readouterr().err.splitlines()) == 5
    assert not output.exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_run_refuses_an_output_it_could_not_write_before_the_runner(capsys, tmp_path, fake_components, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "flashbench.runner", types.SimpleNamespace(run_study=None))  # never reached
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    for output, message in (
        ("file", "--output file: exists and is a file, not a directory"),
        ("file/run", "--output file/run: cannot be created: "),
        ("", "--output: an empty path"),
    ):
        assert main(["run", str(LOSSES), "--output", output], components=fake_components) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"flashbench: error: {message}") and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_run_with_an_empty_shard_is_an_error_not_every_variant(capsys, fake_components):
    assert main(["run", str(LOSSES), "--shard", ""], components=fake_components) == 2
    assert capsys.readouterr().err == "flashbench: error: --shard: expected I/N with integers, e.g. 0/4, got ''\n"


def test_run_calls_the_runner_with_the_resolved_study(capsys, tmp_path, fake_components, monkeypatch):
    import types

    calls = []

    def run_study(study, *, output_dir, components, jobs=None, worker=None):
        calls.append((study, output_dir, components))
        return output_dir / "report.html"

    monkeypatch.setitem(sys.modules, "flashbench.runner", types.SimpleNamespace(run_study=run_study))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(LOSSES)], components=fake_components) == 0
    ((study, output_dir, components),) = calls
    assert study.name == "ablation_losses" and study.scale == "toy"
    assert str(output_dir) == "runs/ablation_losses-toy" and components is fake_components
    assert capsys.readouterr().out.splitlines()[-1] == "report: runs/ablation_losses-toy/report.html"


def test_user_errors_from_the_runner_are_one_line(capsys, fake_components, monkeypatch, tmp_path):
    import types

    def run_study(study, *, output_dir, components, jobs=None, worker=None):
        raise UserError("weights for teacher 'sd15' are not on this machine")

    monkeypatch.setitem(sys.modules, "flashbench.runner", types.SimpleNamespace(run_study=run_study))
    assert main(["run", str(LOSSES), "-o", str(tmp_path / "o")], components=fake_components) == 2
    assert capsys.readouterr().err == "flashbench: error: weights for teacher 'sd15' are not on this machine\n"


def test_usage_errors_and_help(capsys):
    assert main([]) == 2
    assert "usage: flashbench" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert capsys.readouterr().err == (
        "flashbench: error: argument COMMAND: invalid choice: 'frobnicate' (choose from "
        "'run', 'validate', 'plugins', 'report', 'export', 'compare'); see 'flashbench --help'\n"
    )
    assert main(["run"]) == 2  # one line, like every other error: no usage block before it
    assert capsys.readouterr().err == ("flashbench: error: the following arguments are required: FILE; see 'flashbench run --help'\n")
    assert main(["--help"]) == 0
    assert "flashbench validate" in capsys.readouterr().out
    for command in ("run", "validate", "plugins", "report", "export", "compare"):
        assert main([command, "--help"]) == 0
        assert "example" in capsys.readouterr().out


def test_plugin_load_failure_is_one_line(capsys, monkeypatch):
    import flashbench.plugins

    def broken(*args, **kwargs):
        raise ImportError("No module named 'fb_broken'")

    monkeypatch.setattr(flashbench.plugins, "get_plugin_manager", broken)
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flashbench: error: could not load the plugins: ImportError: No module named 'fb_broken'")
    assert len(err.splitlines()) == 1


def _builtins_import_error() -> str:
    """'' when every built-in plugin module imports, else the error (a broken built-in must fail, not skip)."""
    probe = "import flashbench.plugins as p; p.get_plugin_manager(load_entry_points=False)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return "" if result.returncode == 0 else result.stderr.strip().splitlines()[-1]


def test_every_builtin_plugin_module_imports():
    assert _builtins_import_error() == ""


@pytest.mark.parametrize("command", ["plugins", "validate"])
def test_plugins_and_validate_do_not_import_torch(command, tmp_path):
    error = _builtins_import_error()
    assert not error, f"a built-in plugin module does not import: {error}"
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\n')
    argv = ["plugins"] if command == "plugins" else ["validate", str(study)]
    code = textwrap.dedent(f"""
        import sys
        import flashbench.cli
        rc = flashbench.cli.main({argv!r})
        assert "torch" not in sys.modules, "torch was imported"
        sys.exit(0 if rc in (0, 2) else rc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_validate_warns_about_an_axis_that_changes_nothing(tmp_path, capsys):
    """log_every changes neither what a variant trains nor how it is evaluated: one warning line names it."""
    import tomllib

    import tomli_w

    from flashbench.cli import main

    root = Path(__file__).resolve().parent.parent
    data = tomllib.loads((root / "studies" / "ablation_losses.toml").read_text())
    del data["variants"], data["paper"]["claims"]
    data["scale"]["toy"]["matrix"] = {"log_every": [10, 20], "timesteps": ["flash", "uniform"]}
    path = tmp_path / "idle.toml"
    path.write_text(tomli_w.dumps(data))
    assert main(["validate", str(path), "--scale", "toy"]) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("warning:")]
    assert len(warnings) == 1 and "'log_every'" in warnings[0] and str(path) in warnings[0]
