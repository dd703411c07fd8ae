"""Data-parallel training through accelerate (DDP, gloo on CPU): two ranks, each with its own data,
hold identical LoRA weights after several full-method steps, and the weights did move."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_hold_identical_lora_weights(tmp_path):
    from safetensors.torch import load_file

    script = Path(__file__).with_name("_ddp_steps.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(script), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "rank 0 of 2 done" in done.stdout and "rank 1 of 2 done" in done.stdout
    a, b = (load_file(str(tmp_path / f"rank{i}.safetensors")) for i in range(2))
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        assert (a[key] - b[key]).abs().max().item() == 0.0, key  # gradients were all-reduced
    assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 0  # lora_B starts at zero: it trained
