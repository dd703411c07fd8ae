"""The teacher's ODE solvers Psi against diffusers' schedulers and an independent float64 DPM-Solver++(2M).

The "model" is a fake linear eps function; tensors are tiny. Conventions checked:
* DDIM: x_next = alpha_next x0 + sigma_next eps, onto the clean state (returns x0) at the end;
* DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): first order at the first step and on the final step to
  t = 0 (diffusers' ``lower_order_final`` / ``final_sigmas_type="zero"``), second order in between.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from flashbench.method.guidance import guided_eps
from flashbench.method.sampling import teacher_sample
from flashbench.method.schedule import CLEAN, NoiseSchedule
from flashbench.method.solvers import DDIMSolver, DPMSolverPP2M

# diffusers' DPMSolverMultistepScheduler calls np.array(tensor, copy=False) internally (harmless here)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def fake_eps(x: torch.Tensor, t) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype)
    if t.ndim == 1:
        t = t.reshape(-1, *([1] * (x.ndim - 1)))
    return 0.1 * x + 0.01 * t / 1000


@pytest.fixture(scope="module")
def alphas_cumprod():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**BETAS).alphas_cumprod.clone()


@pytest.fixture(scope="module")
def sched(alphas_cumprod):
    return NoiseSchedule(alphas_cumprod)


def noise(shape=(2, 3, 4, 4), seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run_ours(solver, sched, x, steps, eps_fn=fake_eps):
    """The loop of flashbench.method.sampling.teacher_sample, with a plain eps function."""
    ts = sched.sampling_timesteps(steps) + [CLEAN]
    x0_prev = t_prev = None
    traj = []
    for t, t_next in zip(ts[:-1], ts[1:]):
        x0 = sched.x0_from_eps(x, eps_fn(x, t), t)
        x = solver.step(sched, x, x0, t, t_next, x0_prev=x0_prev, t_prev=t_prev)
        x0_prev, t_prev = x0, t
        traj.append(x)
    return traj


# ==================================================================================================
# 7. DDIM
# ==================================================================================================


def diffusers_ddim(alphas_cumprod, x, steps, set_alpha_to_one):
    from diffusers import DDIMScheduler

    s = DDIMScheduler(**BETAS, set_alpha_to_one=set_alpha_to_one, timestep_spacing="trailing", clip_sample=False)
    # the same table, in float64, so that the comparison is tight
    s.alphas_cumprod = alphas_cumprod.double()
    s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one else s.alphas_cumprod[0]
    s.set_timesteps(steps)
    traj = []
    for t in s.timesteps:
        x = s.step(fake_eps(x, int(t)), int(t), x, eta=0.0).prev_sample
        traj.append(x)
    return [int(t) for t in s.timesteps], traj


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_ddim_matches_diffusers(alphas_cumprod, sched, steps):
    x = noise()
    ours = run_ours(DDIMSolver(), sched, x, steps)
    ts, ref_keep = diffusers_ddim(alphas_cumprod, x, steps, set_alpha_to_one=False)
    assert ts == sched.sampling_timesteps(steps)
    # intermediate steps: identical (with set_alpha_to_one=False only the last step differs)
    for a, b in zip(ours[:-1], ref_keep[:-1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # the final step goes to the clean state: diffusers with set_alpha_to_one=True, whose last step yields x0
    _, ref_clean = diffusers_ddim(alphas_cumprod, x, steps, set_alpha_to_one=True)
    assert len(ours) == len(ref_clean) == steps
    for a, b in zip(ours, ref_clean):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # and the last step of set_alpha_to_one=False stops at alphas_cumprod[0], not at the clean state
    assert not torch.allclose(ours[-1], ref_keep[-1], rtol=1e-6, atol=1e-8)


def test_ddim_step_by_hand(sched, alphas_cumprod):
    x = noise((1, 2, 2, 2), seed=3)
    t, t_next = 749, 499
    eps = fake_eps(x, t)
    ac = alphas_cumprod.double()
    x0 = (x - (1 - ac[t]).sqrt() * eps) / ac[t].sqrt()
    expected = ac[t_next].sqrt() * x0 + (1 - ac[t_next]).sqrt() * eps
    torch.testing.assert_close(DDIMSolver().step(sched, x, x0, t, t_next), expected, rtol=1e-12, atol=1e-12)
    # onto the clean state: exactly x0
    assert torch.equal(DDIMSolver().step(sched, x, x0, 249, CLEAN), x0)


@pytest.mark.parametrize("solver", [DDIMSolver(), DPMSolverPP2M()], ids=["ddim", "dpm"])
def test_constant_eps_is_solved_exactly(sched, solver):
    """With eps == c the PF-ODE solution is x_t = alpha_t a + sigma_t c; every solver is exact."""
    c = noise((2, 1, 3, 3), seed=9)
    x = noise((2, 1, 3, 3), seed=10)
    out = run_ours(solver, sched, x, 4, eps_fn=lambda xx, tt: c)[-1]
    ac = float(sched.alphas_cumprod(999))
    torch.testing.assert_close(out, (x - math.sqrt(1 - ac) * c) / math.sqrt(ac), rtol=1e-10, atol=1e-10)


# ==================================================================================================
# 8. DPM-Solver++(2M)
# ==================================================================================================


def diffusers_dpm(alphas_cumprod, x, steps):
    from diffusers import DPMSolverMultistepScheduler

    s = DPMSolverMultistepScheduler(
        **BETAS,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    s.set_timesteps(steps)
    traj = []
    for t in s.timesteps:
        x = s.step(fake_eps(x, int(t)), t, x).prev_sample
        traj.append(x)
    return [int(t) for t in s.timesteps], traj


def reference_dpmpp_2m(ac: np.ndarray, ts: list[int], x: np.ndarray) -> list[np.ndarray]:
    """Lu et al. 2022, Algorithm 2 (DPM-Solver++(2M)), in numpy float64, with the final step to t = 0
    taken in first order (x_0 = the last data prediction)."""
    alpha = lambda t: math.sqrt(ac[t])  # noqa: E731
    sigma = lambda t: math.sqrt(1 - ac[t])  # noqa: E731
    lam = lambda t: math.log(alpha(t) / sigma(t))  # noqa: E731

    def data_pred(x, t):
        e = 0.1 * x + 0.01 * t / 1000
        return (x - sigma(t) * e) / alpha(t)

    out = []
    # i = 1: first order
    q_prev = data_pred(x, ts[0])
    if len(ts) == 1:
        return [q_prev]
    h = lam(ts[1]) - lam(ts[0])
    x = sigma(ts[1]) / sigma(ts[0]) * x - alpha(ts[1]) * (math.exp(-h) - 1) * q_prev
    out.append(x)
    for i in range(2, len(ts) + 1):
        s, s_prev = ts[i - 1], ts[i - 2]
        q = data_pred(x, s)
        if i == len(ts):  # the last step, onto t = 0 (h = inf): first order gives x_0 = q
            out.append(q)
            break
        t = ts[i]
        h, h_prev = lam(t) - lam(s), lam(s) - lam(s_prev)
        r = h_prev / h
        d = (1 + 1 / (2 * r)) * q - 1 / (2 * r) * q_prev
        x = sigma(t) / sigma(s) * x - alpha(t) * (math.exp(-h) - 1) * d
        out.append(x)
        q_prev = q
    return out


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_dpm_solver_matches_independent_float64(alphas_cumprod, sched, steps):
    x = noise()
    ours = run_ours(DPMSolverPP2M(), sched, x, steps)
    ref = reference_dpmpp_2m(alphas_cumprod.double().numpy(), sched.sampling_timesteps(steps), x.numpy())
    assert len(ours) == len(ref) == steps
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [4, 8])
def test_dpm_solver_matches_diffusers(alphas_cumprod, sched, steps):
    x = noise()
    ours = run_ours(DPMSolverPP2M(), sched, x, steps)
    ts, ref = diffusers_dpm(alphas_cumprod, x, steps)
    assert ts == sched.sampling_timesteps(steps)
    assert len(ours) == len(ref) == steps
    # diffusers computes each update in float32 (it upcasts/downcasts the sample), hence 1e-4
    for a, b in zip(ours, ref):
        scale = float(b.abs().max())
        assert float((a - b.double()).abs().max()) <= 1e-4 * scale
    # ... and the comparison is sharp enough to tell DPM-Solver++(2M) from DDIM
    ddim = run_ours(DDIMSolver(), sched, x, steps)
    assert float((ddim[-1] - ref[-1].double()).abs().max()) > 1e-2 * float(ref[-1].abs().max())


def test_teacher_sample_matches_diffusers_with_cfg(alphas_cumprod, sched):
    """teacher_sample (CFG in one batched call, the solver loop, decode) against diffusers' scheduler."""
    from diffusers import DPMSolverMultistepScheduler

    calls = []

    class FakeTeacher:
        schedule = sched

        def eps(self, x, t, cond, *, student):
            assert student is False
            calls.append(x.shape[0])
            return fake_eps(x, t) + cond["emb"].reshape(-1, 1, 1, 1).to(x.dtype)

        def decode(self, z):
            return z * 2

    x = noise((2, 2, 3, 3), seed=4)
    cond, uncond = {"emb": torch.tensor([0.2, -0.1])}, {"emb": torch.tensor([0.0, 0.0])}
    omega = 4.0
    out = teacher_sample(FakeTeacher(), DPMSolverPP2M(), cond, uncond, x, 4, omega)
    assert calls == [4] * 4  # one doubled batch per step

    s = DPMSolverMultistepScheduler(
        **BETAS,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    s.set_timesteps(4)
    y = x.clone()
    for t in s.timesteps:
        emb = torch.tensor([0.2, -0.1], dtype=y.dtype).reshape(-1, 1, 1, 1)
        e = omega * (fake_eps(y, int(t)) + emb) + (1 - omega) * fake_eps(y, int(t))
        y = s.step(e, t, y).prev_sample
    assert float((out - 2 * y.double()).abs().max()) <= 1e-4 * float((2 * y).abs().max())


# ==================================================================================================
# 9. the has_prev mask
# ==================================================================================================


def test_has_prev_mixes_first_and_second_order_per_sample(sched):
    x = noise((3, 2, 2, 2), seed=1)
    t_prev, t, t_next = 999, 749, 499
    x0 = sched.x0_from_eps(x, fake_eps(x, t), t)
    x0_prev = noise((3, 2, 2, 2), seed=2)
    solver = DPMSolverPP2M()
    first = DDIMSolver().step(sched, x, x0, t, t_next)
    second = solver.step(sched, x, x0, t, t_next, x0_prev=x0_prev, t_prev=t_prev)  # no mask: all second order
    assert not torch.allclose(first, second)
    mixed = solver.step(sched, x, x0, t, t_next, x0_prev=x0_prev, t_prev=t_prev, has_prev=torch.tensor([True, False, True]))
    torch.testing.assert_close(mixed[0], second[0], rtol=0, atol=0)
    torch.testing.assert_close(mixed[1], first[1], rtol=0, atol=0)
    torch.testing.assert_close(mixed[2], second[2], rtol=0, atol=0)
    none = solver.step(sched, x, x0, t, t_next, x0_prev=x0_prev, t_prev=t_prev, has_prev=torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(none, first, rtol=0, atol=0)
    # no history at all, or the final step onto the clean state: first order
    torch.testing.assert_close(solver.step(sched, x, x0, t, t_next), first, rtol=0, atol=0)
    last = solver.step(sched, x, x0, 249, CLEAN, x0_prev=x0_prev, t_prev=499, has_prev=torch.ones(3, dtype=torch.bool))
    assert torch.equal(last, x0)

    # the second-order result by hand (Algorithm 2), sample 0
    ac = lambda s: float(sched.alphas_cumprod(s))  # noqa: E731
    lam = lambda s: 0.5 * math.log(ac(s) / (1 - ac(s)))  # noqa: E731
    h, h_prev = lam(t_next) - lam(t), lam(t) - lam(t_prev)
    r = h_prev / h
    d = (1 + 1 / (2 * r)) * x0[0] - 1 / (2 * r) * x0_prev[0]
    hand = math.sqrt((1 - ac(t_next)) / (1 - ac(t))) * x[0] - math.sqrt(ac(t_next)) * (math.exp(-h) - 1) * d
    torch.testing.assert_close(mixed[0], hand, rtol=1e-10, atol=1e-10)


def test_teacher_target_mixed_starts_equal_per_sample_solves(sched):
    """FlashTrainer.teacher_target batches samples starting at different grid levels; each must equal its
    own solve down the K-grid (first order at its own first step, second order after)."""
    from flashbench.method.trainer import FlashTrainer

    k = 8
    trainer = FlashTrainer.__new__(FlashTrainer)
    trainer.teacher = SimpleNamespace(schedule=sched, eps=lambda x, t, c, student: fake_eps(x, t) + c["emb"].reshape(-1, 1, 1, 1))
    trainer.cfg = SimpleNamespace(num_timesteps=k)
    trainer.accelerator = SimpleNamespace(autocast=nullcontext)
    trainer.solver = DPMSolverPP2M()

    b = 4
    z = noise((b, 2, 2, 2), seed=6)
    start = torch.tensor([8, 3, 5, 1])
    cond = {"emb": torch.tensor([0.1, 0.2, -0.1, 0.0], dtype=torch.float64)}
    uncond = {"emb": torch.zeros(b, dtype=torch.float64)}
    omega = torch.tensor([3.0, 5.0, 7.0, 2.0], dtype=torch.float64)
    out, nfe = trainer.teacher_target(z, start, cond, uncond, omega)
    assert nfe == pytest.approx(2 * float(start.sum()) / b)

    ac = lambda s: float(sched.alphas_cumprod(s))  # noqa: E731
    for n in range(b):
        # independent per-sample solve, Algorithm 2 written out with python floats
        grid = [int(sched.grid_timestep(j, k)) for j in range(int(start[n]), -1, -1)]
        x, q_prev, s_prev = z[n : n + 1].clone(), None, None
        for s, t in zip(grid[:-1], grid[1:]):
            e = float(omega[n]) * (fake_eps(x, s) + float(cond["emb"][n])) + (1 - float(omega[n])) * fake_eps(x, s)
            q = (x - math.sqrt(1 - ac(s)) * e) / math.sqrt(ac(s))
            if t == CLEAN:
                x = q
            elif q_prev is None:
                x = math.sqrt(ac(t)) * q + math.sqrt(1 - ac(t)) * e
            else:
                lam = lambda u: 0.5 * math.log(ac(u) / (1 - ac(u)))  # noqa: E731
                h, h_prev = lam(t) - lam(s), lam(s) - lam(s_prev)
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * q - 1 / (2 * r) * q_prev
                x = math.sqrt((1 - ac(t)) / (1 - ac(s))) * x - math.sqrt(ac(t)) * (math.exp(-h) - 1) * d
            q_prev, s_prev = q, s
        torch.testing.assert_close(out[n : n + 1], x, rtol=1e-10, atol=1e-10, msg=f"sample {n}")


def test_guided_eps_used_by_teacher_target_is_batched(sched):
    """Sanity: the guided eps of the fake teacher above equals the hand combination."""
    x = noise((2, 1, 2, 2), seed=8)
    c = {"emb": torch.tensor([0.5, -0.5], dtype=torch.float64)}
    u = {"emb": torch.zeros(2, dtype=torch.float64)}
    fn = lambda xx, tt, cc: fake_eps(xx, tt) + cc["emb"].reshape(-1, 1, 1, 1)  # noqa: E731
    got = guided_eps(fn, x, torch.tensor([499, 499]), c, u, torch.tensor([3.0, 3.0], dtype=torch.float64))
    expected = fake_eps(x, 499) + 3.0 * c["emb"].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(got, expected)
