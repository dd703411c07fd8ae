"""Mid-variant checkpoints: a training run stopped after a checkpoint and continued by a fresh trainer (new
LoRA, new optimisers, new RNGs: as after a process restart) ends bit-identical to an uninterrupted run;
the file is safetensors with JSON metadata, replaced atomically, and ignored when the recipe changed."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from flashbench.config import ComponentSpec, TrainConfig
from flashbench.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = TrainConfig(
    teacher=ComponentSpec("toy-digits"), dataset=ComponentSpec("toy-digits"), num_timesteps=8, phase_length=2,
    iterations=6, batch_size=2, learning_rate=1e-2, disc_learning_rate=1e-2, guidance_min=1.5, guidance_max=3,
    checkpoint_every=3, trackers=(),
)


@pytest.fixture(scope="module")
def parts(components):
    teacher = components.get("teacher", "toy-digits").build({}, device="cpu")
    return {
        "teacher": teacher,
        "dataset": components.get("dataset", "toy-digits").build({}),
        "conditioning": components.get("conditioning", "text").build({}),
        "solver": components.get("solver", "ddim").build({}),
        "losses": {k: components.get("loss", n).build({}, device="cpu") for k, n in (("distil", "mse"), ("gan", "lsgan"), ("dmd", "dmd"))},
        "components": components,
    }


def _trainer(parts, cfg, name):
    from flashbench.method.trainer import FlashTrainer

    timesteps = parts["components"].get("timesteps", "flash").build({}, num_timesteps=cfg.num_timesteps, phase_length=cfg.phase_length, num_phases=4)
    torch.manual_seed(0)
    return FlashTrainer(parts["teacher"], parts["conditioning"], parts["solver"], timesteps, cfg, **parts["losses"], adapter_name=name, seed=0)


def _state(trainer):
    return [p.detach().clone() for p in trainer.lora_params] + [p.detach().clone() for p in trainer.head.parameters()]


class _Stop(Exception):
    pass


def _run(parts, cfg, name, checkpoint, *, stop_after=None):
    """Train; with ``stop_after`` raise out of the loop after that many steps (a crash)."""
    trainer = _trainer(parts, cfg, name)
    if stop_after is not None:
        step, calls = trainer.step, [0]

        def crashing(batch, it):
            if calls[0] == stop_after:
                raise _Stop
            calls[0] += 1
            return step(batch, it)

        trainer.step = crashing
    try:
        summary = trainer.train(parts["dataset"], cfg.iterations, seed=0, progress=False, checkpoint=checkpoint)
        return _state(trainer), summary
    finally:
        trainer.close()


def test_resumed_training_equals_uninterrupted(parts, tmp_path):
    whole, summary = _run(parts, CFG, "whole", tmp_path / "a" / "checkpoint.safetensors")
    ckpt = tmp_path / "b" / "checkpoint.safetensors"
    with pytest.raises(_Stop):
        _run(parts, CFG, "crash", ckpt, stop_after=4)  # a checkpoint at step 3, then a crash during step 5
    from flashbench.checkpoint import read_meta

    assert read_meta(ckpt)["step"] == 3
    resumed, resumed_summary = _run(parts, CFG, "resume", ckpt)
    assert len(whole) == len(resumed) > 0
    for a, b in zip(whole, resumed):
        assert torch.equal(a, b)
    assert read_meta(ckpt)["step"] == CFG.iterations  # the final checkpoint: a kill while evaluating trains nothing
    assert [r["step"] for r in resumed_summary.history] == [r["step"] for r in summary.history]
    assert resumed_summary.teacher_nfe_per_step == pytest.approx(summary.teacher_nfe_per_step)


def test_fresh_run_differs_from_resumed_one(parts, tmp_path):
    """The equality above is not vacuous: restarting at step 0 without the checkpoint's RNG and optimiser
    states, from the checkpoint's LoRA, gives other weights."""
    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(_Stop):
        _run(parts, CFG, "crash", ckpt, stop_after=4)
    whole, _ = _run(parts, CFG, "whole", tmp_path / "other.safetensors")
    meta = json.loads(json.dumps(__import__("flashbench.checkpoint", fromlist=["read_meta"]).read_meta(ckpt)))
    assert meta["step"] == 3 and meta["format"] == 1 and set(meta["optimizers"]) == {"opt", "head_opt"}
    trainer = _trainer(parts, CFG, "partial")
    try:
        trainer.train(parts["dataset"], 3, seed=1, progress=False)  # another data stream
        other = _state(trainer)
    finally:
        trainer.close()
    assert any(not torch.equal(a, b) for a, b in zip(whole, other))


def test_checkpoint_of_another_recipe_is_ignored(parts, tmp_path, caplog):
    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(_Stop):
        _run(parts, CFG, "crash", ckpt, stop_after=4)
    changed = dataclasses.replace(CFG, learning_rate=5e-3)
    trainer = _trainer(parts, changed, "changed")
    try:
        import numpy as np

        assert trainer.load_checkpoint(ckpt, np.random.default_rng(0)) is None
    finally:
        trainer.close()
    assert "another configuration" in caplog.text


def test_damaged_checkpoint_is_a_one_line_error(parts, tmp_path):
    ckpt = tmp_path / "checkpoint.safetensors"
    ckpt.write_bytes(b"\x00" * 64)
    trainer = _trainer(parts, CFG, "damaged")
    try:
        import numpy as np

        with pytest.raises(UserError, match="unreadable checkpoint.*delete it"):
            trainer.load_checkpoint(ckpt, np.random.default_rng(0))
    finally:
        trainer.close()


def test_interrupted_write_keeps_the_previous_checkpoint(parts, tmp_path, monkeypatch):
    from flashbench import results

    ckpt = tmp_path / "checkpoint.safetensors"
    with pytest.raises(_Stop):
        _run(parts, CFG, "crash", ckpt, stop_after=4)
    before = ckpt.read_bytes()

    def killed_mid_write(path, write, *, binary=False):  # the rename never happens
        real(path, lambda f: (write(f), (_ for _ in ()).throw(KeyboardInterrupt)), binary=binary)

    real = results.atomic_write_with
    monkeypatch.setattr("flashbench.checkpoint.atomic_write_with", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        _run(parts, CFG, "again", ckpt)
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]  # no temporary file left


def test_nan_loss_keeps_the_last_good_checkpoint(parts, tmp_path):
    from flashbench.method.trainer import NonFiniteLoss

    ckpt = tmp_path / "checkpoint.safetensors"
    trainer = _trainer(parts, CFG, "nan")
    step = trainer.step

    def poisoned(batch, it):
        if it == 4:
            with torch.no_grad():
                trainer.lora_params[0].fill_(float("nan"))
        return step(batch, it)

    trainer.step = poisoned
    try:
        with pytest.raises(NonFiniteLoss) as info:
            trainer.train(parts["dataset"], CFG.iterations, seed=0, progress=False, checkpoint=ckpt)
    finally:
        trainer.close()
    assert info.value.step == 4
    from flashbench.checkpoint import read_meta

    assert read_meta(ckpt)["step"] == 3
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for k, t in load_file(str(ckpt)).items() if k.startswith("lora."))


def test_variants_in_one_process_may_differ_in_precision(parts):
    """accelerate's process-wide state would refuse the second trainer; the study runner builds one
    trainer per variant, and a study may put mixed_precision on an axis."""
    for precision in ("no", "bf16", "no"):
        trainer = _trainer(parts, dataclasses.replace(CFG, mixed_precision=precision), f"p_{precision}")
        try:
            assert trainer.accelerator.mixed_precision == precision
            trainer.step(parts["dataset"].train_batch(__import__("numpy").random.default_rng(0), 2), 0)
        finally:
            trainer.close()
