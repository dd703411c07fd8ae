"""Crash-safe resume with real kills of real processes: a study SIGKILLed mid-training and again
mid-evaluation, then run to the end, gives the same result rows (same metrics, bit for bit: the computation
is deterministic on CPU) and the same LoRA files as an uninterrupted run; no variant is lost or counted twice.
A process SIGKILLed while writing a checkpoint leaves a readable one behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _builders import two_variant_study

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ITERATIONS, EVERY = 12, 4


def _env(marks: Path, pause: float) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "RESUME_MARKS": str(marks), "RESUME_PAUSE": str(pause), "FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}


def _start(study: Path, out: Path, marks: Path, pause: float) -> subprocess.Popen:
    cmd = [sys.executable, str(HERE / "_resumable_run.py"), "run", str(study), "--output", str(out)]
    return subprocess.Popen(cmd, env=_env(marks, pause), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-4000:]
    return output


def _wait(proc: subprocess.Popen, ready, what: str, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stdout.read()[-4000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _checkpoint_step(path: Path) -> int:
    from flashbench.checkpoint import read_meta

    try:
        return read_meta(path)["step"] if path.is_file() else 0
    except Exception:
        return 0


def _rows(out: Path) -> dict:
    from flashbench.results import ResultStore

    rows = {}
    for r in ResultStore(out).rows():
        key = (r["variant_key"], r["nfe"], r["steps"], r["metric"])
        assert key not in rows, f"counted twice: {key}"
        rows[key] = (r["status"], r["value"])
    return rows


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return two_variant_study(tmp_path_factory.mktemp("study") / "resume.toml", name="resume", iterations=ITERATIONS, checkpoint_every=EVERY)


def test_killed_twice_then_resumed_equals_uninterrupted(study, tmp_path):
    reference = tmp_path / "reference"
    _finish(_start(study, reference, tmp_path / "marks-ref", 0))

    out, marks = tmp_path / "killed", tmp_path / "marks"
    first = out / "variants" / "distil-s0" / "checkpoint.safetensors"
    # 1) SIGKILL in the middle of the first variant's training, after a checkpoint
    proc = _start(study, out, marks, 0.2)
    _wait(proc, lambda: 0 < _checkpoint_step(first) < ITERATIONS, "a mid-training checkpoint")
    _kill(proc)
    killed_at = _checkpoint_step(first)
    assert 0 < killed_at < ITERATIONS
    assert not (out / "variants" / "distil-s0" / "done.json").exists()

    # 2) run again; SIGKILL while the second variant is being evaluated (its training is over)
    proc = _start(study, out, marks, 0.2)
    _wait(proc, lambda: (marks / "full-s0").exists(), "the evaluation of the second variant")
    _kill(proc)
    assert _checkpoint_step(out / "variants" / "full-s0" / "checkpoint.safetensors") == ITERATIONS
    assert (out / "variants" / "distil-s0" / "done.json").exists()
    assert not (out / "variants" / "full-s0" / "done.json").exists()

    # 3) run to the end
    _finish(_start(study, out, marks, 0))
    log = (out / "run.log").read_text()
    assert f"distil: resuming from the checkpoint at step {killed_at} of {ITERATIONS}" in log
    assert f"full: resuming from the checkpoint at step {ITERATIONS} of {ITERATIONS}" in log  # no training again

    expected, got = _rows(reference), _rows(out)
    # students: 2 variants x 2 NFEs x 2 metrics; the teacher at 4, 2 and 1 CFG steps, and through the student's
    # sampler at the 2 NFEs, x 2 metrics
    assert set(got) == set(expected) and len(got) == 2 * 2 * 2 + 3 * 2 + 2 * 2
    for key, (status, value) in expected.items():
        assert got[key][0] == status == "ok"
        assert got[key][1] == value, (key, got[key][1], value)
    for variant in ("distil-s0", "full-s0"):
        lora = Path("variants") / variant / "lora" / "pytorch_lora_weights.safetensors"
        assert (out / lora).read_bytes() == (reference / lora).read_bytes()


def test_sigkill_during_a_checkpoint_write_leaves_a_readable_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from flashbench.checkpoint import read_meta

    path = tmp_path / "checkpoint.safetensors"
    proc = subprocess.Popen([sys.executable, str(HERE / "_checkpoint_writer.py"), str(path)], env=_env(tmp_path, 0), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "1"  # one complete checkpoint exists
    for _ in range(3):
        proc.stdout.readline()
    time.sleep(0.05)  # most of each loop is spent writing: the kill lands inside a write, or near one
    _kill(proc)
    step = read_meta(path)["step"]
    assert step >= 4
    tensors = load_file(str(path))
    assert all(float(tensors[f"lora.{i}"][0]) == step for i in range(4))  # all parameters from one write
