"""The GPU path at the paper's batch size (marked ``gpu``: ``tox -e gpu`` runs it once, ``tox -e bench`` on a
CUDA machine measures it; skipped without CUDA).

The student's training pass -- forward with grad and backward -- of an SD1.5 UNet built from its published
config (859.5M parameters, random weights, nothing downloaded) with the paper's LoRA (rank 128 on the
attention projections, 25.5M), at the paper's per-GPU batch (4, 64x64 latents): float32, bf16 autocast,
bf16 + gradient checkpointing, bf16 + ``torch.compile``. Each records its peak memory
(``torch.cuda.max_memory_allocated``); :data:`_bench.RATIOS` has bf16 / fp32 time, compile / eager time and
checkpointing / none peak memory.
"""

from __future__ import annotations

import pytest
import torch

from . import _bench
from flashbench.method import acceleration as acc

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.benchmark(group="gpu-student-pass", timer=_bench.TIMER),
]

OPTIONS = {
    "fp32": {"bf16": False, "checkpointing": False, "compile": False},
    "bf16": {"bf16": True, "checkpointing": False, "compile": False},
    "bf16-checkpointing": {"bf16": True, "checkpointing": True, "compile": False},
    "bf16-compile": {"bf16": True, "checkpointing": False, "compile": True},
}


def sd15_student(device, *, block_out_channels=None, rank: int = 128):
    """(unet, lora params): SD1.5's UNet from config with the paper's attention LoRA."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from flashbench_plugins.teachers import _sd_configs as cfg

    config = dict(cfg.SD15_UNET)
    if block_out_channels:
        config["block_out_channels"] = block_out_channels
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).to(device).eval().requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(cfg.FLASH_SD15_LORA_TARGETS)), adapter_name="s")
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return unet, params


def student_pass(module, params, inputs, *, bf16: bool):
    """One forward with grad and its backward, as the student's part of a Flash step."""
    x, t, ehs = inputs
    for p in params:
        p.grad = None
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = module(x, t, encoder_hidden_states=ehs).sample
    out.float().square().mean().backward()


def paper_inputs(device, batch: int = 4, size: int = 64):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn((batch, 4, size, size), generator=g).to(device),
        torch.full((batch,), 749, device=device),
        torch.randn((batch, 77, 768), generator=g).to(device),
    )


@pytest.fixture(scope="module")
def student():
    return sd15_student(_bench.DEVICE)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_sd15_student_pass(benchmark, student, option):
    unet, params = student
    o = OPTIONS[option]
    inputs = paper_inputs(_bench.DEVICE)
    torch._dynamo.reset()
    acc.set_gradient_checkpointing(unet, o["checkpointing"])
    module = acc.maybe_compile(unet, o["compile"])
    try:
        student_pass(module, params, inputs, bf16=o["bf16"])  # warm-up (and the compilation)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        _bench.measure(benchmark, lambda: student_pass(module, params, inputs, bf16=o["bf16"]), rounds=_bench.size(benchmark, 1, 10))
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    finally:
        acc.set_gradient_checkpointing(unet, False)
        torch._dynamo.reset()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    _bench.tag(
        benchmark,
        f"gpu/sd15-student-{option}",
        peak_mb=peak_mb,
        batch=len(inputs[0]),
        latent_size=inputs[0].shape[-1],
        lora_parameters=sum(p.numel() for p in params),
        options=o,
    )
