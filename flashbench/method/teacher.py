"""What the method needs from a teacher backbone. A teacher plugin adapts one diffusers model family.

The student is the teacher's own denoiser with LoRA adapters: ``output(..., student=True)`` runs with the
adapters on, ``student=False`` with them disabled, so one copy of the base weights serves both. The
method never learns which family it is distilling: ``output`` is the network's raw output and the teacher's
:attr:`Teacher.noise_process` turns it into x0 (``noise.py``); a teacher that only sets ``schedule`` is a
VP-epsilon teacher, as every teacher was before noise processes existed. Switching the adapters and merging them for sampling
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
from .noise import NoiseProcess, VPEpsilon
from .schedule import NoiseSchedule

Cond = Mapping[str, torch.Tensor]


class Teacher(ABC):
    #: the module holding the base weights and the LoRA adapters (what accelerate prepares)
    denoiser: nn.Module
    #: a VP teacher's alphas_cumprod; the default :attr:`noise_process` is VP-epsilon over it
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

    # --- the noise process ---
    @property
    def noise_process(self) -> NoiseProcess:
        """Timestep grids, noising and the network's parametrisation; VP-epsilon over :attr:`schedule` unless
        the teacher sets another (``self.noise_process = RectifiedFlow(shift=3.0)``, ``VPV(schedule)``)."""
        process = self.__dict__.get("_noise_process")
        if process is None:
            process = self.__dict__["_noise_process"] = VPEpsilon(self.schedule)
        return process

    @noise_process.setter
    def noise_process(self, process: NoiseProcess) -> None:
        self.__dict__["_noise_process"] = process

    # --- the denoiser ---
    @abstractmethod
    def _forward(self, module: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The raw output of ``module`` (the denoiser, maybe DDP-wrapped) with the active adapters, in the
        parametrisation of :attr:`noise_process` (epsilon, v or flow velocity); ``t`` in its timesteps."""

    def output(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, *, student: bool, module: nn.Module | None = None) -> torch.Tensor:
        """The network's raw output: the student's (adapters on, through ``module`` when given) or the teacher's."""
        module = self.denoiser if module is None else module  # not `or`: a compiled module refuses len()
        if student:
            return self._forward(module, x, t, cond)
        with self.adapters_disabled():
            return self._forward(self.denoiser, x, t, cond)

    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, *, student: bool, module: nn.Module | None = None) -> torch.Tensor:
        """epsilon of the network at (x, t): :meth:`output` itself for an epsilon model, else converted by the
        noise process (in float32, returned in the output's dtype)."""
        out = self.output(x, t, cond, student=student, module=module)
        process = self.noise_process
        if process.prediction == "epsilon":
            return out
        return process.to_eps(x.float(), out.float(), t).to(out.dtype)

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


def process_of(teacher) -> NoiseProcess:
    """The noise process of ``teacher``; a duck-typed teacher with only a ``schedule`` is VP-epsilon."""
    process = getattr(teacher, "noise_process", None)
    return process if process is not None else VPEpsilon(teacher.schedule)


def network(teacher):
    """``fn(x, t, cond, *, student, module=None)``: the raw network output of ``teacher``; a duck-typed teacher
    with only ``eps`` is an epsilon model, whose eps is its output."""
    return getattr(teacher, "output", None) or teacher.eps
