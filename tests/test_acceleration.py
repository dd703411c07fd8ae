"""``flashbench.method.acceleration`` on the CPU: each GPU-path option leaves the maths unchanged.

Gradient checkpointing: same outputs and LoRA gradients, fewer saved activations, teacher passes untouched,
and a full Flash step with it reproduces the step without it. SDPA: the classic processors are swapped for
``AttnProcessor2_0`` with the same outputs. ``torch.compile`` (the ``aot_eager`` backend: dynamo's tracing
without code generation): same outputs and LoRA gradients, parameters shared. bf16 autocast: a full step on
the CPU keeps the LoRA in float32.
"""

from __future__ import annotations

import pytest
import torch

from flashbench.method import acceleration as acc
from flashbench.method.data import Batch

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(seed=0):
    from diffusers import UNet2DConditionModel

    from flashbench_plugins.teachers import _sd_configs as cfg

    torch.manual_seed(seed)
    return UNet2DConditionModel(**cfg.TINY_UNET).eval().requires_grad_(False)


def with_lora(unet, rank=4):
    """A peft LoRA as the teacher plugins add it, with lora_B non-zero so every adapter weight gets a gradient."""
    from peft import LoraConfig

    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]),
        adapter_name="s",
    )  # noqa: E501
    unet.set_adapter("s")
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.data = torch.randn(p.shape, generator=g) * 0.05
        p.requires_grad_(True)
    return params


def n_attention(unet) -> int:
    return sum(type(m).__name__ == "Attention" for m in unet.modules())


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 4, 8, 8), generator=g)
    t = torch.tensor([999, 249][:batch])
    ehs = torch.randn((batch, 77, 32), generator=g)
    return x, t, ehs


def forward_backward(module, params, x, t, ehs):
    for p in params:
        p.grad = None
    out = module(x, t, encoder_hidden_states=ehs).sample
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in params]


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn`` runs."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


# --- gradient checkpointing ---------------------------------------------------------------------------------


def test_gradient_checkpointing_same_outputs_and_lora_gradients_fewer_saved_activations():
    unet = tiny_unet()
    params = with_lora(unet)
    x, t, ehs = inputs()
    ref_out, ref_grads = forward_backward(unet, params, x, t, ehs)
    ref_saved = saved_bytes(lambda: unet(x, t, encoder_hidden_states=ehs).sample.sum())

    assert acc.set_gradient_checkpointing(unet, True) is True
    assert acc.gradient_checkpointing_enabled(unet)
    out, grads = forward_backward(unet, params, x, t, ehs)
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads)  # the non-reentrant checkpoint carries gradients to the LoRA
    saved = saved_bytes(lambda: unet(x, t, encoder_hidden_states=ehs).sample.sum())
    assert saved < 0.5 * ref_saved, (saved, ref_saved)

    # the teacher's passes run without gradients: nothing is saved, nothing recomputed, same numbers
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=ehs).sample, ref_out)

    assert acc.set_gradient_checkpointing(unet, False) is False
    assert saved_bytes(lambda: unet(x, t, encoder_hidden_states=ehs).sample.sum()) == ref_saved


def test_gradient_checkpointing_through_wrappers_and_unsupported_module():
    unet = tiny_unet()
    wrapped = acc.maybe_compile(unet, True, backend="eager")
    assert acc.unwrap(wrapped) is unet
    assert acc.enable_gradient_checkpointing(wrapped) and acc.gradient_checkpointing_enabled(unet)
    with pytest.raises(ValueError, match="Linear does not support gradient checkpointing"):
        acc.set_gradient_checkpointing(torch.nn.Linear(2, 2), True)
    assert acc.set_gradient_checkpointing(torch.nn.Linear(2, 2), False) is False  # nothing to switch off


def test_configure_denoiser_sets_each_variants_state():
    """The denoiser is shared by a study's variants: a variant without checkpointing after one with it
    must not inherit it."""
    unet = tiny_unet()
    unet.set_default_attn_processor()
    state = acc.configure_denoiser(unet, gradient_checkpointing=True)
    assert state["gradient_checkpointing"] is True and state["attention"] == {"AttnProcessor2_0": n_attention(unet)} and state["compiled"] is False
    assert acc.configure_denoiser(unet, gradient_checkpointing=False)["gradient_checkpointing"] is False


def _lora_after_steps(teacher, batches, **train_options):
    """The LoRA after a few full-method steps, the step stats and the trainer's acceleration state."""
    from flashbench.testing import flash_training_smoke

    trainer, stats = flash_training_smoke(teacher, batches, num_timesteps=4, lora_rank=4, train_options=train_options)
    try:
        return [p.detach().clone() for p in trainer.lora_params], stats, trainer.acceleration
    finally:
        trainer.close()


@pytest.fixture(scope="module")
def toy_teacher():
    from flashbench.plugins import collect_components

    return collect_components().get("teacher", "toy-digits").build({}, device="cpu")


def toy_batches(n=2, batch=2):
    from flashbench_plugins.toy.data import all_prompts

    g = torch.Generator().manual_seed(0)
    prompts = all_prompts()
    return [Batch(torch.rand((batch, 3, 16, 16), generator=g) * 2 - 1, prompts[i * batch : (i + 1) * batch]) for i in range(n)]


def _same_training(ref, got):
    (ref_lora, ref_stats, _), (lora, stats, _) = ref, got
    assert {"distil", "adv", "dmd", "disc"} <= set(stats[-1].losses)  # every term ran
    for a, b in zip(ref_stats, stats):
        assert a.losses == pytest.approx(b.losses, rel=1e-5, abs=1e-7)
    for a, b in zip(ref_lora, lora):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_flash_step_with_gradient_checkpointing_reproduces_the_step_without(toy_teacher):
    """``gradient_checkpointing = true`` in the study reaches the denoiser through the trainer, and the next
    variant without it gets it switched off again."""
    batches = toy_batches()
    ref = _lora_after_steps(toy_teacher, batches)
    try:
        got = _lora_after_steps(toy_teacher, batches, gradient_checkpointing=True)
        assert got[2]["gradient_checkpointing"] is True and ref[2]["gradient_checkpointing"] is False
        _same_training(ref, got)  # every term ran through the checkpointed blocks
        assert _lora_after_steps(toy_teacher, batches)[2]["gradient_checkpointing"] is False
    finally:
        acc.set_gradient_checkpointing(toy_teacher.denoiser, False)


def test_flash_step_with_a_compiled_student_reproduces_the_step_without(toy_teacher, monkeypatch):
    """``compile_student = true`` compiles the module the student's training forward runs through (here with
    dynamo's ``aot_eager`` backend: the same graph capture as inductor, without generating code)."""
    import functools

    batches = toy_batches()
    ref = _lora_after_steps(toy_teacher, batches)
    torch._dynamo.reset()
    calls = []
    real = acc.maybe_compile

    def aot_eager(module, enabled, **kw):
        calls.append(enabled)
        return real(module, enabled, **{**kw, "backend": "aot_eager"})

    monkeypatch.setattr(acc, "maybe_compile", functools.wraps(real)(aot_eager))
    try:
        got = _lora_after_steps(toy_teacher, batches, compile_student=True)
    finally:
        torch._dynamo.reset()
    assert calls == [True] and got[2]["compiled"] is True and ref[2]["compiled"] is False
    _same_training(ref, got)


# --- SDPA -------------------------------------------------------------------------------------------------------


def test_enable_sdpa_replaces_classic_processors_same_outputs():
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = tiny_unet()
    x, t, ehs = inputs()
    n = n_attention(unet)
    assert n > 0 and acc.attention_processors(unet) == {"AttnProcessor2_0": n}  # diffusers' default on torch 2
    assert acc.enable_sdpa(unet) == 0
    unet.set_default_attn_processor()  # the classic baddbmm + softmax processors
    assert acc.attention_processors(unet) == {"AttnProcessor": n}
    with torch.no_grad():
        classic = unet(x, t, encoder_hidden_states=ehs).sample
        assert acc.enable_sdpa(unet) == n
        sdpa = unet(x, t, encoder_hidden_states=ehs).sample
    assert acc.attention_processors(unet) == {"AttnProcessor2_0": n}
    torch.testing.assert_close(sdpa, classic, rtol=1e-4, atol=1e-5)

    class Custom(AttnProcessor2_0):
        pass

    first = next(m for m in unet.modules() if type(m).__name__ == "Attention")
    first.set_processor(Custom())
    assert acc.enable_sdpa(unet) == 0 and isinstance(first.processor, Custom)  # custom processors are kept


# --- torch.compile -----------------------------------------------------------------------------------------------


def test_maybe_compile_off_is_identity_on_shares_parameters_same_gradients():
    torch._dynamo.reset()
    unet = tiny_unet()
    params = with_lora(unet)
    assert acc.maybe_compile(unet, False) is unet
    compiled = acc.maybe_compile(unet, True, backend="aot_eager")
    assert acc.is_compiled(compiled) and not acc.is_compiled(unet)
    assert {id(p) for p in compiled.parameters()} == {id(p) for p in unet.parameters()}
    x, t, ehs = inputs()
    ref_out, ref_grads = forward_backward(unet, params, x, t, ehs)
    out, grads = forward_backward(compiled, params, x, t, ehs)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    assert acc.describe(compiled)["compiled"] is True
    torch._dynamo.reset()


# --- mixed precision ------------------------------------------------------------------------------------------------


def test_mixed_precision_support_on_cpu():
    assert acc.mixed_precision_supported("cpu", "no")
    assert acc.mixed_precision_supported("cpu", "bf16")
    assert not acc.mixed_precision_supported("cpu", "fp16")


def test_bf16_flash_step_on_cpu_keeps_lora_float32(toy_teacher):
    from flashbench.config import TrainConfig
    from flashbench.plugins import collect_components
    from flashbench.training import build_trainer

    cfg = TrainConfig(
        num_timesteps=4,
        phase_length=1,
        iterations=2,
        batch_size=2,
        learning_rate=1e-3,
        disc_learning_rate=1e-3,
        guidance_min=1.5,
        guidance_max=3.0,
        lora_rank=4,
        mixed_precision="bf16",
    )
    trainer = build_trainer(cfg, collect_components(), teacher=toy_teacher, seed=0, adapter_name="bf16")  # mse + lsgan + dmd
    try:
        before = [p.detach().clone() for p in trainer.lora_params]
        for i, batch in enumerate(toy_batches()):
            stats = trainer.step(batch, i)
        assert {"distil", "adv", "dmd", "disc"} <= set(stats.losses)
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.losses.values())
        assert all(p.dtype == torch.float32 for p in trainer.lora_params)
        assert any(not torch.equal(a, p) for a, p in zip(before, trainer.lora_params))  # the bf16 step did update the LoRA
    finally:
        trainer.close()
