"""GPU-only checks, run by ``tox -e gpu``; skipped cleanly where there is no CUDA."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_bf16_flash_steps_on_cuda():
    import numpy as np

    from flashbench.config import ComponentSpec, TrainConfig
    from flashbench.plugins import collect_components
    from flashbench.training import build_trainer

    c = collect_components()
    teacher = c.get("teacher", "toy-digits").build({}, device="cuda")
    cfg = TrainConfig(
        teacher=ComponentSpec("toy-digits"),
        dataset=ComponentSpec("toy-digits"),
        num_timesteps=8,
        phase_length=1,
        iterations=4,
        batch_size=8,
        learning_rate=1e-3,
        disc_learning_rate=1e-3,
        guidance_min=1.5,
        guidance_max=3.0,
        mixed_precision="bf16",
    )
    trainer = build_trainer(cfg, c, teacher=teacher, seed=0, adapter_name="gpu")  # dpm-solver, mse + lsgan + dmd
    base = {n: p.detach().clone() for n, p in teacher.unet.named_parameters() if "lora_" not in n}
    dataset = c.get("dataset", "toy-digits").build({})
    rng = np.random.default_rng(0)
    for it in range(4):
        stats = trainer.step(dataset.train_batch(rng, 8), it)
        assert all(np.isfinite(v) for v in stats.losses.values())
    assert {"distil", "adv", "dmd", "disc"} <= set(stats.losses)
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in trainer.lora_params)
    for n, p in teacher.unet.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), n  # the teacher's weights never change
    trainer.close()
