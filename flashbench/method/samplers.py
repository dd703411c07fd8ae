"""Few-step samplers: how a student (or a published few-step model) goes from noise to an image in n steps.

A :class:`FewStepSampler` chooses the n timesteps and the step between two of them, given the network's raw
output; everything about the noise (alpha, sigma, x0 from the output) goes through the teacher's
:class:`~flashbench.method.noise.NoiseProcess`. The study names one per variant (``eval.sampler``), so each
baseline of Tables 1-4 is sampled with the scheduler its authors published:

==================  ===========================================================  ==========================
sampler             step                                                          published with
==================  ===========================================================  ==========================
``flash``           x0 from the output, re-noised to the next timestep with        Flash (all families; on
                    fresh noise; the trailing grid 999/749/499/249                  flow: the authors' flash
                                                                                    flow-matching scheduler)
``trailing-euler``  deterministic: x0 and the output's own noise (DDIM, = Euler     SDXL-Lightning, SDXL-Turbo
                    on the probability-flow ODE); trailing grid                     (1 step)
``lcm``             LCM's boundary condition c_skip x + c_out x0, re-noised with   LCM, LCM-LoRA
                    fresh noise; LCM's timesteps (4 of a 50-step grid: 999/759/499/259)
``tcd``             x0 and the output's noise taken to s = (1 - gamma) t_next,     Hyper-SD (TCD, gamma 0.3)
                    then forward-noised to t_next; TCD's timesteps
==================  ===========================================================  ==========================

``lcm`` and ``tcd`` are defined on a discrete variance-preserving schedule (their timesteps are its integer
indices); on another process they refuse to run with one line. Each equals diffusers' scheduler of the same
name on identical inputs (``tests/test_samplers.py``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from .noise import NoiseProcess, VPProcess
from .schedule import lcm_boundary_scalings


class FewStepSampler(ABC):
    """The timesteps of an n-step run and the step between two of them."""

    name: str = "sampler"

    def timesteps(self, process: NoiseProcess, steps: int) -> list:
        """The ``steps`` timesteps from full noise (Python numbers): the trailing grid unless overridden."""
        return process.sampling_timesteps(steps)

    def check(self, process: NoiseProcess) -> None:
        """Raise ``ValueError`` (one line) when this sampler is not defined for ``process``."""

    @abstractmethod
    def step(self, process: NoiseProcess, x: torch.Tensor, out: torch.Tensor, t, t_next, generator: torch.Generator | None):
        """From ``x`` at ``t`` and the network's raw output ``out``: ``(x at t_next, estimate)``; ``t_next`` is
        None at the last step, where the returned ``x`` is None and the estimate is the sample (before decoding)."""


def fresh_noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the CPU from ``generator`` (device independent)."""
    return torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)


class FlashSampler(FewStepSampler):
    """x0 from the output; between steps, re-noised to the next timestep with fresh noise (multistep
    consistency sampling: how the student was trained, from z_t = alpha z0 + sigma eps with fresh eps)."""

    name = "flash"

    def step(self, process, x, out, t, t_next, generator):
        x0 = process.to_x0(x, out, t)
        if t_next is None:
            return None, x0
        return process.add_noise(x0, fresh_noise(x, generator), t_next), x0


class TrailingEulerSampler(FewStepSampler):
    """Deterministic: the next state from x0 and the output's own noise, x' = alpha' x0 + sigma' eps (DDIM; on
    the probability-flow ODE this is Euler's step, as diffusers' ``EulerDiscreteScheduler`` with trailing
    spacing takes it, and on rectified flow ``FlowMatchEulerDiscreteScheduler``'s)."""

    name = "trailing-euler"

    def step(self, process, x, out, t, t_next, generator):
        x0 = process.to_x0(x, out, t)
        if t_next is None:
            return None, x0
        return process.add_noise(x0, process.to_eps(x, out, t), t_next), x0


def _require_vp(sampler: FewStepSampler, process: NoiseProcess) -> None:
    if not isinstance(process, VPProcess):
        raise ValueError(
            f"sampler {sampler.name!r} is defined on a discrete variance-preserving schedule; the teacher's noise "
            f"process is {process.name!r}: use 'flash' or 'trailing-euler'"
        )


def consistency_timesteps(steps: int, *, num_train_timesteps: int = 1000, original_steps: int = 50) -> list[int]:
    """LCM's and TCD's timesteps (diffusers' ``LCMScheduler`` and ``TCDScheduler``): the ``original_steps``-step
    DDIM grid (c - 1 for c = T/original_steps, 2T/..., T) from the top, at the floor of ``steps`` evenly spaced
    indices: 999/759/499/259 for 4 of 50."""
    if not 1 <= steps <= original_steps:
        raise ValueError(f"steps must be in [1, {original_steps}], got {steps}")
    c = num_train_timesteps // original_steps
    origin = [(i + 1) * c - 1 for i in range(original_steps)][::-1]
    return [origin[math.floor(i * original_steps / steps)] for i in range(steps)]


class LCMSampler(FewStepSampler):
    """LCM's multistep sampling: the consistency function's boundary condition c_skip(t) x + c_out(t) x0
    (timestep scaling 10, sigma_data 0.5), re-noised to the next timestep with fresh noise; LCM's timesteps."""

    name = "lcm"

    def __init__(self, original_steps: int = 50, timestep_scaling: float = 10.0):
        self.original_steps, self.timestep_scaling = original_steps, timestep_scaling

    def check(self, process):
        _require_vp(self, process)

    def timesteps(self, process, steps):
        self.check(process)
        return consistency_timesteps(steps, num_train_timesteps=process.num_train_timesteps, original_steps=self.original_steps)

    def step(self, process, x, out, t, t_next, generator):
        c_skip, c_out = lcm_boundary_scalings(t, x, timestep_scaling=self.timestep_scaling)
        denoised = c_out * process.to_x0(x, out, t) + c_skip * x
        if t_next is None:
            return None, denoised
        return process.add_noise(denoised, fresh_noise(x, generator), t_next), denoised


class TCDSampler(FewStepSampler):
    """Trajectory consistency distillation's strategic stochastic sampling: x0 and the output's noise taken
    to s = floor((1 - gamma) t_next), then forward-noised from s to t_next with fresh noise (gamma = 0: a
    deterministic DDIM step; gamma = 1: the ``flash``/LCM re-noising). The last step ends at s = 0 (TCD's)."""

    name = "tcd"

    def __init__(self, gamma: float = 0.3, original_steps: int = 50):
        self.gamma, self.original_steps = gamma, original_steps

    def check(self, process):
        _require_vp(self, process)

    def timesteps(self, process, steps):
        self.check(process)
        return consistency_timesteps(steps, num_train_timesteps=process.num_train_timesteps, original_steps=self.original_steps)

    def step(self, process, x, out, t, t_next, generator):
        x0, eps = process.to_x0(x, out, t), process.to_eps(x, out, t)
        s = math.floor((1 - self.gamma) * (0 if t_next is None else t_next))
        x_s = process.add_noise(x0, eps, s)
        if t_next is None:
            return None, x_s
        if self.gamma <= 0:
            return x_s, x0
        # forward from s to t_next on the same Gaussian path: x' = (a'/a_s) x_s + sqrt(sigma'^2 - (a'/a_s)^2 sigma_s^2) z
        ratio = process.alpha(t_next, x) / process.alpha(s, x)
        var = process.sigma(t_next, x) ** 2 - ratio**2 * process.sigma(s, x) ** 2
        return ratio * x_s + var.clamp_min(0).sqrt() * fresh_noise(x, generator), x0
