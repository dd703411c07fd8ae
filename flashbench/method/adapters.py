"""The student's LoRA adapters on the teacher's module: switching them off for teacher passes, and folding
them into the base weights for inference.

The student is the teacher's denoiser with peft LoRA layers (``BaseTunerLayer``); every pass of the teacher
runs the same module with the adapters off. Two costs that are not the method's live here:

- **The on/off switch.** diffusers' ``disable_adapters()`` / ``enable_adapters()`` walk every module of the
  model and reset the adapters' ``requires_grad`` on each call; a Flash step switches ~10 times (each teacher
  ODE pass, DMD's teacher score, the discriminator's teacher-encoder passes), which on the embedded world was
  10% of the step. :func:`adapters_off` flips peft's per-layer ``_disable_adapters`` flag on a list of the
  layers instead -- what the layers' ``forward`` reads -- and leaves ``requires_grad`` alone (a disabled
  LoRA branch is not computed at all, so its weights get no gradient either way). :class:`LayerCache`
  keeps that list, rebuilt whenever the module's set of adapters (``peft_config``) changes.
- **Inference with the LoRA branches.** Each adapted layer computes ``W x + B A x``: two more small matmuls
  per layer and pass. :func:`merged` folds ``W + s B A`` into new weight tensors for the duration of a
  sampling run (peft's own ``merge`` with ``safe_merge``, which writes a new tensor instead of adding in
  place) and puts the *original* tensors back afterwards: the teacher's base weights come back bit for bit,
  which an ``unmerge`` (``W - s B A`` in floating point) would not give, and which resumable studies rely on
  (a resumed run's teacher has never been merged). The merged weights cost one extra copy of the adapted
  layers while sampling. Only float32 (and float64) weights are merged: in bf16, ``W + s B A`` rounds to 8
  significant bits of ``W``, which wipes out most of a delta a hundred times smaller than the weight (a
  trained LoRA's usual size); half-precision layers keep their LoRA branch, computed in the adapter's float32.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

#: base-weight dtypes a LoRA is merged into for sampling (see the module docstring for half precision)
MERGE_DTYPES = (torch.float32, torch.float64)


def tuner_layers(module: nn.Module) -> list[nn.Module]:
    """peft's adapter-carrying layers of ``module`` (empty without peft or adapters)."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft, no adapters
        return []
    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def adapter_names(module: nn.Module) -> tuple[str, ...]:
    """The adapters a (diffusers or peft-injected) model holds, from its ``peft_config``."""
    return tuple(getattr(module, "peft_config", None) or ())


class LayerCache:
    """The tuner layers of one module, found once per set of adapters (adding, loading or deleting an adapter
    through peft or diffusers changes ``peft_config``, and with it the list)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._layers: list[nn.Module] = []

    def layers(self, module: nn.Module) -> list[nn.Module]:
        key = (id(module), adapter_names(module))
        if key != self._key:
            self._layers, self._key = tuner_layers(module), key
        return self._layers


@contextlib.contextmanager
def adapters_off(layers: Sequence[nn.Module]) -> Iterator[None]:
    """Every LoRA branch of ``layers`` off inside the block; each layer's own state restored after (so nested
    blocks and adapters that were already off stay as they were)."""
    before = [layer._disable_adapters for layer in layers]
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer, disabled in zip(layers, before):
            layer._disable_adapters = disabled


@contextlib.contextmanager
def merged(layers: Sequence[nn.Module]) -> Iterator[int]:
    """The active adapters of ``layers`` folded into their base weights inside the block (for no-grad passes:
    sampling); yields how many layers were merged. On exit the base layers get their original weight and bias
    tensors back, untouched. Layers whose adapters are off, already merged, or inactive, and layers with
    half-precision weights, are left as they are."""
    saved: list[tuple[nn.Module, nn.Module, dict]] = []
    try:
        for layer in layers:
            if layer.disable_adapters or layer.merged or not layer.active_adapters:
                continue
            base = layer.get_base_layer()
            if getattr(base, "weight", None) is None or base.weight.dtype not in MERGE_DTYPES:
                continue
            originals = {name: p.data for name, p in base.named_parameters(recurse=False)}
            saved.append((layer, base, originals))
            layer.merge(safe_merge=True)  # new tensors: W + s B A, never an in-place add on W
        yield len(saved)
    finally:
        for layer, base, originals in reversed(saved):
            for name, data in originals.items():
                getattr(base, name).data = data
            layer.merged_adapters.clear()
