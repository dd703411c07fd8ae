"""The noise processes (flashbench.method.noise): parametrisations round-trip on random tensors and timesteps,
grids and shifts agree with diffusers, and the teacher solves equal diffusers' schedulers on identical
timesteps (FlowMatchEuler on rectified flow, DDIM / DPM-Solver++ with v-prediction on VP).

The "models" are fake linear functions of (x, t); tensors are tiny and float64 unless diffusers works in float32.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flashbench.method.noise import RectifiedFlow, VPEpsilon, VPV, flux_mu, vp_process
from flashbench.method.sampling import student_sample, teacher_sample
from flashbench.method.schedule import CLEAN, NoiseSchedule
from flashbench.method.solvers import DDIMSolver, DPMSolverPP2M, FlowEulerSolver

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def _ddpm_alphas_cumprod():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**BETAS).alphas_cumprod.clone()


AC = _ddpm_alphas_cumprod()
SCHED = NoiseSchedule(AC)
PROCESSES = {
    "vp-epsilon": VPEpsilon(SCHED),
    "vp-v": VPV(SCHED),
    "flow": RectifiedFlow(),
    "flow-shift3": RectifiedFlow(shift=3.0),
    "flow-flux": RectifiedFlow(mu=flux_mu(1024)),
}


def tensors(seed: int, shape=(3, 2, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


# ==================================================================================================
# 1. parametrisations round-trip
# ==================================================================================================


@pytest.mark.parametrize("name", list(PROCESSES))
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), index=st.lists(st.integers(0, 999), min_size=3, max_size=3))
def test_parametrisations_round_trip(name, seed, index):
    """From (x0, eps) at training timesteps t: x_t, then eps, v and flow velocity each give back x0 and eps."""
    process = PROCESSES[name]
    x0, eps = tensors(seed)
    t = process.training_timestep(torch.tensor(index))
    xt = process.add_noise(x0, eps, t)
    a, s = process.alpha(t, xt), process.sigma(t, xt)
    torch.testing.assert_close(xt, a * x0 + s * eps, rtol=0, atol=0)
    tol = dict(rtol=1e-9, atol=1e-9)
    v = process.v_from(x0, eps, t)
    torch.testing.assert_close(v, a * eps - s * x0, rtol=0, atol=0)
    u = process.velocity_from(x0, eps)
    torch.testing.assert_close(u, eps - x0, rtol=0, atol=0)
    for to_x0, to_eps, out in ((process.x0_from_v, process.eps_from_v, v), (process.x0_from_velocity, process.eps_from_velocity, u)):
        torch.testing.assert_close(to_x0(xt, out, t), x0, **tol)
        torch.testing.assert_close(to_eps(xt, out, t), eps, **tol)
    # eps <-> x0 divide by alpha and sigma: away from full noise, where alpha ~ 0 (flow: exactly 0)
    torch.testing.assert_close(process.eps_from_x0(xt, x0, t), eps, **tol)
    if float(a.min()) > 0.05:
        torch.testing.assert_close(process.x0_from_eps(xt, eps, t), x0, rtol=1e-8, atol=1e-8)
    # the network's own parametrisation
    own = process.output_from(x0, eps, t)
    torch.testing.assert_close(process.to_x0(xt, own, t), x0, rtol=1e-8, atol=1e-8 / max(float(a.min()), 1e-3))
    torch.testing.assert_close(process.to_eps(xt, own, t), eps, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["flow", "flow-shift3", "flow-flux"])
def test_flow_is_exact_at_both_ends(name):
    """sigma = 1 is pure noise (alpha = 0: x0 = x - u needs no division); the clean state is x0 itself."""
    process = PROCESSES[name]
    x0, eps = tensors(1)
    top = process.grid_timestep(8, 8).item()
    assert top == 1000.0
    assert torch.equal(process.add_noise(x0, eps, top), eps)
    torch.testing.assert_close(process.to_x0(eps, eps - x0, top), x0, rtol=0, atol=1e-15)
    assert process.grid_timestep(0, 8).item() == process.clean == 0.0
    assert torch.equal(process.add_noise(x0, eps, process.clean), x0)
    assert float(process.lambda_(process.clean)) == math.inf and float(process.lambda_(top)) == -math.inf


def test_the_prediction_picks_the_conversion():
    """Each process reads its network's output in its own parametrisation (the same tensor, three x0s)."""
    x0, eps = tensors(2)
    t = torch.tensor([999, 499, 30])
    xt = SCHED.add_noise(x0, eps, t)
    out = eps  # an eps network: VP-epsilon reads it right, VP-v does not
    torch.testing.assert_close(PROCESSES["vp-epsilon"].to_x0(xt, out, t), x0, rtol=1e-8, atol=1e-8)
    assert not torch.allclose(PROCESSES["vp-v"].to_x0(xt, out, t), x0, atol=1e-2)
    assert vp_process(SCHED, "v_prediction").prediction == "v_prediction"
    with pytest.raises(ValueError, match="sample"):
        vp_process(SCHED, "sample")


def test_vp_epsilon_defers_to_the_schedule_bit_for_bit():
    process = PROCESSES["vp-epsilon"]
    x0, eps = tensors(3)
    t = torch.tensor([999, 249, 0])
    assert torch.equal(process.add_noise(x0, eps, t), SCHED.add_noise(x0, eps, t))
    xt = SCHED.add_noise(x0, eps, t)
    assert torch.equal(process.to_x0(xt, eps, t), SCHED.x0_from_eps(xt, eps, t))
    assert process.to_eps(xt, eps, t) is eps
    assert process.sampling_timesteps(4) == SCHED.sampling_timesteps(4) == [999, 749, 499, 249]
    assert process.continuous_timestep(0.01) == SCHED.continuous_timestep(0.01) == 9
    assert torch.equal(process.grid_timestep(torch.arange(9), 8), SCHED.grid_timestep(torch.arange(9), 8))
    idx = torch.tensor([0, 5, 999])
    assert process.training_timestep(idx) is idx
    assert process.clean == CLEAN


# ==================================================================================================
# 2. flow grids and shifts against diffusers
# ==================================================================================================


def flow_scheduler(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config({"num_train_timesteps": 1000, **config})


def test_flux_mu_is_diffusers_calculate_shift():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for n in (256, 1024, 4096, 6000):
        assert flux_mu(n) == pytest.approx(calculate_shift(n, 256, 4096, 0.5, 1.15), abs=1e-12)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_training_table_is_the_schedulers(shift):
    """DMD's timesteps: index i -> the scheduler's training timestep sigma((i + 1) / T) T."""
    s = flow_scheduler(shift=shift)
    ours = RectifiedFlow(shift=shift).training_timestep(torch.arange(1000))
    torch.testing.assert_close(ours, s.timesteps.flip(0), rtol=0, atol=2e-3)


@pytest.mark.parametrize(
    "config, seq_len", [({"shift": 3.0}, None), ({"shift": 1.0}, None), ({"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15}, 1024)]
)
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_flow_grid_is_the_schedulers_on_the_same_unshifted_times(config, seq_len, steps):
    """Our n-step timesteps are diffusers' ``set_timesteps(sigmas=[1, (n-1)/n, ..., 1/n])`` after its shift."""
    s = flow_scheduler(**config)
    process = RectifiedFlow.from_scheduler_config(s.config, image_seq_len=seq_len)
    u = [i / steps for i in range(steps, 0, -1)]
    kw = {"mu": flux_mu(seq_len)} if seq_len else {}
    s.set_timesteps(sigmas=u, **kw)
    assert process.sampling_timesteps(steps) == pytest.approx(s.timesteps.tolist(), abs=2e-3)
    assert process.sampling_timesteps(4) != RectifiedFlow().sampling_timesteps(4) or config.get("shift") == 1.0


def test_shift_moves_the_grid_towards_noise():
    plain, sd3 = RectifiedFlow(), RectifiedFlow(shift=3.0)
    assert plain.sampling_timesteps(4) == [1000.0, 750.0, 500.0, 250.0]
    assert sd3.sampling_timesteps(4) == pytest.approx([1000.0, 900.0, 750.0, 500.0], abs=1e-3)  # 3u / (1 + 2u)
    assert sd3.continuous_timestep(0.5) == pytest.approx(750.0, abs=1e-3)
    with pytest.raises(ValueError, match="image_seq_len"):
        RectifiedFlow.from_scheduler_config({"use_dynamic_shifting": True})


# ==================================================================================================
# 3. teacher solves against diffusers' schedulers
# ==================================================================================================


def fake_output(x: torch.Tensor, t) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype)
    if t.ndim == 1:
        t = t.reshape(-1, *([1] * (x.ndim - 1)))
    return 0.3 * x + 0.02 * t / 1000 - 0.1


def run_ours(solver, process, x, steps, out_fn=fake_output):
    ts = process.sampling_timesteps(steps) + [process.clean]
    x0_prev = t_prev = None
    traj = []
    for t, t_next in zip(ts[:-1], ts[1:]):
        x0 = process.to_x0(x, out_fn(x, t), t)
        x = solver.step(process, x, x0, t, t_next, x0_prev=x0_prev, t_prev=t_prev)
        x0_prev, t_prev = x0, t
        traj.append(x)
    return traj


def diffusers_flow_euler(x, steps, config, mu=None):
    s = flow_scheduler(**config)
    s.set_timesteps(sigmas=[i / steps for i in range(steps, 0, -1)], **({"mu": mu} if mu is not None else {}))
    traj = []
    for t in s.timesteps:
        x = s.step(fake_output(x, float(t)), t, x).prev_sample
        traj.append(x)
    return traj


@pytest.mark.parametrize("config, seq_len", [({"shift": 3.0}, None), ({"shift": 1.0}, None), ({"use_dynamic_shifting": True}, 4096)])
@pytest.mark.parametrize("steps", [1, 2, 4, 8, 28])
@pytest.mark.parametrize("solver", [FlowEulerSolver(), DDIMSolver()], ids=["flow-euler", "ddim"])
def test_flow_teacher_solve_matches_flow_match_euler(config, seq_len, steps, solver):
    """flow-euler (and DDIM, the same step in data-prediction form) equal FlowMatchEulerDiscreteScheduler."""
    x = tensors(7)[0].float()
    process = RectifiedFlow.from_scheduler_config(flow_scheduler(**config).config, image_seq_len=seq_len)
    ours = run_ours(solver, process, x, steps)
    ref = diffusers_flow_euler(x, steps, config, mu=flux_mu(seq_len) if seq_len else None)
    assert len(ours) == len(ref) == steps
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # sharp: the unshifted grid gives another few-step sample, 10x beyond the tolerance (28 steps of a
    # linear fake model converge to the ODE's solution on any grid, so only few steps tell grids apart)
    if config.get("shift", 0) != 1.0 and 1 < steps <= 8:
        other = run_ours(solver, RectifiedFlow(), x, steps)[-1]
        assert float((other - ref[-1]).abs().max()) > 1e-4


def test_flow_euler_refuses_a_vp_process():
    x = tensors(0)[0]
    with pytest.raises(TypeError, match="rectified-flow"):
        FlowEulerSolver().step(PROCESSES["vp-epsilon"], x, x, 999, 749)
    assert not FlowEulerSolver().supports(PROCESSES["vp-v"]) and FlowEulerSolver().supports(RectifiedFlow())


def test_trainer_refuses_a_solver_that_cannot_integrate_the_teacher():
    from flashbench.config import TrainConfig
    from flashbench.method.trainer import FlashTrainer

    teacher = SimpleNamespace(schedule=SCHED)  # a duck-typed VP-epsilon teacher
    with pytest.raises(ValueError, match="flow-euler.*vp-epsilon"):
        FlashTrainer(teacher, None, FlowEulerSolver(), None, TrainConfig(), distil=None, gan=None, dmd=None, adapter_name="x", seed=0)


def diffusers_ddim_v(x, steps, out_fn):
    from diffusers import DDIMScheduler

    s = DDIMScheduler(**BETAS, set_alpha_to_one=True, timestep_spacing="trailing", clip_sample=False, prediction_type="v_prediction")
    s.alphas_cumprod = AC.double()
    s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    s.set_timesteps(steps)
    traj = []
    for t in s.timesteps:
        x = s.step(out_fn(x, int(t)), int(t), x, eta=0.0).prev_sample
        traj.append(x)
    return [int(t) for t in s.timesteps], traj


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_vp_v_teacher_solve_matches_ddim_v_prediction(steps):
    x = tensors(4)[0]
    process = PROCESSES["vp-v"]
    ours = run_ours(DDIMSolver(), process, x, steps)
    ts, ref = diffusers_ddim_v(x, steps, fake_output)
    assert ts == process.sampling_timesteps(steps)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # sharp: the same output read as epsilon gives another trajectory
    eps_read = run_ours(DDIMSolver(), PROCESSES["vp-epsilon"], x, steps)[-1]
    assert not torch.allclose(eps_read, ref[-1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("steps", [4, 8])
def test_vp_v_dpm_solver_matches_diffusers(steps):
    from diffusers import DPMSolverMultistepScheduler

    x = tensors(5)[0]
    ours = run_ours(DPMSolverPP2M(), PROCESSES["vp-v"], x, steps)
    s = DPMSolverMultistepScheduler(
        **BETAS,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        lower_order_final=True,
        final_sigmas_type="zero",
        prediction_type="v_prediction",
    )
    s.set_timesteps(steps)
    y = x.clone()
    for t in s.timesteps:
        y = s.step(fake_output(y, int(t)), t, y).prev_sample
    # diffusers computes each update in float32 (as in test_solvers.py), hence 1e-4
    assert float((ours[-1] - y.double()).abs().max()) <= 1e-4 * float(y.abs().max())


# ==================================================================================================
# 4. the samplers through a teacher's noise process
# ==================================================================================================


class FakeFlowTeacher:
    """A duck-typed rectified-flow teacher: velocity = fake_output (+ a conditioning offset)."""

    def __init__(self, process):
        self.noise_process = process
        self.calls = []

    def output(self, x, t, cond, *, student, module=None):
        assert t.dtype == torch.float32 and t.shape == (x.shape[0],)
        self.calls.append((student, t.tolist()))
        return fake_output(x, t) + cond["emb"].reshape(-1, 1, 1, 1).to(x.dtype)

    def merged_student(self):
        from contextlib import nullcontext

        return nullcontext()

    def decode(self, z):
        return z


def test_flow_teacher_sample_with_cfg_matches_flow_match_euler():
    process = RectifiedFlow(shift=3.0)
    teacher = FakeFlowTeacher(process)
    x = tensors(6, (2, 2, 3, 3))[0].float()
    cond, uncond = {"emb": torch.tensor([0.2, -0.1])}, {"emb": torch.zeros(2)}
    out = teacher_sample(teacher, FlowEulerSolver(), cond, uncond, x, 4, 4.0)
    s = flow_scheduler(shift=3.0)
    s.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25])
    y = x.clone()
    for t in s.timesteps:
        y = s.step(fake_output(y, float(t)) + 4.0 * cond["emb"].reshape(-1, 1, 1, 1), t, y).prev_sample
    torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)


def test_flow_student_sample_renoises_its_x0_at_the_next_sigma():
    """The authors' flash flow sampler: x0 = x - sigma u, then x = (1 - sigma') x0 + sigma' fresh noise."""
    process = RectifiedFlow(shift=3.0)
    teacher = FakeFlowTeacher(process)
    cond = {"emb": torch.tensor([0.3, 0.0])}
    noise = tensors(8, (2, 1, 2, 2))[0].float()
    out = student_sample(teacher, cond, noise, 2, torch.Generator().manual_seed(3))
    assert [c[1][0] for c in teacher.calls] == pytest.approx([1000.0, 750.0], abs=1e-3)
    # by hand
    g = torch.Generator().manual_seed(3)
    c = cond["emb"].reshape(-1, 1, 1, 1)
    x0 = noise - 1.0 * (fake_output(noise, 1000.0) + c)
    fresh = torch.randn(noise.shape, generator=g)
    x = 0.25 * x0 + 0.75 * fresh
    x0 = x - 0.75 * (fake_output(x, 750.0) + c)
    torch.testing.assert_close(out, x0, rtol=1e-6, atol=1e-6)
