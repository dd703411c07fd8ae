"""ODE solvers Psi for the teacher: one step from timestep t to t_next given the model's x0 prediction.

Both are written in the data-prediction form so the last step onto the clean state is exact:
* DDIM (first order): x_next = alpha_next x0 + sigma_next eps.
* DPM-Solver++(2M) (Lu et al. 2022), the multistep solver the authors use: with lambda = log(alpha/sigma),
  h = lambda_next - lambda_t, r = h_prev / h, D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev,
  x_next = (sigma_next / sigma_t) x - alpha_next (exp(-h) - 1) D. First order where no history exists
  and on the final step to t = 0 (where h is infinite), as diffusers' ``lower_order_final``.
Samples of one batch may start at different grid levels; ``has_prev`` says per sample whether a
previous x0 exists.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .schedule import CLEAN, NoiseSchedule


class Solver(ABC):
    name: str = "solver"
    order: int = 1

    @abstractmethod
    def step(
        self,
        schedule: NoiseSchedule,
        x: torch.Tensor,
        x0: torch.Tensor,
        t: int,
        t_next: int,
        *,
        x0_prev: torch.Tensor | None = None,
        t_prev: int | None = None,
        has_prev: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def ddim_step(schedule: NoiseSchedule, x, x0, t: int, t_next: int) -> torch.Tensor:
    if t_next == CLEAN:
        return x0
    eps = schedule.eps_from_x0(x, x0, t)
    return schedule.alpha(t_next, x) * x0 + schedule.sigma(t_next, x) * eps


class DDIMSolver(Solver):
    name = "ddim"
    order = 1

    def step(self, schedule, x, x0, t, t_next, *, x0_prev=None, t_prev=None, has_prev=None):
        return ddim_step(schedule, x, x0, t, t_next)


class DPMSolverPP2M(Solver):
    name = "dpm-solver"
    order = 2

    def step(self, schedule, x, x0, t, t_next, *, x0_prev=None, t_prev=None, has_prev=None):
        first = ddim_step(schedule, x, x0, t, t_next)
        if t_next == CLEAN or x0_prev is None or t_prev is None:
            return first
        lam_prev, lam, lam_next = (float(schedule.lambda_(v)) for v in (t_prev, t, t_next))
        h, h_prev = lam_next - lam, lam - lam_prev
        r = h_prev / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        sig_ratio = schedule.sigma(t_next, x) / schedule.sigma(t, x)
        second = sig_ratio * x - schedule.alpha(t_next, x) * torch.expm1(torch.tensor(-h, dtype=x.dtype)) * d
        if has_prev is None:
            return second
        mask = has_prev.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(mask, second, first)
