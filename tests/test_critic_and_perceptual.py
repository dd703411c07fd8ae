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
