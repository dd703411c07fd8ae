"""Data-parallel training through `accelerate launch` (DDP, gloo on CPU): two processes hold identical LoRA
and discriminator weights after several full-method steps, the weights moved, and they equal a single
process's at the same global batch (every process draws the global batch's randomness and trains on its
slice; gradients are averaged), up to float reassociation.

The tolerance is 1% of each tensor's largest value: Adam's first update is lr * g / (|g| + eps), so
gradient entries near eps turn tiny summation-order differences into visible ones. Measured here after one
step: 2 processes vs 1 differ by 0.2%; one process with 1 vs 2 OpenMP threads differs by 1.9%; a run on
other data differs by far more than 1% (checked below, so the comparison can fail)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("_ddp_steps.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from safetensors.torch import load_file

    tmp = tmp_path_factory.mktemp("ddp")
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(SCRIPT),
        str(tmp),
    ]
    out = _run(launch, tmp)
    assert "rank 0 of 2 done" in out and "rank 1 of 2 done" in out
    for seed in ("0", "1"):
        out = _run([sys.executable, str(SCRIPT), str(tmp), seed], tmp)
        assert "rank 0 of 1 done" in out
    names = ("world2_rank0_seed0", "world2_rank1_seed0", "world1_rank0_seed0", "world1_rank0_seed1")
    return {name: load_file(str(tmp / f"{name}.safetensors")) for name in names}


def _worst_relative(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() / (b[k].abs().max().item() + 1e-8) for k in a)


def test_two_processes_hold_identical_weights(weights):
    a, b = weights["world2_rank0_seed0"], weights["world2_rank1_seed0"]
    assert a.keys() == b.keys() and any(k.startswith("head.") for k in a)
    for key in a:
        assert (a[key] - b[key]).abs().max().item() == 0.0, key  # gradients were all-reduced
    assert max(a[k].abs().max().item() for k in a if k.startswith("lora.")) > 0  # lora_B starts at zero: it trained


def test_two_processes_equal_one_process_at_the_same_global_batch(weights):
    assert _worst_relative(weights["world2_rank0_seed0"], weights["world1_rank0_seed0"]) < 1e-2
    assert _worst_relative(weights["world1_rank0_seed1"], weights["world1_rank0_seed0"]) > 0.1  # other data: far apart


def test_a_study_under_accelerate_launch_equals_one_process(tmp_path):
    """`accelerate launch -m flashbench.cli run` with 2 processes (batch 4 each) against a plain run (batch
    8): the main process alone evaluates and writes, every row once, metrics and LoRAs equal within
    tolerance (measured: metrics to 5e-7 relative, LoRAs to 5e-4)."""
    import json

    from safetensors.torch import load_file

    from _builders import two_variant_study

    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "flashbench.cli",
        "run",
        str(two_variant_study(tmp_path / "ddp.toml", batch_size=4)),
        "--output",
        "ddp",
    ]
    out = _run(launch, tmp_path)
    assert out.count("report: ") == 1 and out.count("2 variants x 1 seed") == 1  # one process speaks
    _run([sys.executable, "-m", "flashbench.cli", "run", str(two_variant_study(tmp_path / "one.toml", batch_size=8)), "--output", "one"], tmp_path)

    def rows(run):
        lines = [json.loads(line) for line in (tmp_path / run / "results.jsonl").read_text().splitlines()]
        out = {(r["variant_key"], r["variant"], r["nfe"], r["metric"]): r["value"] for r in lines}
        # 2 variants x 2 NFEs x 2 metrics, the teacher with CFG at 3 step counts and through the student's
        # sampler at the 2 NFEs x 2 metrics: nothing written twice by the second process
        assert len(out) == len(lines) == 18
        return out

    ddp, one = rows("ddp"), rows("one")
    assert ddp.keys() == one.keys()
    for key, value in one.items():
        assert ddp[key] == pytest.approx(value, rel=1e-4), key
    assert (tmp_path / "ddp" / "run.rank1.log").exists() and (tmp_path / "ddp" / "report.html").exists()
    for variant in ("distil-s0", "full-s0"):
        path = Path("variants") / variant / "lora" / "pytorch_lora_weights.safetensors"
        assert _worst_relative(load_file(str(tmp_path / "ddp" / path)), load_file(str(tmp_path / "one" / path))) < 1e-2
