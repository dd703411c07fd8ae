"""Classifier-free guidance with one batched forward for the conditional and null inputs.

The combination is applied to the network's raw output, whatever its parametrisation (eps, v or flow
velocity): every conversion to x0 is affine in the output with coefficients of (x_t, t) only, and both halves
share x_t and t, so guiding the output is guiding x0 (``noise.py``).

A guidance-distilled network (Flux.1-dev) has no conditional / unconditional pair: it takes omega as an
input (its guidance embedding). Its teacher says so by putting a :data:`GUIDANCE_KEY` entry, (B,) floats, in
the cond dicts it returns; the guided output is then *one* forward on the conditional input with that entry
set to omega, and the null condition is not read. The student, which sees no omega, runs on the cond dict as
encoded (with the teacher's fixed student guidance value in that entry)."""

from __future__ import annotations

from typing import Callable, Mapping

import torch

Cond = Mapping[str, torch.Tensor]

#: the cond-dict entry of a guidance-distilled teacher: omega is an input of its network, not a CFG weight
GUIDANCE_KEY = "guidance"


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, omega: torch.Tensor | float) -> torch.Tensor:
    """eps~ = omega eps(z, c) + (1 - omega) eps(z, null) (Alg. 1). ``omega`` is a scalar or one per sample."""
    omega = torch.as_tensor(omega, dtype=eps_cond.dtype, device=eps_cond.device)
    if omega.ndim == 1:
        omega = omega.reshape(-1, *([1] * (eps_cond.ndim - 1)))
    return omega * eps_cond + (1 - omega) * eps_uncond


def cond_cat(a: Cond, b: Cond) -> dict[str, torch.Tensor]:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def cond_index(c: Cond, index) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in c.items()}


def guided_eps(
    eps_fn: Callable[[torch.Tensor, torch.Tensor, Cond], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    cond: Cond,
    uncond: Cond,
    omega: torch.Tensor | float,
) -> torch.Tensor:
    """One network call on the doubled batch [cond; uncond], combined with :func:`cfg_combine` (``eps_fn`` may
    return any parametrisation: see the module docstring). A cond dict with a :data:`GUIDANCE_KEY` entry is a
    guidance-distilled network's: one call on ``cond`` with omega in that entry, ``uncond`` unused."""
    if GUIDANCE_KEY in cond:
        return eps_fn(x, t, with_guidance(cond, omega, x.shape[0]))
    t = torch.as_tensor(t, device=x.device).expand(x.shape[0]) if torch.as_tensor(t).ndim == 0 else t
    eps = eps_fn(torch.cat([x, x]), torch.cat([t, t]), cond_cat(cond, uncond))
    eps_c, eps_u = eps.chunk(2)
    return cfg_combine(eps_c, eps_u, omega)


def guided_nfe(cond: Cond) -> int:
    """Network evaluations per sample of one guided output: 2 with CFG, 1 for a guidance-distilled network."""
    return 1 if GUIDANCE_KEY in cond else 2


def with_guidance(cond: Cond, omega: torch.Tensor | float, batch: int) -> dict[str, torch.Tensor]:
    """``cond`` with its :data:`GUIDANCE_KEY` entry replaced by omega (a scalar or one per sample)."""
    current = cond[GUIDANCE_KEY]
    omega = torch.as_tensor(omega, dtype=current.dtype, device=current.device)
    return {**cond, GUIDANCE_KEY: omega.reshape(-1).expand(batch) if omega.numel() == 1 else omega.reshape(batch)}


guided_output = guided_eps  # the name for a network whose output is not epsilon
