"""Training-side choices where the authors' code pins down what the paper leaves open (issue 13): the WGAN
critic's weight clipping, run by the trainer, and the LPIPS distillation's centre-crop decode on a tiny VAE."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flashbench.config import ComponentSpec, TrainConfig
from flashbench.method import losses as L

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = TrainConfig(
    teacher=ComponentSpec("toy-digits"),
    dataset=ComponentSpec("toy-digits"),
    solver=ComponentSpec("ddim"),
    num_timesteps=8,
    phase_length=1,
    iterations=4,
    batch_size=2,
    learning_rate=1e-2,
    disc_learning_rate=1e-2,
    guidance_min=1.5,
    guidance_max=3,
    adv_loss=ComponentSpec("none"),
    dmd_loss=ComponentSpec("none"),
    trackers=(),
)  # MSE alone: each test names the other terms it trains with


@pytest.fixture(scope="module")
def toy(components):
    return {
        "teacher": components.get("teacher", "toy-digits").build({}, device="cpu"),
        "dataset": components.get("dataset", "toy-digits").build({}),
        "components": components,
    }


def _trainer(toy, cfg, name):
    from flashbench.training import build_trainer

    return build_trainer(cfg, toy["components"], teacher=toy["teacher"], seed=0, adapter_name=name)


def _critic_weight_bounds(toy, options, name, steps=4):
    """Train ``steps`` steps with the ``wgan`` loss of ``options``; the largest |parameter| of the head each time
    the critic's loss is evaluated (after the trainer's pre-critic hook), and after the last update."""
    from flashbench.training import TrainingLoop

    trainer = _trainer(toy, dataclasses.replace(CFG, adv_loss=ComponentSpec("wgan", options)), name)
    gan = trainer.gan
    seen = []
    critic = gan.discriminator

    def spy(real, fake):
        seen.append(max(float(p.detach().abs().max()) for p in trainer.head.parameters()))
        return critic(real, fake)

    gan.discriminator = spy
    try:
        TrainingLoop(trainer).run(toy["dataset"], steps, seed=0, progress=False)
        return seen, max(float(p.detach().abs().max()) for p in trainer.head.parameters())
    finally:
        trainer.close()


def test_wgan_critic_weights_stay_inside_the_clip_while_training(toy):
    assert toy["components"].get("loss", "wgan").build({}, device="cpu").clip == 0.01  # the authors' default
    seen, last = _critic_weight_bounds(toy, {}, "wgan-clipped")
    assert len(seen) == 4 and max(seen) <= 0.01
    # after the last Adam step (lr 1e-2 here) the weights are at most one step outside, clipped again next step
    assert last <= 0.01 + 1.5e-2


def test_wgan_clip_zero_is_an_unconstrained_critic(toy):
    seen, _ = _critic_weight_bounds(toy, {"clip": 0}, "wgan-free", steps=1)
    assert seen[0] > 0.1  # the head's initialisation (GroupNorm's weight is 1), untouched


def test_other_gan_losses_leave_the_head_alone():
    head = torch.nn.Linear(3, 1)
    with torch.no_grad():
        head.weight.fill_(2.0)
    for gan in (L.LSGAN(), L.Hinge()):
        gan.before_critic_step(head)
        assert torch.all(head.weight == 2.0)
    L.WGAN(clip=0.5).before_critic_step(head)
    assert torch.all(head.weight == 0.5)


@pytest.mark.parametrize("loss", ["lsgan", "hinge", "wgan"])
def test_head_option_picks_the_discriminator_the_trainer_trains(toy, loss):
    from flashbench.method.discriminator import AuthorsHead, DiscriminatorHead
    from flashbench.training import TrainingLoop

    component = toy["components"].get("loss", loss)
    for options, cls in (({}, DiscriminatorHead), ({"head": "code"}, AuthorsHead)):
        trainer = _trainer(toy, dataclasses.replace(CFG, adv_loss=ComponentSpec(loss, options)), f"{loss}-head")
        try:
            assert type(trainer.head) is cls
            before = [p.detach().clone() for p in trainer.head.parameters()]
            TrainingLoop(trainer).run(toy["dataset"], 2, seed=0, progress=False)  # phase 1 of CFG: the generator uses the head too
            assert any(not torch.equal(a, p) for a, p in zip(before, trainer.head.parameters()))
        finally:
            trainer.close()
    with pytest.raises(ValueError, match="head"):
        component.make_config({"head": "authors"})


@pytest.mark.parametrize("clip", [-0.01, float("nan"), "0.01", True])
def test_wgan_clip_must_be_a_number_at_least_zero(components, clip):
    with pytest.raises(ValueError, match="clip"):
        components.get("loss", "wgan").make_config({"clip": clip})


# --- LPIPS distillation: the centre 64 x 64 latent window, decoded and clamped ------------------------------------
@pytest.fixture(scope="module")
def tiny_vae():
    from diffusers import AutoencoderKL

    from flashbench_plugins.teachers import _sd_configs as cfg

    torch.manual_seed(0)
    return AutoencoderKL(**cfg.TINY_VAE).eval().requires_grad_(False)  # 2x: the image is twice the latents


class _Recorder:
    """A per-sample distance that keeps what it was given."""

    def __init__(self):
        self.seen = []

    def __call__(self, a, b):
        self.seen.append((a.detach().clone(), b.detach().clone()))
        return (a - b).pow(2).flatten(1).mean(1)


def _latents(shape, seed):
    # large latents: the tiny VAE's decode then leaves [-1, 1], as a real VAE's overshoots do
    return 8 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape, decoded", [((2, 4, 80, 72), (128, 128)), ((2, 4, 80, 48), (128, 96)), ((2, 4, 40, 40), (80, 80))])
def test_lpips_decodes_the_centre_64_latent_crop_clamped(tiny_vae, shape, decoded):
    decode = lambda z: tiny_vae.decode(z).sample  # noqa: E731
    student, teacher = _latents(shape, 1), _latents(shape, 2)
    distance = _Recorder()
    loss = L.PerceptualDistillation(distance)(student, teacher, decode)
    ((a, b),) = distance.seen
    assert a.shape == b.shape == (2, 3, *decoded)
    assert float(a.abs().max()) <= 1.0 and float(b.abs().max()) <= 1.0
    # the centre window, decoded: rows (H - 64) // 2 onwards, columns likewise (each side capped at the latents')
    h, w = shape[-2:]
    top, left = (h - min(64, h)) // 2, (w - min(64, w)) // 2
    window = student[..., top : top + min(64, h), left : left + min(64, w)]
    unclamped = decode(window)
    assert float(unclamped.abs().max()) > 1.0  # so the clamp above did something
    torch.testing.assert_close(a, unclamped.clamp(-1, 1))
    assert torch.isfinite(loss)


def test_lpips_full_image_option(tiny_vae, components):
    decode = lambda z: tiny_vae.decode(z).sample  # noqa: E731
    student, teacher = _latents((1, 4, 80, 72), 3), _latents((1, 4, 80, 72), 4)
    distance = _Recorder()
    L.PerceptualDistillation(distance, crop=0, clamp=False)(student, teacher, decode)
    ((a, _),) = distance.seen
    assert a.shape == (1, 3, 160, 144) and float(a.abs().max()) > 1.0
    config = components.get("loss", "lpips").make_config({})
    assert (config.crop, config.clamp) == (64, True)  # the authors' choice by default
    for bad in ({"crop": -1}, {"crop": 6.5}, {"crop": True}, {"clamp": "yes"}):
        with pytest.raises(ValueError):
            components.get("loss", "lpips").make_config(bad)


def test_lpips_toy_world_trains_through_the_clamp(components, toy):
    """The toy world (pixel space, 16 x 16, no VAE) is smaller than the window: decoded whole, clamped."""
    loss_fn = components.get("loss", "lpips").build({}, device="cpu", teacher=toy["teacher"])
    assert (loss_fn.crop, loss_fn.clamp) == (64, True)
    g = torch.Generator().manual_seed(0)
    student = (1.2 * torch.rand((2, 3, 16, 16), generator=g) * 2 - 1.2).requires_grad_(True)
    teacher = torch.rand((2, 3, 16, 16), generator=g) * 2 - 1
    loss = loss_fn(student, teacher, toy["teacher"].decode)
    (grad,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(loss) and float(loss) > 0
    inside = student.detach().abs() < 1
    assert float(grad[inside].abs().sum()) > 0 and torch.all(grad[~inside] == 0)  # no gradient through the clamp


# --- the LCM boundary condition on the student (the authors' code) -----------------------------------------------
def test_lcm_boundary_scalings_hand_values():
    from flashbench.method.schedule import lcm_boundary_scalings

    like = torch.zeros(4, 1, 2, 2, dtype=torch.float64)
    c_skip, c_out = lcm_boundary_scalings(torch.tensor([0, 31, 249, 999]), like)
    assert c_skip.shape == c_out.shape == (4, 1, 1, 1)
    # t = 0: the identity on z_t; t = 31: 0.25 / (310^2 + 0.25); t = 249: 0.25 / (2490^2 + 0.25)
    expected_skip = [1.0, 0.25 / (310.0**2 + 0.25), 0.25 / (2490.0**2 + 0.25), 0.25 / (9990.0**2 + 0.25)]
    expected_out = [0.0, 310 / (310.0**2 + 0.25) ** 0.5, 2490 / (2490.0**2 + 0.25) ** 0.5, 9990 / (9990.0**2 + 0.25) ** 0.5]
    torch.testing.assert_close(c_skip.flatten(), torch.tensor(expected_skip, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(c_out.flatten(), torch.tensor(expected_out, dtype=torch.float64), rtol=1e-12, atol=0)
    assert float(c_skip[1]) < 3e-6 and float(c_skip[2]) < 5e-8  # negligible on the grid, as the option's doc says


def test_lcm_boundary_option_reaches_the_students_prediction(toy, monkeypatch):
    """With ``lcm_boundary`` the student's z~0 is c_skip z_t + c_out x0: with scalings forced to (1, 0) the
    student predicts z_t itself, so the distillation loss is |z_t - target|^2, not the plain student's."""
    from flashbench.method import trainer as trainer_module

    seen = []

    def forced(t, like):
        seen.append(torch.as_tensor(t).clone())
        return torch.ones((), dtype=like.dtype), torch.zeros((), dtype=like.dtype)

    def distil_loss(lcm, name):
        trainer = _trainer(toy, dataclasses.replace(CFG, lcm_boundary=lcm), name)
        captured = {}
        mse = trainer.distil

        def spy(student_x0, teacher_x0, decode=None):
            captured["student"] = student_x0.detach().clone()
            return mse(student_x0, teacher_x0, decode)

        trainer.distil = spy
        try:
            batch = toy["dataset"].train_batch(__import__("numpy").random.default_rng(0), 2)
            trainer.step(batch, 0)
            return captured["student"]
        finally:
            trainer.close()

    plain = distil_loss(False, "lcm-off")
    real_scalings = trainer_module.lcm_boundary_scalings
    monkeypatch.setattr(trainer_module, "lcm_boundary_scalings", forced)
    pinned = distil_loss(True, "lcm-forced")
    assert len(seen) == 1 and not torch.allclose(pinned, plain)
    monkeypatch.setattr(trainer_module, "lcm_boundary_scalings", real_scalings)
    # the real scalings: on the K-grid (t >= 124 here) the boundary condition changes the prediction by < 1e-5
    with_lcm = distil_loss(True, "lcm-on")
    torch.testing.assert_close(with_lcm, plain, rtol=0, atol=1e-5)
    assert TrainConfig().lcm_boundary is False  # the paper's plain x0-parametrisation by default


# --- draws per batch, and the authors' phase counter ------------------------------------------------------


def _spy_step(toy, cfg, name, *, iteration=0):
    """One training step; what the teacher target and the DMD term were asked for (start indices, omegas)."""

    import numpy as np

    from flashbench.method import trainer as trainer_module

    trainer = _trainer(toy, cfg, name)
    seen = {}
    target = trainer.teacher_target

    def spy_target(z_t, start, cond, uncond, omega):
        seen["start"], seen["omega"] = start.clone(), omega.clone()
        return target(z_t, start, cond, uncond, omega)

    trainer.teacher_target = spy_target
    guided = trainer_module.guided_output

    def spy_guided(fn, x, t, cond, uncond, omega):
        seen["omega_dmd"] = omega.clone()
        return guided(fn, x, t, cond, uncond, omega)

    trainer_module.guided_output = spy_guided
    try:
        batch = toy["dataset"].train_batch(np.random.default_rng(0), 8)
        stats = trainer.step(batch, iteration)
        return seen, stats, trainer
    finally:
        trainer_module.guided_output = guided
        trainer.close()


def test_draws_per_sample_by_default_and_per_batch_as_the_authors(toy):
    cfg = dataclasses.replace(CFG, dmd_loss=ComponentSpec("dmd"), lambda_dmd=(0.5, 0.5, 0.5, 0.5))
    paper, _, _ = _spy_step(toy, cfg, "draws-paper")
    assert len(set(paper["omega"].tolist())) == 8 and torch.equal(paper["omega_dmd"], paper["omega"])
    code, _, _ = _spy_step(toy, dataclasses.replace(cfg, draws="per_batch"), "draws-code")
    assert len(set(code["omega"].tolist())) == 1 and len(set(code["start"].tolist())) == 1  # one of each per batch
    assert len(set(code["omega_dmd"].tolist())) == 1 and not torch.equal(code["omega_dmd"], code["omega"])  # DMD's own
    lo, hi = cfg.guidance_min, cfg.guidance_max
    assert lo <= float(code["omega"][0]) <= hi and lo <= float(code["omega_dmd"][0]) <= hi


def test_the_authors_phase_counter_switches_phases_twice_as_fast_with_a_discriminator(toy):
    cfg = dataclasses.replace(CFG, phase_length=10, adv_loss=ComponentSpec("lsgan"))
    _, by_batch, _ = _spy_step(toy, cfg, "phase-batches", iteration=15)
    calls = dataclasses.replace(cfg, phase_counting="optimizer_calls")
    _, by_calls, _ = _spy_step(toy, calls, "phase-calls", iteration=15)
    assert (by_batch.phase, by_calls.phase) == (1, 3)  # iteration 15 of phases of 10: 15 batches, 30 optimizer calls
    _, no_gan, _ = _spy_step(toy, dataclasses.replace(calls, adv_loss=ComponentSpec("none")), "phase-nogan", iteration=15)
    assert no_gan.phase == 1  # without a discriminator there is one optimizer call per batch
