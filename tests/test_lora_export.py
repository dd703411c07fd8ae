"""The exported student: a few Flash training steps (all three loss terms) on the toy teacher, ``save_lora``,
then diffusers' own ``load_lora_weights`` into a fresh pipeline over the bundled weights must reproduce the
in-memory student's samples, and the method's own few-step sampler must agree with the pipeline's.
"""

from __future__ import annotations

import math

import pytest
import torch

from flashbench.config import ComponentSpec, TrainConfig
from flashbench.method.sampling import student_sample

TIMESTEPS = [999, 749, 499, 249]
PROMPTS = ["a red digit one", "a green digit four", "a blue digit seven", "a magenta digit zero"]
ADAPTER = "export"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(components, tmp_path_factory):
    """(teacher with the trained adapter active, training summary, folder of the saved LoRA)."""
    from flashbench.training import TrainingLoop, build_trainer

    cfg = TrainConfig(
        teacher=ComponentSpec("toy-digits"),
        dataset=ComponentSpec("toy-digits"),
        num_timesteps=8,
        phase_length=2,
        iterations=8,
        batch_size=4,
        learning_rate=1e-2,
        guidance_min=1.5,
        guidance_max=3,
    )
    trainer = build_trainer(cfg, components, seed=0, adapter_name=ADAPTER)  # mse + lsgan + dmd
    teacher = trainer.teacher
    summary = TrainingLoop(trainer).run(components.get("dataset", "toy-digits").build({}), cfg.iterations, seed=0, progress=False)
    folder = teacher.save_lora(ADAPTER, tmp_path_factory.mktemp("export") / "lora")
    yield teacher, summary, folder
    trainer.close()


@pytest.fixture(scope="module")
def samples(components, trained):
    """Samples from the same generator seed: in-memory student pipeline, fresh plain pipeline, fresh pipeline
    with the exported LoRA loaded."""
    teacher, _, folder = trained

    def draw(pipe):
        return pipe(PROMPTS, timesteps=TIMESTEPS, generator=torch.Generator().manual_seed(0))

    in_memory = draw(teacher.pipeline())
    fresh = components.get("teacher", "toy-digits").build({}, device="cpu").pipeline()
    plain = draw(fresh)
    fresh.load_lora_weights(str(folder))
    reloaded = draw(fresh)
    return {"in_memory": in_memory, "plain": plain, "reloaded": reloaded}


def test_all_loss_terms_by_the_last_phase(trained):
    _, summary, _ = trained
    last = summary.history[-1]
    assert last["step"] == 7 and last["phase"] == 3
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in last, f"{term} missing from the last phase's stats {last}"
        assert math.isfinite(last[term]), f"{term} = {last[term]}"
    first = summary.history[0]
    assert first["phase"] == 0 and "adv" not in first and "dmd" not in first  # warm-up: lambda_adv = lambda_dmd = 0
    assert "disc" in first  # the discriminator trains during warm-up too


def test_saved_lora_is_a_diffusers_file(trained):
    _, _, folder = trained
    from safetensors.torch import load_file

    state = load_file(str(folder / "pytorch_lora_weights.safetensors"))
    assert state and all(k.startswith("unet.") for k in state)
    assert any(".attn1.to_q.lora_A." in k for k in state) and any(".resnets.0.conv1.lora_B." in k for k in state)


def test_reloaded_pipeline_reproduces_in_memory_student(samples):
    torch.testing.assert_close(samples["reloaded"], samples["in_memory"], rtol=0, atol=1e-5)


def test_lora_changes_the_pipeline_samples(samples):
    assert (samples["reloaded"] - samples["plain"]).abs().max() > 1e-2


def test_student_sample_agrees_with_pipeline(trained, samples):
    teacher, _, _ = trained
    # the pipeline draws the initial noise, then LCMScheduler draws fresh noise after each step but the last;
    # student_sample draws its re-noising noise in the same order from the generator it is given
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((len(PROMPTS), *teacher.latent_shape), generator=g)
    cond = teacher.encode_prompts(PROMPTS)
    ours = student_sample(teacher, cond, noise, len(TIMESTEPS), g)
    assert teacher.schedule.sampling_timesteps(len(TIMESTEPS)) == TIMESTEPS
    # LCM's boundary scalings (c_skip ~ 1e-8 at t >= 249) and its float32 alphas are the only differences
    torch.testing.assert_close(ours.clamp(-1, 1), samples["in_memory"], rtol=0, atol=1e-5)
