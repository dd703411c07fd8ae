"""What the method needs from a teacher backbone. A teacher plugin adapts one diffusers model family.

The student is the teacher's own denoiser with LoRA adapters: ``eps(..., student=True)`` runs with the
adapters on, ``student=False`` with them disabled, so one copy of the base weights serves both. The
method never learns which family it is distilling. Switching the adapters and merging them for sampling
work on any peft-adapted ``denoiser`` (``adapters.py``); a family with another kind of adapter overrides
:meth:`Teacher.adapters_disabled` and :meth:`Teacher.merged_student`.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn

from . import adapters
from .schedule import NoiseSchedule

Cond = Mapping[str, torch.Tensor]


class Teacher(ABC):
    #: the module holding the base weights and the LoRA adapters (what accelerate prepares)
    denoiser: nn.Module
    schedule: NoiseSchedule
    latent_shape: tuple[int, int, int]
    device: torch.device
    dtype: torch.dtype
    default_lora_rank: int = 64
    perceptual_net: str = "vgg"  # the LPIPS backbone the ``lpips`` loss uses with net = "auto"

    # --- conditioning ---
    @abstractmethod
    def encode_prompts(self, prompts: list[str], extras: Mapping | None = None) -> dict[str, torch.Tensor]:
        """The conditional inputs for a batch (text embeddings and the family's extra inputs)."""

    def null_condition(self, prompts: list[str], extras: Mapping | None = None) -> dict[str, torch.Tensor]:
        """The null conditioning of CFG; SD-like families encode the empty prompt."""
        return self.encode_prompts([""] * len(prompts), extras)

    # --- the denoiser ---
    @abstractmethod
    def _forward(self, module: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """epsilon prediction of ``module`` (the denoiser, maybe DDP-wrapped) with the active adapters."""

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, *, student: bool, module: nn.Module | None = None) -> torch.Tensor:
        module = self.denoiser if module is None else module  # not `or`: a compiled module refuses len()
        if student:
            return self._forward(module, x, t, cond)
        with self.adapters_disabled():
            return self._forward(self.denoiser, x, t, cond)

    @abstractmethod
    def encoder_features(self, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """(B, C, H, W) features of the frozen teacher's encoder (adapters disabled), differentiable in x."""

    @abstractmethod
    def discriminator_input(self) -> tuple[int, int]:
        """(channels, spatial size) of :meth:`encoder_features`, to size the discriminator head."""

    # --- latents ---
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    # --- LoRA ---
    @abstractmethod
    def add_lora(self, name: str, rank: int) -> list[nn.Parameter]:
        """Add (and activate) a fresh LoRA adapter; returns its trainable parameters."""

    @abstractmethod
    def remove_lora(self, name: str) -> None: ...

    def load_lora(self, name: str, source: str) -> int:
        """Load a published LoRA as adapter ``name`` (evaluation-only baselines); returns its size."""
        raise NotImplementedError(f"{type(self).__name__} cannot load published LoRAs")

    def adapter_layers(self) -> list[nn.Module]:
        """The denoiser's peft LoRA layers, found once per set of adapters."""
        cache = self.__dict__.get("_adapter_layer_cache")
        if cache is None:
            cache = self.__dict__["_adapter_layer_cache"] = adapters.LayerCache()
        return cache.layers(self.denoiser)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        """The teacher: every adapter of the denoiser off inside the block (a flag flip per LoRA layer)."""
        with adapters.adapters_off(self.adapter_layers()):
            yield

    @contextlib.contextmanager
    def merged_student(self) -> Iterator[None]:
        """The student's active adapters folded into the base weights for no-grad passes (sampling); the
        base weights come back bit for bit on exit."""
        with adapters.merged(self.adapter_layers()):
            yield

    @abstractmethod
    def save_lora(self, name: str, folder: Path) -> Path:
        """Save the adapter in the family's diffusers LoRA format; returns the folder."""

    @abstractmethod
    def pipeline(self):
        """The family's stock diffusers pipeline over these components (for export checks)."""

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.denoiser.parameters() if p.requires_grad)
