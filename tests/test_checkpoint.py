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
    teacher=ComponentSpec("toy-digits"),
    dataset=ComponentSpec("toy-digits"),
    solver=ComponentSpec("ddim"),
    num_timesteps=8,
    phase_length=2,
    iterations=6,
    batch_size=2,
    learning_rate=1e-2,
    disc_learning_rate=1e-2,
    guidance_min=1.5,
    guidance_max=3,
    checkpoint_every=3,
    trackers=(),
)


@pytest.fixture(scope="module")
def parts(components):
    return {
        "teacher": components.get("teacher", "toy-digits").build({}, device="cpu"),
        "dataset": components.get("dataset", "toy-digits").build({}),
        "components": components,
    }


def _trainer(parts, cfg, name):
    from flashbench.training import build_trainer

    return build_trainer(cfg, parts["components"], teacher=parts["teacher"], seed=0, adapter_name=name)  # mse + lsgan + dmd


def _train(trainer, dataset, iterations, **options):
    from flashbench.training import TrainingLoop

    return TrainingLoop(trainer).run(dataset, iterations, progress=False, **options)


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
        summary = _train(trainer, parts["dataset"], cfg.iterations, seed=0, checkpoint=checkpoint)
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
        _train(trainer, parts["dataset"], 3, seed=1)  # another data stream
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

        from flashbench.checkpoint import load_training

        assert load_training(ckpt, trainer, np.random.default_rng(0)) is None
    finally:
        trainer.close()
    assert "another configuration" in caplog.text


def test_damaged_checkpoint_is_a_one_line_error(parts, tmp_path):
    ckpt = tmp_path / "checkpoint.safetensors"
    ckpt.write_bytes(b"\x00" * 64)
    trainer = _trainer(parts, CFG, "damaged")
    try:
        import numpy as np

        from flashbench.checkpoint import load_training

        with pytest.raises(UserError, match="unreadable checkpoint.*delete it"):
            load_training(ckpt, trainer, np.random.default_rng(0))
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
            _train(trainer, parts["dataset"], CFG.iterations, seed=0, checkpoint=ckpt)
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


def test_build_trainer_equals_the_hand_wired_trainer(parts, tmp_path):
    """The factory wires what a study run wired by hand before it (conditioning, solver, timesteps, the global RNG
    seeded, the losses): the training loop gives the same LoRA, head, loss history and checkpoint, bit for bit,
    and a checkpoint of one loads into the other."""
    import numpy as np
    from safetensors.torch import load_file

    from flashbench.checkpoint import load_training
    from flashbench.method.trainer import FlashTrainer
    from flashbench.training import TrainingLoop, TrainSummary

    c, cfg = parts["components"], dataclasses.replace(CFG, iterations=2, checkpoint_every=2, log_every=1)
    timesteps = c.get("timesteps", "flash").build({}, num_timesteps=cfg.num_timesteps, phase_length=cfg.phase_length, num_phases=4)
    conditioning, solver = c.get("conditioning", "text").build({}), c.get("solver", "ddim").build({})
    torch.manual_seed(0)
    by_hand = FlashTrainer(
        parts["teacher"],
        conditioning,
        solver,
        timesteps,
        cfg,
        distil=c.get("loss", "mse").build({}),
        gan=c.get("loss", "lsgan").build({}),
        dmd=c.get("loss", "dmd").build({}),
        adapter_name="by-hand",
        seed=0,
    )
    try:
        old = TrainingLoop(by_hand).run(parts["dataset"], 2, seed=0, progress=False, checkpoint=tmp_path / "hand.safetensors")
        hand = _state(by_hand)
    finally:
        by_hand.close()
    factory = _trainer(parts, cfg, "factory")
    try:
        new = TrainingLoop(factory).run(parts["dataset"], 2, seed=0, progress=False, checkpoint=tmp_path / "factory.safetensors")
        built = _state(factory)
        assert load_training(tmp_path / "hand.safetensors", factory, np.random.default_rng(0))["step"] == 2
        TrainingLoop(factory).save_checkpoint(tmp_path / "again.safetensors", step=2, data_rng=np.random.default_rng(0), counters={})
    finally:
        factory.close()
    assert isinstance(old, TrainSummary) and isinstance(new, TrainSummary)
    assert old.history == new.history and len(new.history) == 2
    assert all(torch.equal(a, b) for a, b in zip(hand, built, strict=True))
    files = [load_file(tmp_path / name) for name in ("hand.safetensors", "factory.safetensors", "again.safetensors")]
    assert files[0].keys() == files[1].keys() == files[2].keys()
    assert all(torch.equal(files[0][k], f[k]) for f in files[1:] for k in files[0])
