"""ODE solvers Psi for the teacher: one step from timestep t to t_next given the model's x0 prediction.

A solver works on any :class:`~flashbench.method.noise.NoiseProcess` (or a bare ``NoiseSchedule``, which has
the same ``alpha`` / ``sigma`` / ``lambda_`` / ``eps_from_x0`` / ``clean``), in the data-prediction form so the
last step onto the clean state is exact:
* DDIM (first order): x_next = alpha_next x0 + sigma_next eps. On rectified flow (alpha = 1 - sigma) this is
  the flow Euler step x + (sigma_next - sigma) u, up to rounding.
* DPM-Solver++(2M) (Lu et al. 2022), the multistep solver the authors use: with lambda = log(alpha/sigma),
  h = lambda_next - lambda_t, r = h_prev / h, D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev,
  x_next = (sigma_next / sigma_t) x - alpha_next (exp(-h) - 1) D. First order where no history exists
  and on the final step to t = 0 (where h is infinite), as diffusers' ``lower_order_final``.
* flow Euler: x_next = x + (sigma_next - sigma) u with the velocity u = (x - x0) / sigma, the step of
  diffusers' ``FlowMatchEulerDiscreteScheduler`` (SD3's and Flux's teacher sampler); rectified flow only.
Samples of one batch may start at different grid levels; ``has_prev`` says per sample whether a
previous x0 exists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .noise import NoiseProcess, RectifiedFlow
from .schedule import NoiseSchedule


class Solver(ABC):
    name: str = "solver"
    order: int = 1

    def supports(self, process: NoiseProcess) -> bool:
        """Whether this solver can integrate ``process`` (checked when a trainer is built)."""
        return True

    @abstractmethod
    def step(
        self,
        schedule: NoiseProcess | NoiseSchedule,
        x: torch.Tensor,
        x0: torch.Tensor,
        t,
        t_next,
        *,
        x0_prev: torch.Tensor | None = None,
        t_prev=None,
        has_prev: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


def ddim_step(schedule, x, x0, t, t_next) -> torch.Tensor:
    if t_next == schedule.clean:
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
        if t_next == schedule.clean or x0_prev is None or t_prev is None:
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


class FlowEulerSolver(Solver):
    name = "flow-euler"
    order = 1

    def supports(self, process):
        return isinstance(process, RectifiedFlow)

    def step(self, schedule, x, x0, t, t_next, *, x0_prev=None, t_prev=None, has_prev=None):
        if not isinstance(schedule, RectifiedFlow):
            raise TypeError(f"flow-euler integrates a rectified-flow process, not {type(schedule).__name__}; use ddim or dpm-solver")
        if t_next == schedule.clean:
            return x0  # x - sigma u: the Euler step onto sigma = 0 is the x0 prediction itself
        sigma = schedule.sigma(t, x)
        velocity = (x - x0) / sigma  # the velocity the x0 came from (x0 = x - sigma u)
        return x + (schedule.sigma(t_next, x) - sigma) * velocity
