"""Encoder features of a diffusers denoiser, for a teacher's ``encoder_features`` (the discriminator's input, Eq. 8).

The discriminator reads an intermediate activation of the frozen teacher: the output of a UNet's down blocks
and mid block, or a transformer's image tokens after its first few blocks. Computing it by hand means copying
the preamble of the model's ``forward`` (time embedding, class and added embeddings, patch embedding, rotary
positions, attention-mask biases, adapter residuals, ...), which differs between diffusers classes and
versions. These helpers instead run the model's own ``forward`` and stop it where the features are, so the
features are exactly what the full forward computes there, gradients included:

* :func:`unet_encoder_features` -- ``UNet2DConditionModel`` and ``UNet2DModel``: what the forward hands its
  first up block (down blocks, mid block, and a T2I-adapter's last residual where the forward adds one);
* :func:`transformer_block_tokens` -- a transformer model (``PixArtTransformer2DModel``,
  ``SD3Transformer2DModel``, ``FluxTransformer2DModel``, ...): the image tokens after its first ``n`` blocks;
* :func:`run_until` -- the general form: the input or output of any submodule of a forward.

Call them inside the teacher's adapters-disabled context (the discriminator reads the frozen teacher), with
the arguments the teacher's own ``_forward`` passes to the model::

    def encoder_features(self, x, t, cond):
        with self.adapters_disabled():
            return unet_encoder_features(self.unet, x, t, encoder_hidden_states=cond["encoder_hidden_states"])

The forward is abandoned by raising an exception from a hook once the features are computed; the hook is
removed before anything else runs, so a gradient-checkpointed block recomputed in the backward pass does
not stop again.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

__all__ = ["run_until", "unet_encoder_features", "transformer_block_tokens"]


class _Reached(Exception):
    """Raised by the hook of :func:`run_until` to leave the forward with the value it caught."""

    def __init__(self, value):
        super().__init__()
        self.value = value


def run_until(model: nn.Module, module: nn.Module, *args, where: str = "output", select: Callable[[Any], Any] | None = None, **kwargs) -> Any:
    """Run ``model(*args, **kwargs)`` until ``module`` (a submodule of it) is called, and return that call's
    ``where="input"`` (its first argument, or its ``hidden_states`` keyword) or ``where="output"`` (its return
    value), passed through ``select`` when given (e.g. ``lambda out: out[1]`` for a block returning a pair).
    The rest of the forward does not run. Raises ``RuntimeError`` when the forward never calls ``module``."""
    if where not in ("input", "output"):
        raise ValueError(f"where must be 'input' or 'output', got {where!r}")
    handles = []

    def leave(value):
        for handle in handles:  # before raising: a checkpointed recomputation must not stop here again
            handle.remove()
        raise _Reached(select(value) if select is not None else value)

    if where == "input":

        def pre_hook(_, hook_args, hook_kwargs):
            leave(hook_args[0] if hook_args else hook_kwargs["hidden_states"])

        handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
    else:

        def hook(_, __, output):
            leave(output)

        handles.append(module.register_forward_hook(hook))
    try:
        model(*args, **kwargs)
    except _Reached as reached:
        return reached.value
    finally:
        for handle in handles:
            handle.remove()
    raise RuntimeError(f"{type(model).__name__}.forward never called the {type(module).__name__} it was to stop at")


def unet_encoder_features(unet: nn.Module, sample: torch.Tensor, timestep, **forward_kwargs) -> torch.Tensor:
    """(B, C, h, w): the encoder output of a diffusers UNet (``UNet2DConditionModel``, ``UNet2DModel``) as its
    ``forward(sample, timestep, **forward_kwargs)`` computes it -- what it hands its first up block: the down
    blocks, the mid block, and whatever the forward adds in between (class labels, SDXL's added embeddings,
    T2I-adapter residuals given as ``down_intrablock_additional_residuals``). ``C`` is the last entry of
    ``unet.config.block_out_channels``; ``h = w`` is the sample's side over 2 per downsampling block."""
    up_blocks = getattr(unet, "up_blocks", None)
    if not up_blocks:
        raise TypeError(f"{type(unet).__name__} has no up_blocks: unet_encoder_features expects a diffusers UNet")
    return run_until(unet, up_blocks[0], sample, timestep, where="input", **forward_kwargs)


def transformer_block_tokens(transformer: nn.Module, n_blocks: int, *args, blocks: str = "transformer_blocks", **forward_kwargs) -> torch.Tensor:
    """(B, N, D): the image tokens after the first ``n_blocks`` of ``transformer.<blocks>`` in the transformer's
    ``forward(*args, **forward_kwargs)``. A block returning a pair (SD3's and Flux's joint blocks return
    ``(text tokens, image tokens)``) gives its second element. Reshape to the token grid for the discriminator:
    ``tokens.transpose(1, 2).reshape(B, D, h, w)``."""
    stack = getattr(transformer, blocks)
    if not 1 <= n_blocks <= len(stack):
        raise ValueError(f"n_blocks must be in [1, {len(stack)}] for {type(transformer).__name__}.{blocks}, got {n_blocks}")
    return run_until(transformer, stack[n_blocks - 1], *args, where="output", select=_image_tokens, **forward_kwargs)


def _image_tokens(output):
    return output[1] if isinstance(output, tuple) else output
