"""End to end on the embedded world: a shortened ``studies/ablation_losses.toml`` through the real CLI,
the real plugins, the runner, the result store and the report; then resume."""

from __future__ import annotations

import html as html_lib
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from flashbench import hookimpl
from flashbench.cli import main
from flashbench.plugins import collect_components, get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def shortened(tmp_path: Path, name: str = "ablation_losses.toml", **toy) -> Path:
    data = tomllib.loads((ROOT / "studies" / name).read_text())
    toy = {"iterations": 8, "phase_length": 2, "batch_size": 4, "log_every": 4, "seeds": [0], **toy}
    toy.setdefault("global_batch", toy["batch_size"])  # the shortened recipe's own: no global-batch warning
    data["scale"]["toy"].update(toy)
    data["scale"]["toy"]["eval"].update({"num_samples": 48, "batch_size": 48, "teacher_steps": [6], "grid_size": 4})
    path = tmp_path / name
    path.write_text(tomli_w.dumps(data))
    return path


# a verdict in the report: <span class="verdict WORD">word</span> then the claim's text (whatever the words are)
VERDICT = re.compile(r'<span class="verdict ([\w-]+)">([^<]+)</span>\s*([^<]*)<')


def assert_one_verdict_per_claim(report: str, study: Path) -> None:
    """The report holds one verdict element per claim of the study, each followed by that claim's text.
    (The word "reproduced" alone proves nothing: the report's CSS names every verdict class.)"""
    from flashbench.study import load_study

    claims = [c["text"] for c in load_study(study, scale="toy").claims]
    assert claims, f"{study.name} states no claims to check"
    found = VERDICT.findall(report)
    assert sorted(html_lib.unescape(text).strip() for _, _, text in found) == sorted(claims)
    for css, word, _ in found:
        assert word.strip() and css == word.strip().replace(" ", "-"), (css, word)


class Recorder:
    """A lifecycle plugin: records what the runner tells it."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def before_study(self, study, run_dir):
        self.calls.append(("before_study", study.name))

    @hookimpl
    def after_variant(self, study, variant, rows, run_dir):
        self.calls.append(("after_variant", variant.name, len(rows)))

    @hookimpl
    def after_study(self, study, run_dir, report_path):
        self.calls.append(("after_study", Path(report_path).name))


RECORDER = Recorder()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    study = shortened(tmp)
    out = tmp / "run"
    components = collect_components(get_plugin_manager(extra_plugins=[RECORDER]))
    assert main(["run", str(study), "--output", str(out)], components=components) == 0
    return study, out


def test_lifecycle_hooks_and_single_loads(run_dir):
    _, out = run_dir
    names = [c[0] for c in RECORDER.calls]
    assert names == ["before_study"] + ["after_variant"] * 4 + ["after_study"]
    assert all(c[2] == 12 for c in RECORDER.calls[1:5])  # 3 NFEs x 4 metrics per variant
    assert RECORDER.calls[-1] == ("after_study", "report.html")
    log = (out / "run.log").read_text()
    # the teacher, the dataset and each evaluator are loaded once per study, not once per variant
    assert log.count("loading teacher toy-digits") == 1
    assert log.count("loading evaluator toy-fd") == 1


def test_tables_shape_and_finite_metrics(run_dir):
    import pandas as pd

    study, out = run_dir
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    students = [r for r in rows if r["role"] == "student"]
    teachers = [r for r in rows if r["role"] == "teacher"]
    metrics = {"fd", "kid", "clip_score", "lpips_to_teacher"}
    # 4 variants x 3 NFEs x 4 metrics; teacher with CFG at 6 (many), 4, 2 and 1 steps, and through the
    # student's sampler at 1, 2 and 4 NFE, x 4 metrics
    assert len(students) == 4 * 3 * 4
    assert {r["metric"] for r in students} == metrics
    assert sorted({r["steps"] for r in teachers if r["variant"] == "teacher"}) == [1, 2, 4, 6]
    assert sorted({r["nfe"] for r in teachers if r["variant"] == "teacher-fewstep"}) == [1, 2, 4]
    assert len(teachers) == 7 * 4
    # every row carries its 95% interval around its value, and its bootstrap replicates on disk
    for r in rows:
        assert r["ci_low"] <= r["value"] <= r["ci_high"] and r["ci_level"] == 0.95, r
        reps = np.load(out / r["bootstrap_file"])
        assert reps.shape == (1000,) and np.isfinite(reps).all()
    assert all(r["status"] == "ok" and math.isfinite(r["value"]) for r in rows)
    assert all(r["n"] == 48 for r in rows)
    assert {r["variant"] for r in students} == {"distil", "distil+dmd", "distil+adv", "distil+adv+dmd"}
    # provenance and cost on every student row
    for r in students:
        assert r["git_hash"] and r["seconds_per_step"] > 0 and r["trainable_params"] > 0
        assert r["teacher_nfe_per_step"] >= 2 and r["student_nfe_per_step"] >= 1
        assert r["processes"] == 1 and r["global_batch"] == 4  # one process x the shortened toy batch
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["processes"] == 1 and provenance["global_batch"] == [4]
    assert "4 (1 process x 4); the recipe states 4" in (out / "report.html").read_text()  # the shortened recipe's 1 x 4
    dmd_rows = [r for r in students if "dmd" in r["variant"]]
    assert all(r["student_nfe_per_step"] > 1 for r in dmd_rows)  # DMD adds a student evaluation
    main_table = pd.read_csv(out / "tables" / "main.csv")
    assert len(main_table) == 4 * 3 + 7
    assert {"fd_ci_low", "fd_ci_high", "kid_ci_low", "clip_score_ci_high"} <= set(main_table.columns)
    panel = pd.read_csv(out / "tables" / "panel.csv")
    assert len(panel) == 4
    assert (out / "tables" / "main.md").exists()
    html = (out / "report.html").read_text()
    assert "Figure 5(a)" in html and "data:image/png;base64" in html
    assert_one_verdict_per_claim(html, study)
    assert (out / "study.json").exists() and (out / "provenance.json").exists() and (out / "run.log").exists()


def test_lora_exported_per_variant(run_dir):
    _, out = run_dir
    for key in ("distil-s0", "distil+adv+dmd-s0"):
        assert (out / "variants" / key / "lora" / "pytorch_lora_weights.safetensors").exists()
        assert (out / "variants" / key / "grid_nfe4.png").exists()


def test_rerun_skips_done_variants(run_dir, capsys):
    study, out = run_dir
    before = (out / "results.jsonl").read_text()
    assert main(["run", str(study), "--output", str(out)]) == 0
    assert (out / "results.jsonl").read_text() == before
    assert "already done" in (out / "run.log").read_text()


def test_report_rerenders_from_stored_results(run_dir):
    _, out = run_dir
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").exists()


@pytest.mark.parametrize("name", ["ablation_gan.toml", "ablation_distil.toml", "ablation_guidance.toml", "ablation_k.toml", "ablation_timesteps.toml"])
def test_every_figure5_panel_runs_on_the_toy_world(tmp_path, name):
    study = shortened(tmp_path, name, iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["scale"]["toy"]["eval"].update({"num_samples": 16, "batch_size": 16, "teacher_steps": [2], "nfe": [2, 4]})
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    assert main(["run", str(study), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["status"] == "ok" and math.isfinite(r["value"]) for r in rows)
    report = (out / "report.html").read_text()
    assert_one_verdict_per_claim(report, study)
    # and the check can fail: without its list of claims the report still says "reproduced" in its CSS
    without_claims = re.sub(r'<ul class="claims">.*?</ul>', "", report, flags=re.S)
    assert "reproduced" in without_claims
    with pytest.raises(AssertionError):
        assert_one_verdict_per_claim(without_claims, study)


class NaNLossPlugin:
    """A third-party-style plugin registering a distillation loss that blows up."""

    @hookimpl
    def register_losses(self, register):
        def build(config, **context):
            import torch

            return lambda student, teacher, decode: (student - teacher).pow(2).mean() * torch.tensor(float("nan"))

        register("nan-mse", build, tags=("distillation",), description="MSE times NaN (tests numerical faults)")


def test_nan_loss_fails_the_variant_and_the_study_goes_on(tmp_path):
    study = shortened(tmp_path, iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["variants"][0]["distil_loss"] = "nan-mse"  # "distil" blows up; the three others must still run
    data["scale"]["toy"]["eval"].update({"num_samples": 16, "batch_size": 16, "teacher_steps": [2], "nfe": [2]})
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    components = collect_components(get_plugin_manager(extra_plugins=[NaNLossPlugin()]))
    assert main(["run", str(study), "--output", str(out)], components=components) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["variant"] == "distil" and failed[0]["step"] == 0
    assert "non-finite distil loss" in failed[0]["reason"]
    ok_variants = {r["variant"] for r in rows if r["status"] == "ok" and r["role"] == "student"}
    assert ok_variants == {"distil+dmd", "distil+adv", "distil+adv+dmd"}
    assert "non-finite distil loss" in (out / "report.html").read_text()


class MissingWeightsPlugin:
    """An evaluator whose weights are not on the machine."""

    @hookimpl
    def register_evaluators(self, register):
        def build(config, **context):
            from flashbench.errors import MissingWeightsError

            raise MissingWeightsError("evaluator weights big-net.pt are missing: put them in $BIG_NET_DIR")

        register("needs-weights", build, description="fails: its weights are not here")


def test_missing_weights_fail_before_any_training(tmp_path, capsys):
    study = shortened(tmp_path, iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["scale"]["toy"]["eval"]["evaluators"] = ["toy-fd", "needs-weights"]
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    components = collect_components(get_plugin_manager(extra_plugins=[MissingWeightsPlugin()]))
    assert main(["run", str(study), "--output", str(out)], components=components) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["flashbench: error: evaluator weights big-net.pt are missing: put them in $BIG_NET_DIR"]
    assert not (out / "results.jsonl").exists() and not (out / "variants").exists()


class NoCheckpointingTeacherPlugin:
    """The toy teacher with a denoiser that cannot checkpoint its activations (as a non-diffusers one)."""

    @hookimpl
    def register_teachers(self, register):
        from flashbench_plugins.teachers import toy_digits

        def build(config, **context):
            teacher = toy_digits.build(config, **context)
            teacher.denoiser._supports_gradient_checkpointing = False  # this instance only
            return teacher

        register("toy-no-checkpointing", build, config=toy_digits.ToyDigitsTeacherConfig, description="cannot checkpoint")


def test_gradient_checkpointing_a_denoiser_that_cannot_fails_before_training(tmp_path, capsys):
    study = shortened(tmp_path, iterations=4, phase_length=1, teacher="toy-no-checkpointing", gradient_checkpointing=True)
    out = tmp_path / "run"
    components = collect_components(get_plugin_manager(extra_plugins=[NoCheckpointingTeacherPlugin()]))
    assert main(["run", str(study), "--output", str(out)], components=components) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gradient_checkpointing" in err[0] and "cannot checkpoint" in err[0] and "allowed: false" in err[0]
    assert str(study) in err[0]
    assert not (out / "results.jsonl").exists() and not (out / "variants").exists()


def test_table1_layout_on_the_toy_world(tmp_path):
    """Table 1 end to end: teacher rows at 50 and 16 NFE, the Flash student at 2 and 4 NFE, the paper's
    numbers beside them."""
    import pandas as pd

    study = shortened(tmp_path, "table1_sd15_coco2017.toml", iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["scale"]["toy"]["eval"].update({"num_samples": 16, "batch_size": 16, "teacher_steps": [25, 8]})
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    assert main(["run", str(study), "--output", str(out)]) == 0
    table = pd.read_csv(out / "tables" / "main.csv")
    teacher = table[table["role"] == "teacher"]
    student = table[table["role"] == "student"]
    assert {50, 16} <= set(teacher["nfe"]) and sorted(student["nfe"]) == [2, 4]
    assert {"fd", "clip_score"} <= set(table.columns)
    assert table[["fd", "clip_score"]].notna().all().all()
    html = (out / "report.html").read_text()
    assert "22.6" in html and "InstaFlow" in html  # the paper's values beside the measured ones


def test_evaluation_only_baseline_loads_a_published_lora(run_dir, tmp_path):
    """A baseline row from a published LoRA (here: the one the e2e run exported), no training."""
    _, first = run_dir
    lora = first / "variants" / "distil-s0" / "lora"
    study = shortened(tmp_path, "table1_sd15_coco2017.toml", iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["scale"]["toy"]["eval"].update({"num_samples": 16, "batch_size": 16, "teacher_steps": [4]})
    data["scale"]["toy"]["variants"] = [{"name": "published", "evaluate_only": True, "pretrained_lora": str(lora)}]
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    assert main(["run", str(study), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    published = [r for r in rows if r["variant"] == "published"]
    assert published and all(r["iterations"] == 0 and r["trainable_params"] > 0 for r in published)
    assert all(math.isfinite(r["value"]) for r in published)


def test_missing_published_lora_fails_before_training(tmp_path, capsys):
    study = shortened(tmp_path, "table1_sd15_coco2017.toml", iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["scale"]["toy"]["variants"] = [{"name": "lcm-lora", "evaluate_only": True, "pretrained_lora": "nobody-here/no-such-lora"}]
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    assert main(["run", str(study), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nobody-here/no-such-lora" in err[0]
    assert not (out / "results.jsonl").exists()


def test_missing_coco_folder_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FLASHBENCH_COCO_DIR", raising=False)
    study = shortened(tmp_path, "table1_sd15_coco2017.toml", iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["scale"]["toy"]["eval"]["prompts"] = {"name": "coco2017-val", "root": str(tmp_path / "no-coco-here")}
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    assert main(["run", str(study), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-coco-here" in err[0]
    assert not (out / "results.jsonl").exists()


def test_two_shards_at_once_share_one_result_store(tmp_path):
    """``--shard 0/2`` and ``--shard 1/2`` as two concurrent processes (as a SLURM array would run them)."""
    import os
    import subprocess
    import sys

    study = shortened(tmp_path, iterations=4, phase_length=1)
    data = tomllib.loads(study.read_text())
    data["scale"]["toy"]["eval"].update({"num_samples": 16, "batch_size": 16, "teacher_steps": [2], "nfe": [2]})
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import sys; from flashbench.cli import main; raise SystemExit(main(sys.argv[1:]))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, "run", str(study), "--output", str(out), "--shard", f"{i}/2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    from flashbench.results import ResultStore

    rows = [r for r in ResultStore(out).rows() if r["role"] == "student"]
    per_variant = {}
    for r in rows:
        per_variant.setdefault(r["variant"], []).append(r["metric"])
    assert set(per_variant) == {"distil", "distil+dmd", "distil+adv", "distil+adv+dmd"}
    assert all(sorted(m) == ["clip_score", "fd", "kid", "lpips_to_teacher"] for m in per_variant.values())  # each once
    assert "distil+adv+dmd" in outputs[1] and "distil+adv+dmd" not in outputs[0]  # shard 1 ran variants 1 and 3


def test_bad_shard_is_a_one_line_error(tmp_path, capsys):
    study = shortened(tmp_path)
    assert main(["run", str(study), "--output", str(tmp_path / "run"), "--shard", "2/2"]) == 2
    assert capsys.readouterr().err.strip() == "flashbench: error: --shard: need 0 <= I < N, got '2/2'"
    assert not (tmp_path / "run").exists()


def test_training_metrics_go_to_tensorboard(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out = run_dir
    events = sorted((out / "variants").glob("*/logs/*/events.out.tfevents.*"))
    assert len(events) == 4  # one per variant
    acc = EventAccumulator(str(events[-1].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/distil", "loss/total"} <= tags
    assert [e.step for e in acc.Scalars("loss/total")] == [0, 4, 7]  # log_every = 4, and the last step


def test_an_edited_variant_runs_again_and_continues_its_training(run_dir, tmp_path):
    """The study file changed one variant's recipe since the run: that variant runs again (its training
    continues from its last checkpoint, 8 -> 10 iterations), the others are skipped, and the report counts
    each variant once."""
    import shutil

    from flashbench.results import ResultStore

    study, out = run_dir
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    data = tomllib.loads(study.read_text())
    data["variants"][0]["iterations"] = 10  # "distil"
    edited = tmp_path / study.name
    edited.write_text(tomli_w.dumps(data))
    assert main(["run", str(edited), "--output", str(copy)]) == 0
    log = (copy / "run.log").read_text()
    assert "distil-s0 was done with another recipe" in log
    assert "distil: resuming from the checkpoint at step 8 of 10" in log
    assert [log.count(f"variant {i}/4") for i in (1, 2, 3, 4)] == [2, 1, 1, 1]  # only "distil" ran again
    rows = [r for r in ResultStore(copy).rows() if r["role"] == "student"]
    assert sorted({r["variant"] for r in rows}) == ["distil", "distil+adv", "distil+adv+dmd", "distil+dmd"]
    assert len(rows) == 4 * 12  # 4 variants x 3 NFEs x 4 metrics
    assert {r["iterations"] for r in rows if r["variant"] == "distil"} == {10}


def test_variants_that_differ_only_in_evaluation_share_one_trained_student(tmp_path):
    """A 2 x 2 matrix over a training key and an evaluation key trains two students, not four."""
    study = shortened(tmp_path, iterations=2, phase_length=1)
    data = tomllib.loads(study.read_text())
    del data["variants"], data["paper"]["claims"]
    data["scale"]["toy"]["matrix"] = {"timesteps": ["flash", "uniform"], "eval.num_samples": [8, 16]}
    data["scale"]["toy"]["eval"].update({"nfe": [2], "batch_size": 16, "teacher_steps": [2], "evaluators": ["toy-fd"]})
    data["study"]["primary_nfe"] = 2
    study.write_text(tomli_w.dumps(data))
    out = tmp_path / "run"
    assert main(["run", str(study), "--output", str(out)]) == 0
    log = (out / "run.log").read_text()
    assert log.count(": student {") == 2  # one trainer per training recipe
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    students = [r for r in rows if r["role"] == "student"]
    assert {r["variant"] for r in students} == {f"timesteps={t},eval.num_samples={n}" for t in ("flash", "uniform") for n in (8, 16)}
    shared = [r for r in students if r.get("trained_with")]
    assert {r["variant"] for r in shared} == {"timesteps=flash,eval.num_samples=16", "timesteps=uniform,eval.num_samples=16"}
    assert {r["n"] for r in shared} == {16}
    lora = {r["variant_key"]: (out / "variants" / r["variant_key"] / "lora" / "pytorch_lora_weights.safetensors").read_bytes() for r in students}
    by_recipe = {}
    for r in students:
        by_recipe.setdefault(r["axis.timesteps"], set()).add(lora[r["variant_key"]])
    assert all(len(files) == 1 for files in by_recipe.values()) and len({next(iter(f)) for f in by_recipe.values()}) == 2
