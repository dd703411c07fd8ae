"""Teacher baselines per teacher side: a study whose variants train on several teachers samples each
teacher's baselines, and each student is compared with its own teacher."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from flashbench.cli import main
from flashbench.report.claims import evaluate_claims, own_teacher
from flashbench.runner import baseline_suffixes
from flashbench.study import load_study

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "studies"


def test_one_teacher_side_keeps_the_plain_names():
    study = load_study(STUDIES / "ablation_losses.toml")
    assert list(baseline_suffixes(study.variants).values()) == [""]


def test_each_other_teacher_gets_its_own_baselines():
    study = load_study(STUDIES / "teacher_families.toml")
    assert sorted(baseline_suffixes(study.variants).values()) == ["", "@toy-digits-flow"]
    paper = load_study(STUDIES / "teacher_families.toml", scale="paper")
    assert sorted(baseline_suffixes(paper.variants).values()) == ["", "@sd3"]


def test_validate_names_the_baselines_of_each_teacher(capsys):
    assert main(["validate", str(STUDIES / "teacher_families.toml")]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err
    lines = [line for line in out.out.splitlines() if line.startswith("teacher baselines:")]
    assert len(lines) == 2  # the toy and the paper scale
    assert "'teacher' (toy-digits); 'teacher@toy-digits-flow' (toy-digits-flow)" in lines[0]
    assert main(["validate", str(STUDIES / "ablation_losses.toml")]) == 0
    assert "teacher baselines:" not in capsys.readouterr().out


def _row(variant, role, value, *, seed, baseline=None):
    row = {"variant": variant, "role": role, "metric": "fd", "nfe": 2, "value": value, "seed": seed, "status": "ok", "higher_is_better": False}
    if baseline:
        row["teacher_baseline"] = baseline
    return row


def test_a_claim_against_teacher_compares_with_the_variants_own_teacher():
    # the epsilon teacher is strong (10), the flow teacher weak (100); the flow student (50) beats its own
    # teacher, and would lose to the epsilon teacher
    rows = []
    for seed, jitter in enumerate((0.0, 1.0, -1.0)):
        rows += [
            _row("teacher", "teacher", 10 + jitter, seed=seed),
            _row("teacher-fewstep", "teacher", 12 + jitter, seed=seed),
            _row("teacher@toy-digits-flow", "teacher", 100 + jitter, seed=seed),
            _row("teacher-fewstep@toy-digits-flow", "teacher", 120 + jitter, seed=seed),
            _row("epsilon", "student", 8 + jitter, seed=seed),
            _row("flow", "student", 50 + 2 * jitter, seed=seed, baseline="teacher@toy-digits-flow"),
        ]
    df = pd.DataFrame(rows)
    assert own_teacher(df, "flow") == "teacher@toy-digits-flow" and own_teacher(df, "epsilon") == "teacher"
    study = {
        "primary_nfe": 2,
        "paper": {
            "claims": [
                {"text": "eps", "metric": "fd", "better": "lower", "variant": "epsilon", "than": "teacher", "nfe": 2},
                {"text": "flow", "metric": "fd", "better": "lower", "variant": "flow", "than": "teacher", "nfe": 2},
            ]
        },
    }
    eps, flow = evaluate_claims(study, df)
    assert eps.than == "teacher" and eps.other == pytest.approx(10.0)
    assert flow.than == "teacher@toy-digits-flow" and flow.other == pytest.approx(100.0)
    assert "its own teacher" in flow.sentence
    assert flow.value - flow.other == pytest.approx(-50.0)


def test_rows_without_the_column_compare_with_the_teacher():
    df = pd.DataFrame([_row("teacher", "teacher", 10.0, seed=0), _row("a", "student", 8.0, seed=0)])
    assert own_teacher(df, "a") == "teacher"


@pytest.mark.slow
def test_a_two_teacher_study_samples_both_teachers(tmp_path, capsys):
    data = tomllib.loads((STUDIES / "teacher_families.toml").read_text())
    toy = data["scale"]["toy"]
    toy.update({"iterations": 2, "phase_length": 1, "batch_size": 4, "global_batch": 4, "log_every": 1, "seeds": [0]})
    toy["eval"].update({"num_samples": 16, "batch_size": 16, "teacher_steps": [2], "grid_size": 4, "nfe": [2], "evaluators": ["toy-fd"]})
    study = tmp_path / "two_teachers.toml"
    study.write_text(tomli_w.dumps(data))
    run = tmp_path / "run"
    assert main(["run", str(study), "--jobs", "1", "--output", str(run)]) == 0
    capsys.readouterr()
    variants = run / "variants"
    assert (variants / "teacher-s0" / "done.json").is_file()
    assert (variants / "teacher@toy-digits-flow-s0" / "done.json").is_file()
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    teacher_rows = {(r["variant_key"], r["variant"]) for r in rows if r["role"] == "teacher"}
    assert teacher_rows == {
        ("teacher-s0", "teacher"),
        ("teacher-s0", "teacher-fewstep"),
        ("teacher@toy-digits-flow-s0", "teacher@toy-digits-flow"),
        ("teacher@toy-digits-flow-s0", "teacher-fewstep@toy-digits-flow"),
    }
    students = {r["variant"]: r.get("teacher_baseline") for r in rows if r["role"] == "student"}
    assert students == {"epsilon": None, "flow": "teacher@toy-digits-flow"}
    # the two teachers differ, so their baselines do
    fd = {r["variant"]: r["value"] for r in rows if r["role"] == "teacher" and r["nfe"] == 2 and r["metric"] == "fd"}
    assert fd["teacher"] != fd["teacher@toy-digits-flow"]
