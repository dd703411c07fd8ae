"""The few-step samplers (``eval.sampler``) against diffusers' schedulers of the same name, on identical
inputs: the same initial noise, the same per-step noise (one CPU generator, drawn in the same order), a fake
network whose output is a fixed function of (x, t). Tolerance 1e-5 in float32."""

from __future__ import annotations

import pytest
import torch

from flashbench.method.noise import RectifiedFlow, VPEpsilon, VPV
from flashbench.method.samplers import (
    FlashSampler,
    LCMSampler,
    TCDSampler,
    TrailingEulerSampler,
    consistency_timesteps,
)
from flashbench.method.schedule import NoiseSchedule

BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def fake_out(x: torch.Tensor, t) -> torch.Tensor:
    t = float(t)
    return torch.tanh(0.3 * x) + 0.05 * t / 1000 * torch.sin(x)


@pytest.fixture(scope="module")
def alphas_cumprod():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**BETAS).alphas_cumprod.clone()


@pytest.fixture(scope="module")
def vp(alphas_cumprod):
    return VPEpsilon(NoiseSchedule(alphas_cumprod))


def initial(shape=(2, 4, 8, 8), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def run_ours(sampler, process, x, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    ts = sampler.timesteps(process, steps)
    estimate = x
    for k, t in enumerate(ts):
        x, estimate = sampler.step(process, x, fake_out(x, t), t, ts[k + 1] if k + 1 < len(ts) else None, g)
    return ts, estimate


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_lcm_matches_diffusers_lcm_scheduler(alphas_cumprod, vp, steps):
    from diffusers import LCMScheduler

    sch = LCMScheduler(**BETAS)
    sch.set_timesteps(steps)
    x = initial()
    g = torch.Generator().manual_seed(1)
    latents, denoised = x.clone(), None
    for t in sch.timesteps:
        latents, denoised = sch.step(fake_out(latents, t), t, latents, generator=g, return_dict=False)
    ts, ours = run_ours(LCMSampler(), vp, x, steps)
    assert ts == [int(t) for t in sch.timesteps]
    torch.testing.assert_close(ours, denoised, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 4, 6])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_tcd_matches_diffusers_tcd_scheduler(alphas_cumprod, vp, steps, gamma):
    from diffusers import TCDScheduler

    sch = TCDScheduler(**BETAS)
    sch.set_timesteps(steps)
    x = initial()
    g = torch.Generator().manual_seed(1)
    latents = x.clone()
    for t in sch.timesteps:
        latents = sch.step(fake_out(latents, t), t, latents, eta=gamma, generator=g).prev_sample
    ts, ours = run_ours(TCDSampler(gamma), vp, x, steps)
    assert ts == [int(t) for t in sch.timesteps]
    torch.testing.assert_close(ours, latents, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_trailing_euler_matches_diffusers_euler_trailing(alphas_cumprod, vp, steps):
    """SDXL-Lightning's published sampler: EulerDiscreteScheduler with trailing spacing, whose sigma-space
    latents are x_t / alpha_t (initial noise x init_noise_sigma, model input scaled back)."""
    from diffusers import EulerDiscreteScheduler

    sch = EulerDiscreteScheduler(**BETAS, timestep_spacing="trailing")
    sch.set_timesteps(steps)
    x = initial()
    latents = x * sch.init_noise_sigma
    for t in sch.timesteps:
        latents = sch.step(fake_out(sch.scale_model_input(latents, t), t), t, latents).prev_sample
    # with trailing spacing diffusers starts from noise x sigma_max (not x sqrt(sigma_max^2 + 1)): in VP terms
    # x_T = sqrt(1 - alpha_T^2) noise = 0.9977 noise; the same start for ours, the steps are what is compared
    start = x * sch.init_noise_sigma / (sch.sigmas[0] ** 2 + 1) ** 0.5
    ts, ours = run_ours(TrailingEulerSampler(), vp, start, steps)
    assert ts == [int(t) for t in sch.timesteps]
    torch.testing.assert_close(ours, latents, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_flow_samplers_match_flow_match_euler(steps, stochastic):
    """On rectified flow: ``trailing-euler`` is FlowMatchEulerDiscreteScheduler's Euler step, ``flash`` its
    stochastic sampling (x0 re-noised to the next sigma), on the shifted trailing sigmas."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    process = RectifiedFlow(shift=3.0)
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=stochastic)
    sch.set_timesteps(sigmas=[1 - i / steps for i in range(steps)])
    x = initial()
    g = torch.Generator().manual_seed(1)
    latents = x.clone()
    for t in sch.timesteps:
        latents = sch.step(fake_out(latents, t), t, latents, generator=g).prev_sample
    sampler = FlashSampler() if stochastic else TrailingEulerSampler()
    ts, ours = run_ours(sampler, process, x, steps)
    torch.testing.assert_close(torch.tensor(ts, dtype=torch.float32), sch.timesteps.float(), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(ours, latents, atol=1e-5, rtol=1e-5)


def test_timestep_rules():
    assert consistency_timesteps(4) == [999, 759, 499, 259]
    assert consistency_timesteps(1) == [999] and consistency_timesteps(2) == [999, 499]
    assert consistency_timesteps(4, original_steps=100) == [999, 749, 499, 249]
    for bad in (0, 51):
        with pytest.raises(ValueError, match=r"steps must be in \[1, 50\]"):
            consistency_timesteps(bad)


@pytest.mark.parametrize("sampler", [LCMSampler(), TCDSampler()])
def test_lcm_and_tcd_refuse_a_flow_teacher_in_one_line(sampler):
    with pytest.raises(ValueError, match=r"defined on a discrete variance-preserving schedule; the teacher's noise process is") as e:
        sampler.timesteps(RectifiedFlow(shift=3.0), 4)
    assert "\n" not in str(e.value)


def test_samplers_read_the_output_through_the_process(alphas_cumprod):
    """On a v-prediction teacher the same samplers run (x0 and eps come from the process)."""
    process = VPV(NoiseSchedule(alphas_cumprod))
    for sampler in (FlashSampler(), TrailingEulerSampler(), LCMSampler(), TCDSampler()):
        _, out = run_ours(sampler, process, initial(), 4)
        assert torch.isfinite(out).all()


def test_the_study_names_a_sampler_per_variant(tmp_path):
    """eval.sampler is checked like every component field: a typo is one located line with a suggestion."""
    import tomllib

    import tomli_w

    from flashbench.errors import StudyError
    from flashbench.study import load_study

    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    data = tomllib.loads((root / "studies" / "ablation_losses.toml").read_text())
    data["variants"][0]["eval"] = {"sampler": "lcn"}
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(data))
    with pytest.raises(StudyError) as e:
        load_study(path, scale="toy")
    assert "variants[0].eval.sampler: unknown sampler 'lcn'; did you mean 'lcm'?" in str(e.value)
    data["variants"][0]["eval"] = {"sampler": {"name": "tcd", "gamma": 0.5}}
    path.write_text(tomli_w.dumps(data))
    study = load_study(path, scale="toy")
    v = next(v for v in study.variants if v.name == data["variants"][0]["name"])
    assert v.eval.sampler.name == "tcd" and v.eval.sampler.options == {"gamma": 0.5}
    assert all(x.eval.sampler.name == "flash" for x in study.variants if x.name != v.name)


def test_a_third_party_sampler_is_registered_and_runs(vp):
    """A sampler added through the ``register_samplers`` hook, as a third party's plugin module would."""
    import pluggy

    from flashbench import PROJECT_NAME, hookimpl, hookspecs
    from flashbench.method.samplers import FewStepSampler
    from flashbench.plugins import collect_components

    class Deterministic(TrailingEulerSampler):
        name = "mine"

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register("mine", lambda config: Deterministic(), description="a third party's sampler")

    class NotASampler:
        @hookimpl
        def register_samplers(self, register):
            register("broken", lambda config: object(), description="returns the wrong thing")

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin(), name="third-party")
    pm.register(NotASampler(), name="broken-plugin")
    components = collect_components(pm)
    sampler = components.get("sampler", "mine").build({})
    assert isinstance(sampler, FewStepSampler)
    _, ours = run_ours(sampler, vp, initial(), 2)
    _, reference = run_ours(TrailingEulerSampler(), vp, initial(), 2)
    assert torch.equal(ours, reference)
    with pytest.raises(
        TypeError,
        match=r"sampler 'broken' \(plugin broken-plugin\): its factory returned builtins.object, which is not a "
        r"flashbench.method.samplers.FewStepSampler",
    ):
        components.get("sampler", "broken").build({})
