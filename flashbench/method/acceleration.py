"""The GPU path of the student: gradient checkpointing, SDPA attention, ``torch.compile``, bf16 autocast.

None of this changes the method's maths; each helper is a no-op unless asked for, and each is tested for
correctness on the CPU (same outputs, same LoRA gradients) in ``tests/test_acceleration.py``.

- **Gradient checkpointing** (``TrainConfig.gradient_checkpointing``): the denoiser's blocks recompute their
  activations in the backward pass instead of storing them -- what makes SDXL and Pixart fit at the paper's
  batch sizes. diffusers checkpoints only when gradients are on, so the teacher's no-grad passes (the ODE,
  DMD's scores) run exactly as before; the student's forward and the adversarial term's pass through the
  teacher's encoder are recomputed in the backward pass. The trap: the teacher is the student's own module
  with its adapters *disabled*, and the backward pass runs after the ``adapters_disabled()`` block has
  switched them back on, so diffusers' default checkpoint would recompute the teacher-encoder activations
  *with* the LoRA (torch raises a metadata-mismatch error when the LoRA changes the saved tensors; it could
  as well give silently wrong gradients). :func:`adapter_aware_checkpoint` records the adapters' on/off
  state at the forward and recomputes under that state. It is PyTorch's non-reentrant checkpoint, which
  carries gradients to the LoRA weights although no block input requires grad (the reentrant one would
  drop them). The denoiser is shared by every variant of a study, so :func:`set_gradient_checkpointing`
  sets the state each variant asks for instead of only ever switching it on.
- **SDPA attention**: diffusers uses ``F.scaled_dot_product_attention`` (``AttnProcessor2_0``) by default on
  torch 2. A model whose processors were reset to the classic ones (``set_default_attn_processor`` does
  that: it installs ``AttnProcessor``, the baddbmm + softmax path that materialises the attention matrix) is
  switched back by :func:`enable_sdpa`; custom processors (IP-adapter, ...) are left alone.
- **torch.compile** (``TrainConfig.compile_student``): :func:`maybe_compile` wraps the module the student's
  training forward runs through. The wrapper shares the parameters (the optimiser and the LoRA export see the
  same tensors); the first step pays the compilation. Callers must test the wrapper with ``is None``, not for
  truth: ``torch.compile``'s wrapper raises on ``len()``.
- **bf16**: ``TrainConfig.mixed_precision = "bf16"`` is accelerate's autocast around the network passes; the
  LoRA and the discriminator head stay float32 (their Adam steps of 1e-5 would round away in bf16).
  :func:`mixed_precision_supported` says whether a device can run it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .adapters import tuner_layers


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if is_compiled(module):
            module = module._orig_mod
        elif isinstance(module, (DataParallel, DistributedDataParallel)):
            module = module.module
        else:
            return module


# --- gradient checkpointing -------------------------------------------------------------------------------


def supports_gradient_checkpointing(module: nn.Module) -> bool:
    return bool(getattr(unwrap(module), "_supports_gradient_checkpointing", False))


def gradient_checkpointing_enabled(module: nn.Module) -> bool:
    """True when any block of the (diffusers) model checkpoints its activations."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in unwrap(module).modules())


def adapter_aware_checkpoint(block: nn.Module, *args, **kwargs):
    """``torch.utils.checkpoint`` (non-reentrant) of ``block(*args, **kwargs)`` whose recomputation runs with
    the peft adapters of ``block`` switched on or off as they were at the forward."""
    from torch.utils.checkpoint import checkpoint

    layers = tuner_layers(block)
    at_forward = [layer._disable_adapters for layer in layers]

    def run(*a, **kw):
        now = [layer._disable_adapters for layer in layers]
        for layer, disabled in zip(layers, at_forward):
            layer._disable_adapters = disabled
        try:
            return block(*a, **kw)
        finally:
            for layer, disabled in zip(layers, now):
                layer._disable_adapters = disabled

    return checkpoint(run, *args, use_reentrant=False, **kwargs)


def set_gradient_checkpointing(module: nn.Module, enabled: bool) -> bool:
    """Switch gradient checkpointing of a diffusers model (UNet, Pixart transformer) on or off; returns the
    new state. Asking for it on a model that cannot checkpoint is an error, not a silent no-op: the run
    would go out of memory later, far from the cause."""
    model = unwrap(module)
    if enabled:
        if not supports_gradient_checkpointing(model):
            raise ValueError(f"{type(model).__name__} does not support gradient checkpointing (gradient_checkpointing = true)")
        model.enable_gradient_checkpointing(gradient_checkpointing_func=adapter_aware_checkpoint)
    elif gradient_checkpointing_enabled(model):
        model.disable_gradient_checkpointing()
    return gradient_checkpointing_enabled(model)


def enable_gradient_checkpointing(module: nn.Module) -> bool:
    return set_gradient_checkpointing(module, True)


# --- attention ----------------------------------------------------------------------------------------------


def _sdpa_replacements() -> dict[type, type]:
    from diffusers.models import attention_processor as ap

    return {ap.AttnProcessor: ap.AttnProcessor2_0, ap.AttnAddedKVProcessor: ap.AttnAddedKVProcessor2_0}


def attention_processors(module: nn.Module) -> dict[str, int]:
    """How many attention layers use each processor class, e.g. ``{"AttnProcessor2_0": 16}``."""
    from diffusers.models.attention_processor import Attention

    counts: dict[str, int] = {}
    for m in unwrap(module).modules():
        if isinstance(m, Attention):
            name = type(m.processor).__name__
            counts[name] = counts.get(name, 0) + 1
    return counts


def enable_sdpa(module: nn.Module) -> int:
    """Replace the classic (non-SDPA) attention processors by their ``scaled_dot_product_attention``
    versions; returns how many layers changed. Other processors are kept."""
    from diffusers.models.attention_processor import Attention

    replacements = _sdpa_replacements()
    changed = 0
    for m in unwrap(module).modules():
        if isinstance(m, Attention) and type(m.processor) in replacements:
            m.set_processor(replacements[type(m.processor)]())
            changed += 1
    return changed


# --- torch.compile --------------------------------------------------------------------------------------------


def maybe_compile(
    module: nn.Module, enabled: bool, *, backend: str = "inductor", mode: str | None = None, dynamic: bool | None = None, fullgraph: bool = False
) -> nn.Module:
    """``torch.compile(module)`` when ``enabled``, else ``module`` itself. The compiled wrapper shares the
    module's parameters. ``backend="aot_eager"`` traces without generating code (tests, debugging)."""
    if not enabled:
        return module
    return torch.compile(module, backend=backend, mode=mode, dynamic=dynamic, fullgraph=fullgraph)


def is_compiled(module: nn.Module) -> bool:
    return isinstance(module, torch._dynamo.eval_frame.OptimizedModule)


# --- mixed precision ------------------------------------------------------------------------------------------


def mixed_precision_supported(device: torch.device | str, mixed_precision: str) -> bool:
    """Whether ``device`` runs accelerate's ``mixed_precision`` ("no", "bf16", "fp16")."""
    device = torch.device(device)
    if mixed_precision == "no":
        return True
    if device.type == "cuda":
        if mixed_precision == "bf16":
            return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.cuda.is_available()
    # CPU autocast runs bf16 (slowly without AVX512-BF16/AMX); accelerate refuses fp16 on the CPU
    return device.type == "cpu" and mixed_precision == "bf16"


# --- the student ------------------------------------------------------------------------------------------------


def configure_denoiser(denoiser: nn.Module, *, gradient_checkpointing: bool, sdpa: bool = True) -> dict[str, Any]:
    """Put the shared denoiser in the state one variant asks for (in place; call before wrapping it in DDP or
    compiling it): SDPA attention, gradient checkpointing on or off. Returns :func:`describe`'s dict."""
    if sdpa:
        enable_sdpa(denoiser)
    if gradient_checkpointing or supports_gradient_checkpointing(denoiser):
        set_gradient_checkpointing(denoiser, gradient_checkpointing)
    return describe(denoiser)


def describe(module: nn.Module) -> dict[str, Any]:
    """The acceleration state of a denoiser, for provenance: attention processors, checkpointing, compiled."""
    return {
        "attention": attention_processors(module),
        "gradient_checkpointing": gradient_checkpointing_enabled(module),
        "compiled": is_compiled(module),
    }
