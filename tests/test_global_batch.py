"""The global batch (issue 13, item 6): ``batch_size`` is per process, so a recipe states its global batch
(processes x batch_size, Appendix A), ``flashbench run`` warns in one line when the running one differs,
and the provenance, the student rows and the report record the one a run trained with."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from flashbench.config import TrainConfig
from flashbench.study import load_study, study_scales

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"

# Appendix A (DESIGN.md's recipe table): batch per GPU x GPUs.
PAPER_GLOBAL_BATCH = {
    **{p.stem: 8 for p in STUDIES.glob("ablation_*.toml")},  # SD1.5: 4 x 2
    "table1_sd15_coco2017": 8,
    "table2_sd15_coco2014": 8,
    "table3_sdxl": 8,
    "recipe_sdxl": 8,  # SDXL: 2 x 4
    "table4_pixart": 8,
    "recipe_pixart": 8,  # Pixart-alpha: 2 x 4
    "recipe_inpaint": 8,
    "recipe_superres": 8,  # 4 x 2
    "recipe_faceswap": 16,  # 8 x 2
}


def _study(tmp_path, base: str = "", toy: str = "", variants: str = "") -> Path:
    path = tmp_path / "gb.toml"
    path.write_text(f"""
[study]
name = "gb"
default_scale = "toy"
[base]
iterations = 8
phase_length = 2
num_timesteps = 8
batch_size = 4
{base}
[scale.toy]
teacher = "toy-digits"
dataset = "toy-digits"
{toy}
[scale.toy.eval]
prompts = "toy-digits"
evaluators = ["toy-fd"]
num_samples = 8
{variants}
""")
    return path


# --- the study key ------------------------------------------------------------------------------------


def test_global_batch_is_a_training_key_not_stated_by_default(tmp_path, components):
    assert TrainConfig().global_batch == 0
    study = load_study(_study(tmp_path, base="global_batch = 8"), scale="toy", components=components)
    assert {v.train.global_batch for v in study.variants} == {8}


def test_a_negative_global_batch_is_one_line_naming_file_and_key(tmp_path, capsys, components):
    from flashbench.cli import main

    path = _study(tmp_path, toy="global_batch = -2")
    assert main(["validate", str(path), "--scale", "toy"], components=components) == 2
    assert capsys.readouterr().err == f"flashbench: error: {path}: scale.toy.global_batch: must be >= 0, got -2\n"


@pytest.mark.parametrize("name,expected", sorted(PAPER_GLOBAL_BATCH.items()))
def test_paper_scale_recipes_state_the_papers_global_batch(name, expected, components):
    study = load_study(STUDIES / f"{name}.toml", scale="paper", components=components)
    trained = [v.train for v in study.variants if not v.train.evaluate_only]
    assert trained and {t.global_batch for t in trained} == {expected}
    assert all(expected % t.batch_size == 0 for t in trained)  # a whole number of GPUs


@pytest.mark.parametrize("path", [p for p in sorted(STUDIES.glob("*.toml")) if "toy" in study_scales(p)], ids=lambda p: p.stem)
def test_a_one_process_toy_run_trains_the_global_batch_it_states(path, components):
    """The toy scale states its own global batch: a toy run on one process has no warning to ignore, and
    the paper scale on one process (instead of the paper's GPUs) has one."""
    from flashbench.runner import global_batch_warning

    assert global_batch_warning(load_study(path, scale="toy", components=components), 1) is None
    assert global_batch_warning(load_study(path, scale="paper", components=components), 1).startswith(f"warning: {path}: global batch")


# --- the warning ----------------------------------------------------------------------------------------


def test_the_warning_names_the_file_the_running_and_the_stated_global_batch(tmp_path, components):
    from flashbench.runner import global_batch_warning

    study = load_study(_study(tmp_path, base="global_batch = 8"), scale="toy", components=components)
    assert global_batch_warning(study, 2) is None  # 2 x 4 = 8
    line = global_batch_warning(study, 1)
    assert line.startswith(f"warning: {study.path}: global batch 4 (1 process x 4) differs from the recipe's global_batch = 8; ")
    assert "accelerate launch --num_processes 2" in line and "batch_size = 8" in line and "\n" not in line
    assert global_batch_warning(study, 4).startswith(f"warning: {study.path}: global batch 16 (4 processes x 4) differs")
    # not stated: nothing to compare with
    assert global_batch_warning(load_study(_study(tmp_path), scale="toy", components=components), 3) is None


def test_the_warning_names_the_variants_when_only_some_differ(tmp_path, components):
    from flashbench.runner import global_batch_warning

    variants = '[[variants]]\nname = "small"\n[[variants]]\nname = "big"\nbatch_size = 8\n'
    study = load_study(_study(tmp_path, base="global_batch = 8", variants=variants), scale="toy", components=components)
    line = global_batch_warning(study, 1)
    assert "global batch 4 (1 process x 4)" in line and "(variant small: 1 of 2)" in line


def test_flashbench_run_prints_exactly_one_warning_line(tmp_path, capsys, monkeypatch, components):
    """Through the CLI and run_study, with the runner stubbed out (nothing trains)."""
    import flashbench.report
    import flashbench.runner
    from flashbench.cli import main

    class Runner:
        def __init__(self, study, store, components, **kwargs):
            pass

        def run(self):
            return iter(())

    monkeypatch.setattr(flashbench.runner, "StudyRunner", Runner)
    monkeypatch.setattr(flashbench.report, "render_report", lambda run_dir: Path(run_dir) / "report.html")
    path = _study(tmp_path, base="global_batch = 8", toy="seeds = [0, 1]", variants='[[variants]]\nname = "a"\n[[variants]]\nname = "b"\n')
    assert main(["run", str(path), "--output", str(tmp_path / "run")], components=components) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [line for line in err.splitlines() if "global batch" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path}: global batch 4 (1 process x 4) differs from the recipe's global_batch = 8;")
    assert "global_batch = 8" in (tmp_path / "run" / "run.log").read_text()

    path.write_text(path.read_text().replace("global_batch = 8", "global_batch = 4"))
    assert main(["run", str(path), "--output", str(tmp_path / "run")], components=components) == 0
    assert "warning" not in capsys.readouterr().err


# --- what the run records -------------------------------------------------------------------------------


def test_provenance_records_processes_and_the_global_batch():
    from flashbench.results import collect_provenance

    p = collect_provenance("paper", processes=2, batch_sizes=[4, 4, 2])
    assert p["processes"] == 2 and p["global_batch"] == [4, 8]
    json.dumps(p, allow_nan=False)
    assert collect_provenance("toy")["global_batch"] == []  # nothing trains


def test_the_runner_records_the_global_batch_in_provenance_and_student_rows():
    """The cost columns of a student row and the provenance, as the runner writes them (read from its source:
    the rows are written after a training run, which the end-to-end test checks on the toy world)."""
    from flashbench.results import COST_COLUMNS
    from flashbench.run.training import VariantTraining
    from flashbench.runner import StudyRunner

    assert {"processes", "global_batch"} <= set(COST_COLUMNS)
    import inspect

    source = inspect.getsource(VariantTraining.run)
    assert re.search(r"global_batch=self\.state\.num_processes \* train\.batch_size", source)
    assert "batch_sizes=" in inspect.getsource(StudyRunner.run)


def test_the_report_shows_the_global_batch_in_its_provenance():
    import pandas as pd

    from flashbench.report.notes import _provenance_view

    study = {"scale": "paper", "variants": [{"train": {"global_batch": 8}}, {"train": {"global_batch": 8}}]}
    items = dict(_provenance_view({"processes": 1, "global_batch": [4]}, study, pd.DataFrame())["items"])
    assert items["global batch"] == "4 (1 process x 4); the recipe states 8"
    items = dict(_provenance_view({"processes": 2, "global_batch": [8, 16]}, {}, pd.DataFrame())["items"])
    assert items["global batch"] == "8, 16 (2 processes x 4, 8)"
    # a run from before the global batch was recorded; a hand-edited provenance file
    assert dict(_provenance_view({}, {}, pd.DataFrame())["items"])["global batch"] == "not recorded"
    assert dict(_provenance_view({"processes": "x", "global_batch": 3}, {"variants": [1]}, pd.DataFrame())["items"])["global batch"] == "–"


# --- a neutral field: existing run folders are not re-run ---------------------------------------------------


def _fingerprint_without(cfg, neutral) -> str:
    """The fingerprint as the code computed it before ``global_batch`` and ``student_prediction`` existed (the
    fields absent; ``student_prediction`` at its default, which every earlier run had)."""
    from flashbench.checkpoint import _plain

    assert cfg.student_prediction == "teacher"
    absent = ("global_batch", "student_prediction")
    data = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in (*neutral, *absent)}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_global_batch_changes_neither_the_done_recipe_nor_the_checkpoint_fingerprint(tmp_path, components):
    from flashbench.checkpoint import NEUTRAL_FIELDS, fingerprint
    from flashbench.runner import StudyRunner

    variant = load_study(_study(tmp_path), scale="toy", components=components).variants[0]
    stated = dataclasses.replace(variant, train=dataclasses.replace(variant.train, global_batch=8))
    assert fingerprint(stated.train) == fingerprint(variant.train) == _fingerprint_without(variant.train, NEUTRAL_FIELDS)
    assert StudyRunner.recipe(stated) == StudyRunner.recipe(variant)
    assert StudyRunner.recipe(stated, teacher_only=True) == StudyRunner.recipe(variant, teacher_only=True)
    # ... while the per-process batch does change both
    bigger = dataclasses.replace(variant, train=dataclasses.replace(variant.train, batch_size=8))
    assert fingerprint(bigger.train) != fingerprint(variant.train) and StudyRunner.recipe(bigger) != StudyRunner.recipe(variant)
    # a field added later counts once it leaves the value every earlier run had
    v_read = dataclasses.replace(variant, train=dataclasses.replace(variant.train, student_prediction="v_prediction"))
    assert fingerprint(v_read.train) != fingerprint(variant.train) and StudyRunner.recipe(v_read) != StudyRunner.recipe(variant)


# --- the README's paper-scale examples ------------------------------------------------------------------------


def test_the_readmes_accelerate_examples_train_the_papers_global_batch(components):
    text = (ROOT / "README.md").read_text()
    launches = re.findall(r"accelerate launch [^\n]*--num_processes (\d+) -m flashbench\.cli run (studies/\S+\.toml) --scale paper", text)
    assert launches
    for n, file in launches:
        study = load_study(ROOT / file, scale="paper", components=components)
        assert {int(n) * v.train.batch_size for v in study.variants if not v.train.evaluate_only} == {
            v.train.global_batch for v in study.variants if not v.train.evaluate_only
        }, file  # noqa: E501
