"""``flashbench run --jobs N``: worker processes that take a study's tasks, and the run's time by phase."""

from __future__ import annotations

import json
import multiprocessing
import os
import tomllib
from pathlib import Path

import pytest
import tomli_w
import torch

from flashbench import jobs
from flashbench.cli import main
from flashbench.errors import UserError
from flashbench.runner import PHASES, phase_seconds, time_breakdown

ROOT = Path(__file__).resolve().parent.parent


# --- choosing the number of workers ------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [(None, None), ("auto", None), ("", None), ("1", 1), (" 3 ", 3)])
def test_parse_jobs(text, expected):
    assert jobs.parse_jobs(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_parse_jobs_rejects_with_one_line(text):
    with pytest.raises(UserError, match=r"--jobs: expected a positive integer or 'auto'"):
        jobs.parse_jobs(text)


def test_resolve_jobs(monkeypatch):
    monkeypatch.setattr(jobs, "available_cores", lambda: 4)
    assert jobs.resolve_jobs(None, tasks=10, cuda=False, distributed=False) == 4  # auto on a CPU: a worker per core
    assert jobs.resolve_jobs(None, tasks=3, cuda=False, distributed=False) == 3  # never more than the tasks
    assert jobs.resolve_jobs(None, tasks=10, cuda=True, distributed=False) == 1  # auto on a GPU: one process
    assert jobs.resolve_jobs(2, tasks=10, cuda=True, distributed=False) == 2  # asked for: granted
    assert jobs.resolve_jobs(4, tasks=10, cuda=False, distributed=True) == 1  # accelerate launch splits batches already


def test_jobs_with_shard_is_one_clear_error(tmp_path, capsys):
    assert main(["run", str(ROOT / "studies" / "ablation_losses.toml"), "--shard", "0/2", "--jobs", "2", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--jobs 2 with --shard 0/2" in err[0]
    assert not (tmp_path / "out").exists()


def _take(args):
    folder, task = args
    return jobs.Claims(Path(folder)).take(task)


def test_a_task_is_taken_by_exactly_one_process(tmp_path):
    claims = jobs.Claims(tmp_path / "claims")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        won = pool.map(_take, [(str(claims.folder), "distil+adv-s0")] * 16)
    assert sum(won) == 1
    assert claims.taken("distil+adv-s0") and not claims.taken("distil-s0")
    assert claims.take("distil-s0") and not claims.take("distil-s0")


# --- the time by phase -----------------------------------------------------------------------------------
def test_phase_seconds_counts_each_sampling_and_each_student_once():
    rows = [
        # the teacher at 2 NFE, two metrics from one sampling pass
        {
            "role": "teacher",
            "variant_key": "teacher-s0",
            "variant": "teacher",
            "nfe": 2,
            "steps": 1,
            "metric": "fd",
            "sample_seconds": 10.0,
            "eval_seconds": 1.0,
            "bootstrap_seconds": 0.5,
        },
        {
            "role": "teacher",
            "variant_key": "teacher-s0",
            "variant": "teacher",
            "nfe": 2,
            "steps": 1,
            "metric": "kid",
            "sample_seconds": 10.0,
            "eval_seconds": 2.0,
            "bootstrap_seconds": 0.5,
        },
        # a student at two NFEs
        {
            "role": "student",
            "variant_key": "a-s0",
            "variant": "a",
            "nfe": 1,
            "steps": 1,
            "metric": "fd",
            "sample_seconds": 3.0,
            "eval_seconds": 1.0,
            "bootstrap_seconds": 0.25,
            "train_seconds": 100.0,
        },
        {
            "role": "student",
            "variant_key": "a-s0",
            "variant": "a",
            "nfe": 2,
            "steps": 2,
            "metric": "fd",
            "sample_seconds": 4.0,
            "eval_seconds": 1.0,
            "bootstrap_seconds": 0.25,
            "train_seconds": 100.0,
        },
        # a sibling evaluated with a's student: its training is not counted again
        {
            "role": "student",
            "variant_key": "b-s0",
            "variant": "b",
            "nfe": 1,
            "steps": 1,
            "metric": "fd",
            "sample_seconds": 3.0,
            "eval_seconds": 1.0,
            "train_seconds": 100.0,
            "trained_with": "a-s0",
        },
        # a row from before eval_seconds existed, and a failed row with no timings
        {"role": "student", "variant_key": "c-s0", "variant": "c", "nfe": 1, "steps": 1, "metric": "fd", "sample_seconds": 5.0, "train_seconds": 50.0},
        {"role": "student", "variant_key": "d-s0", "variant": "d", "nfe": None, "steps": None, "metric": "distil", "status": "failed", "train_seconds": None},
    ]
    got = phase_seconds(rows)
    assert list(got) == list(PHASES)
    assert got == {"teacher baselines": 13.0, "training": 150.0, "student sampling": 15.0, "evaluation": 3.0, "bootstrap": 1.5}
    line = time_breakdown(rows, wall_seconds=120, workers=2)
    assert line.startswith("time: 2.0 min wall with 2 worker processes; ") and "training 2.5 min (82%)" in line


# --- end to end: the same rows with one worker or two ----------------------------------------------------
def _tiny_study(tmp_path: Path) -> Path:
    data = tomllib.loads((ROOT / "studies" / "ablation_losses.toml").read_text())
    toy = data["scale"]["toy"]
    toy.update({"iterations": 4, "phase_length": 1, "batch_size": 4, "global_batch": 4, "log_every": 2, "seeds": [0, 1]})
    toy["eval"].update({"num_samples": 24, "batch_size": 24, "teacher_steps": [3], "grid_size": 4, "nfe": [1, 2], "evaluators": ["toy-fd", "toy-lpips"]})
    data["variants"] = data["variants"][:2]
    data["paper"]["claims"] = [c for c in data["paper"]["claims"] if {c["variant"], c["than"]} <= {"distil", "distil+dmd"}]
    path = tmp_path / "tiny.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _rows(run: Path) -> dict:
    out = {}
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[(r["variant_key"], r["role"], r["nfe"], r["steps"], r["metric"])] = (r["value"], r.get("ci_low"), r.get("ci_high"))
    return out


@pytest.mark.slow
def test_two_workers_write_the_rows_one_process_writes(tmp_path, monkeypatch, capsys):
    study = _tiny_study(tmp_path)
    monkeypatch.setattr(jobs, "available_cores", lambda: 2)  # one thread per worker, as in the one-process run
    monkeypatch.delenv(jobs.PROGRESS_ENV, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(study), "--jobs", "1", "--output", str(tmp_path / "one")]) == 0
        assert main(["run", str(study), "--jobs", "2", "--output", str(tmp_path / "two")]) == 0
        # the parent's settings for its workers do not outlive the run (a later tqdm bar in this process stayed lines)
        assert jobs.PROGRESS_ENV not in os.environ and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "2 worker processes (1 thread each)" in out
    assert out.count("time: ") == 2 and "with 2 worker processes" in out
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    # per seed: 2 students x 2 NFE x 2 metrics; the CFG teacher at 3, 2 and 1 steps; the few-step teacher at 1 and 2 NFE
    assert len(one) == 2 * (2 * 2 * 2 + 3 * 2 + 2 * 2)
    assert one == two  # bit for bit: a task's rows do not depend on the worker that ran it
    log = (tmp_path / "two" / "run.log").read_text()
    pids = {line.split("[pid ")[1].split("]")[0] for line in log.splitlines() if "[pid " in line}
    assert len(pids) == 2, "the run's log should hold the lines of two processes"
    assert not (tmp_path / "two" / jobs.CLAIMS_FOLDER).exists()  # the claim folder is removed at the end
