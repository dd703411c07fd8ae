"""Progress output fit for batch jobs: a tqdm bar on a terminal; where standard error is a file (SLURM, CI,
``2> file``) a plain line every 5% and at the end, never a carriage-return frame per step."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flashbench.progress import LineProgress, progress_bar

from _builders import two_variant_study  # noqa: E402


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_a_line_every_5_percent_and_at_the_end():
    out = io.StringIO()
    bar = progress_bar(range(1000), desc="distil", stream=out)
    assert isinstance(bar, LineProgress)
    for i in bar:
        bar.set_postfix({"mse": f"{1 / (i + 1):.3g}"})
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert len(lines) == 20, lines
    assert lines[0].startswith("distil:   5% 50/1000 [") and lines[0].endswith("mse=0.02")
    assert lines[-1].startswith("distil: 100% 1000/1000 [") and lines[-1].endswith("mse=0.001")


@pytest.mark.parametrize("total, expected", [(3, 3), (7, 7), (21, 20), (41, 20), (1, 1)])
def test_short_and_odd_loops_still_end_with_their_last_step(total, expected):
    out = io.StringIO()
    for _ in progress_bar(range(total), desc="x", stream=out):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == expected, lines
    assert lines[-1].startswith(f"x: 100% {total}/{total} ")


def test_unknown_length_prints_one_line_at_the_end():
    out = io.StringIO()
    assert list(progress_bar((i for i in range(5)), desc="gen", stream=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("gen: 5 [")


def test_disabled_writes_nothing(capsys):
    assert list(progress_bar(range(10), desc="x", disable=True)) == list(range(10))
    assert capsys.readouterr().err == ""


def test_a_terminal_still_gets_tqdm():
    from tqdm.auto import tqdm

    out = _Terminal()
    bar = progress_bar(range(5), desc="distil", stream=out)
    assert isinstance(bar, tqdm)
    for _ in bar:
        bar.set_postfix({"mse": "0.1"})
    assert "\r" in out.getvalue()  # tqdm's redrawn frames


def test_the_default_stream_is_standard_error_at_call_time(capsys):
    for _ in progress_bar(range(4), desc="late"):
        pass
    err = capsys.readouterr().err
    assert "late: 100% 4/4" in err and "\r" not in err


@pytest.mark.usefixtures("one_thread")
def test_the_training_loop_writes_plain_lines_when_stderr_is_not_a_terminal(components, capsys):
    from flashbench.config import ComponentSpec, TrainConfig
    from flashbench.training import TrainingLoop, build_trainer

    cfg = TrainConfig(
        teacher=ComponentSpec("toy-digits"),
        dataset=ComponentSpec("toy-digits"),
        num_timesteps=4,
        phase_length=10,
        iterations=30,
        batch_size=2,
        adv_loss=ComponentSpec("none"),
        dmd_loss=ComponentSpec("none"),
        log_every=1,
    )
    trainer = build_trainer(cfg, components, seed=0, adapter_name="progress")
    try:
        TrainingLoop(trainer).run(components.get("dataset", "toy-digits").build({}), cfg.iterations, seed=0, progress=True, desc="distil")
    finally:
        trainer.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("distil: ")]
    assert 15 <= len(lines) <= 21, err  # 30 steps: one line per 5% (some steps cross two marks at once)
    assert lines[-1].startswith("distil: 100% 30/30 ") and "distil=" in lines[-1]  # the loss postfix


@pytest.mark.slow
def test_a_study_run_with_stderr_in_a_file_writes_fewer_than_200_progress_lines(tmp_path):
    """The whole CLI in a subprocess, standard error redirected to a file as a SLURM job has it."""
    study = two_variant_study(tmp_path / "study.toml", name="progress", iterations=60, checkpoint_every=0, batch_size=2)
    text = study.read_text().replace("num_samples = 64", "num_samples = 16").replace("nfe = [2, 4]", "nfe = [4]")
    study.write_text(text.replace("teacher_steps = [4]", "teacher_steps = [2]"))
    log = tmp_path / "stderr.log"
    code = "import sys; from flashbench.cli import main; raise SystemExit(main(sys.argv[1:]))"
    with open(log, "wb") as err:
        proc = subprocess.run(
            [sys.executable, "-c", code, "run", str(study), "--output", str(tmp_path / "run")],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=600,
        )
    text = Path(log).read_text(encoding="utf-8", errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    progress = [line for line in text.splitlines() if "%" in line and "/60 [" in line]
    assert progress, text[-3000:]  # the lines are there (2 variants x 60 steps: one per 5%)
    assert len(progress) < 200 and len(text.splitlines()) < 200, len(text.splitlines())
    assert all(line.split(": ")[0] in ("distil", "full") for line in progress), progress[:5]
