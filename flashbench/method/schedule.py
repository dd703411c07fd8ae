"""The teacher's noise schedule on its discrete training grid, and the K-grid of the method.

alpha(t) = sqrt(alphas_cumprod[t]), sigma(t) = sqrt(1 - alphas_cumprod[t]) (Eq. 1: z_t = alpha z0 + sigma eps).
The K-grid splits [0, 1] into K uniformly spaced timesteps mu_i = i/K, i = 1..K, mapped to the
teacher's T-step grid with *trailing* spacing, t_i = i T / K - 1: for T = 1000, K = 32 the four
inference timesteps i = K/4, K/2, 3K/4, K are 249, 499, 749, 999. Grid index 0 is the clean sample
(alpha = 1, sigma = 0), where the ODE solver stops.
"""

from __future__ import annotations

import torch

CLEAN = -1  # timestep value standing for t = 0 (no noise)


class NoiseSchedule:
    clean = CLEAN  # as NoiseProcess.clean: the solvers accept a bare schedule or a noise process

    def __init__(self, alphas_cumprod: torch.Tensor):
        ac = alphas_cumprod.detach().to(torch.float64).cpu()
        self.num_train_timesteps = len(ac)
        # index 0 of the padded table is the clean state t = CLEAN
        self._ac = torch.cat([torch.ones(1, dtype=torch.float64), ac])

    def alphas_cumprod(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t)
        return self._ac.to(t.device)[t.long() + 1]

    def alpha(self, t, like: torch.Tensor) -> torch.Tensor:
        return _expand(self.alphas_cumprod(torch.as_tensor(t, device=like.device)).sqrt(), like)

    def sigma(self, t, like: torch.Tensor) -> torch.Tensor:
        return _expand((1 - self.alphas_cumprod(torch.as_tensor(t, device=like.device))).sqrt(), like)

    def lambda_(self, t) -> torch.Tensor:
        """log(alpha / sigma); +inf at the clean state."""
        ac = self.alphas_cumprod(torch.as_tensor(t))
        return 0.5 * (torch.log(ac) - torch.log1p(-ac))

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        return self.alpha(t, x0) * x0 + self.sigma(t, x0) * eps

    def x0_from_eps(self, xt: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """The x0-parametrisation of an epsilon model: (z_t - sigma eps) / alpha (Sec. 3, below Eq. 2)."""
        return (xt - self.sigma(t, xt) * eps) / self.alpha(t, xt)

    def eps_from_x0(self, xt: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        return (xt - self.alpha(t, xt) * x0) / self.sigma(t, xt)

    # --- grids -----------------------------------------------------------------------------------
    def grid_timestep(self, index, num_timesteps: int) -> torch.Tensor:
        """Teacher timestep of K-grid index ``index`` (0..K); index 0 -> CLEAN."""
        index = torch.as_tensor(index)
        t = index * self.num_train_timesteps // num_timesteps - 1
        return torch.where(index > 0, t, torch.full_like(t, CLEAN))

    def sampling_timesteps(self, steps: int) -> list[int]:
        """Trailing timesteps for an ``steps``-step sampler, from full noise: 4 -> [999, 749, 499, 249]."""
        return [int(self.grid_timestep(i, steps)) for i in range(steps, 0, -1)]

    def continuous_timestep(self, u: float) -> int:
        """Map u in (0, 1] to the teacher grid: round(u T) - 1, at least 0 (u = 0.01 -> 9, 0.75 -> 749)."""
        return max(0, int(round(u * self.num_train_timesteps)) - 1)


def lcm_boundary_scalings(t, like: torch.Tensor, *, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """(c_skip, c_out) of LCM's boundary condition on the teacher's integer timestep ``t``, shaped to broadcast
    against ``like``: c_skip = sigma_data^2 / ((10 t)^2 + sigma_data^2), c_out = 10 t / sqrt((10 t)^2 + sigma_data^2).

    The authors' code outputs c_skip z_t + c_out x0 from the student (the paper does not mention it). On the
    integer grid c_skip is 1 only at t = 0 and below 3e-6 from t = 31 on (4e-8 at t = 249), so on the K-grid,
    where t >= T/K - 1, it is all but the plain x0-parametrisation.
    """
    scaled = timestep_scaling * torch.as_tensor(t, device=like.device).to(torch.float64)
    denom = scaled**2 + sigma_data**2
    return _expand(sigma_data**2 / denom, like), _expand(scaled / denom.sqrt(), like)


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    v = v.to(like.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))
