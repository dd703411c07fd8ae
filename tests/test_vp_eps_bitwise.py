"""The VP-epsilon path is unchanged bit for bit by the noise-process abstraction (issue 15).

``tests/data/vp_eps_reference.safetensors`` was recorded with the code *before* the method went through
:mod:`flashbench.method.noise` (commit fa583e8, one CPU thread): three full training steps of the toy teacher
(MSE + LSGAN + DMD, one-iteration phases so every term is active from step 2; DDIM and DPM-Solver++ targets),
the LoRA after them, the student's 1/2/4-NFE samples (fresh and deterministic re-noising), and the
teacher's own 4-step samples. The test reruns the same thing and compares every number exactly
(``torch.equal``, losses as float64 bits). Re-record only when a change *meant* to move these numbers:
``FLASHBENCH_RECORD_VP_EPS=1 OMP_NUM_THREADS=1 python -m pytest tests/test_vp_eps_bitwise.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
import torch

from flashbench.config import ComponentSpec, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

REFERENCE = Path(__file__).parent / "data" / "vp_eps_reference.safetensors"
RECORD = os.environ.get("FLASHBENCH_RECORD_VP_EPS") == "1"

CFG = TrainConfig(
    teacher=ComponentSpec("toy-digits"),
    dataset=ComponentSpec("toy-digits"),
    num_timesteps=8,
    phase_length=1,
    iterations=3,
    batch_size=3,
    learning_rate=1e-2,
    disc_learning_rate=1e-2,
    guidance_min=1.5,
    guidance_max=3,
    lora_rank=4,
    trackers=(),
)


@pytest.fixture(scope="module")
def toy(components):
    return {
        "teacher": components.get("teacher", "toy-digits").build({}, device="cpu"),
        "dataset": components.get("dataset", "toy-digits").build({}),
        "components": components,
    }


def _run(toy, solver_name: str) -> dict[str, torch.Tensor]:
    import numpy as np

    from flashbench.method.sampling import student_sample, teacher_sample
    from flashbench.training import build_trainer

    teacher = toy["teacher"]
    cfg = dataclasses.replace(CFG, solver=ComponentSpec(solver_name))  # mse + lsgan + dmd, flash pi
    trainer = build_trainer(cfg, toy["components"], teacher=teacher, seed=0, adapter_name=f"bitwise-{solver_name}")
    solver = trainer.solver
    out: dict[str, torch.Tensor] = {}
    try:
        rng = np.random.default_rng(0)
        losses = []
        for it in range(3):
            stats = trainer.step(toy["dataset"].train_batch(rng, CFG.batch_size), it)
            losses += [stats.losses.get(k, float("nan")) for k in ("distil", "adv", "dmd", "disc", "total")]
            losses += [stats.teacher_nfe, stats.student_nfe]
        out["losses"] = torch.tensor(losses, dtype=torch.float64)
        # the trained weights by digest (their full values would make a 2 MB file): any changed bit shows
        out["lora_sha256"] = _digest(trainer.lora_params)
        out["head_sha256"] = _digest(trainer.head.parameters())
        prompts = ["a red 3", "a blue 7"]
        cond = teacher.encode_prompts(prompts)
        uncond = teacher.null_condition(prompts)
        noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(5))
        for nfe in (1, 2, 4):
            out[f"student_{nfe}"] = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1))
            out[f"student_det_{nfe}"] = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1), fresh_noise=False)
        out["teacher_baseline_2"] = student_sample(teacher, cond, noise, 2, torch.Generator().manual_seed(1), student=False)
        out["teacher_4"] = teacher_sample(teacher, solver, cond, uncond, noise, 4, 2.5)
    finally:
        trainer.close()
    return {f"{solver_name}/{k}": v.contiguous() for k, v in out.items()}


def _digest(params) -> torch.Tensor:
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().contiguous().cpu().numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality, NaN included (a loss term absent in a step is recorded as NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.float64:
        return torch.equal(a.view(torch.int64), b.view(torch.int64))
    if a.dtype == torch.float32:
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)


@pytest.fixture(scope="module")
def current(toy):
    return {**_run(toy, "ddim"), **_run(toy, "dpm-solver")}


def test_record_or_compare(current):
    from safetensors.torch import load_file, save_file

    if RECORD:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        save_file(current, str(REFERENCE))
        pytest.skip(f"recorded {len(current)} tensors to {REFERENCE}")
    reference = load_file(str(REFERENCE))
    assert sorted(reference) == sorted(current)
    differ = [k for k in reference if not _same_bits(reference[k], current[k])]
    assert not differ, {k: (reference[k] - current[k]).abs().max().item() if reference[k].is_floating_point() else k for k in differ}


def test_the_recording_is_sharp(current):
    """The comparison can fail: the losses are finite and every loss term was active, and the two solvers
    (whose targets differ) left different LoRAs."""
    for solver in ("ddim", "dpm-solver"):
        losses = current[f"{solver}/losses"].reshape(3, 7)
        assert torch.isfinite(losses[1:]).all()
        assert (losses[1:, :4].abs() > 0).all()
    assert not torch.equal(current["ddim/lora_sha256"], current["dpm-solver/lora_sha256"])
    assert not torch.equal(current["ddim/student_4"], current["ddim/student_det_4"])
