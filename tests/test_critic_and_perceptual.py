"""Training-side choices where the authors' code pins down what the paper leaves open (issue 13): the WGAN
critic's weight clipping, run by the trainer, and the LPIPS distillation's centre-crop decode on a tiny VAE."""
from __future__ import annotations

import pytest
import torch

from flashbench.config import ComponentSpec, TrainConfig
from flashbench.method import losses as L

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = TrainConfig(
    teacher=ComponentSpec("toy-digits"), dataset=ComponentSpec("toy-digits"), num_timesteps=8, phase_length=1,
    iterations=4, batch_size=2, learning_rate=1e-2, disc_learning_rate=1e-2, guidance_min=1.5, guidance_max=3,
    trackers=(),
)


@pytest.fixture(scope="module")
def toy(components):
    return {
        "teacher": components.get("teacher", "toy-digits").build({}, device="cpu"),
        "dataset": components.get("dataset", "toy-digits").build({}),
        "conditioning": components.get("conditioning", "text").build({}),
        "solver": components.get("solver", "ddim").build({}),
        "timesteps": components.get("timesteps", "flash").build({}, num_timesteps=8, phase_length=1, num_phases=4),
        "components": components,
    }


def _critic_weight_bounds(toy, gan, name, steps=4):
    """Train ``steps`` steps with ``gan``; the largest |parameter| of the head each time the critic's loss is
    evaluated (after the trainer's pre-critic hook), and after the last update."""
    from flashbench.method.trainer import FlashTrainer

    torch.manual_seed(0)
    trainer = FlashTrainer(toy["teacher"], toy["conditioning"], toy["solver"], toy["timesteps"], CFG,
                           distil=L.MSEDistillation(), gan=gan, dmd=None, adapter_name=name, seed=0)
    seen = []
    critic = gan.discriminator

    def spy(real, fake):
        seen.append(max(float(p.detach().abs().max()) for p in trainer.head.parameters()))
        return critic(real, fake)

    gan.discriminator = spy
    try:
        trainer.train(toy["dataset"], steps, seed=0, progress=False)
        return seen, max(float(p.detach().abs().max()) for p in trainer.head.parameters())
    finally:
        trainer.close()


def test_wgan_critic_weights_stay_inside_the_clip_while_training(toy):
    gan = toy["components"].get("loss", "wgan").build({}, device="cpu")
    assert gan.clip == 0.01  # the authors' default
    seen, last = _critic_weight_bounds(toy, gan, "wgan-clipped")
    assert len(seen) == 4 and max(seen) <= 0.01
    # after the last Adam step (lr 1e-2 here) the weights are at most one step outside, clipped again next step
    assert last <= 0.01 + 1.5e-2


def test_wgan_clip_zero_is_an_unconstrained_critic(toy):
    gan = toy["components"].get("loss", "wgan").build({"clip": 0}, device="cpu")
    seen, _ = _critic_weight_bounds(toy, gan, "wgan-free", steps=1)
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
    (a, b), = distance.seen
    assert a.shape == b.shape == (2, 3, *decoded)
    assert float(a.abs().max()) <= 1.0 and float(b.abs().max()) <= 1.0
    # the centre window, decoded: rows (H - 64) // 2 onwards, columns likewise (each side capped at the latents')
    h, w = shape[-2:]
    top, left = (h - min(64, h)) // 2, (w - min(64, w)) // 2
    window = student[..., top:top + min(64, h), left:left + min(64, w)]
    unclamped = decode(window)
    assert float(unclamped.abs().max()) > 1.0  # so the clamp above did something
    torch.testing.assert_close(a, unclamped.clamp(-1, 1))
    assert torch.isfinite(loss)


def test_lpips_full_image_option(tiny_vae, components):
    decode = lambda z: tiny_vae.decode(z).sample  # noqa: E731
    student, teacher = _latents((1, 4, 80, 72), 3), _latents((1, 4, 80, 72), 4)
    distance = _Recorder()
    L.PerceptualDistillation(distance, crop=0, clamp=False)(student, teacher, decode)
    (a, _), = distance.seen
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
