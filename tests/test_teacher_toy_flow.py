"""The rectified-flow toy teacher ``toy-digits-flow``: the teacher contract, its noise process and samplers against
diffusers' ``FlowMatchEulerDiscreteScheduler`` through its stock pipeline, and (slow) a short Flash run whose
2-NFE student beats the teacher at 2 NFE both ways the teacher can spend that budget."""

from __future__ import annotations

import pytest
import torch

from flashbench.method.noise import RectifiedFlow
from flashbench.method.sampling import student_sample, teacher_sample
from flashbench.testing import TeacherContract

pytestmark = pytest.mark.usefixtures("one_thread")


def _build():
    from flashbench.plugins import collect_components

    return collect_components().get("teacher", "toy-digits-flow").build({}, device="cpu")


class TestToyDigitsFlowTeacher(TeacherContract):
    def make_teacher(self):
        return _build()

    def prompts(self):
        return ["a red digit one", "a cyan digit eight"]


@pytest.fixture(scope="module")
def teacher():
    return _build()


def test_noise_process_is_rectified_flow_from_the_scheduler(teacher):
    process = teacher.noise_process
    assert isinstance(process, RectifiedFlow) and process.prediction == "flow"
    assert process.shift == 1.0 and process.mu is None
    assert type(teacher.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert teacher.latent_shape == (3, 16, 16) and teacher.vae is None
    assert process.sampling_timesteps(4) == [1000.0, 750.0, 500.0, 250.0]
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in teacher.unet.parameters())


def test_bundled_flow_teacher_draws_the_asked_digits(components, teacher):
    from flashbench_plugins.toy import data
    from flashbench_plugins.toy.perceptual import load_features

    _, prompts = data.ColouredDigits("heldout", shift=0).fixed(180, seed=3)
    prompts = prompts[:60]
    digits, colours = zip(*(data.parse_prompt(p) for p in prompts))
    colours = [list(data.COLOURS).index(c) for c in colours]
    solver = components.get("solver", "flow-euler").build({})
    noise = torch.randn((60, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    images = teacher_sample(teacher, solver, teacher.encode_prompts(prompts), teacher.null_condition(prompts), noise, 8, 2.0)
    assert torch.isfinite(images).all()
    logits_d, logits_c = load_features("cpu")(images.clamp(-1, 1))
    digit_acc, colour_acc = (logits_d.argmax(1).numpy() == list(digits)).mean(), (logits_c.argmax(1).numpy() == colours).mean()
    # measured: digits 0.68, colours 1.0 (the epsilon teacher: 0.98, 1.0 on these prompts and noise): the 2,000-step
    # flow teacher follows the colour always and the digit less often; this guards the bundled weights, not a target
    assert digit_acc >= 0.6 and colour_acc >= 0.95, (digit_acc, colour_acc)


def test_teacher_pipeline_is_the_flow_euler_solver(components, teacher):
    """The teacher's own sampler (flow-euler with CFG) is diffusers' FlowMatchEuler step in the stock pipeline."""
    prompts = ["a red digit one", "a blue digit four", "a green digit seven"]
    noise = torch.randn((3, 3, 16, 16), generator=torch.Generator().manual_seed(4))
    solver = components.get("solver", "flow-euler").build({})
    ours = teacher_sample(teacher, solver, teacher.encode_prompts(prompts), teacher.null_condition(prompts), noise, 6, 2.0)
    theirs = teacher.teacher_pipeline()(prompts, sigmas=[i / 6 for i in range(6, 0, -1)], guidance_scale=2.0, latents=noise.clone())
    torch.testing.assert_close(theirs, ours.clamp(-1, 1), rtol=0, atol=1e-4)


def test_exported_student_samples_as_in_training(teacher, tmp_path):
    """A (briefly trained) LoRA exported with save_lora, loaded by the stock pipeline with the flow few-step
    scheduler (stochastic sampling, sigmas [1.0, 0.5]), gives the method's 2-step flash samples."""
    prompts = ["a red digit one", "a cyan digit eight"]
    cond = teacher.encode_prompts(prompts)
    params = teacher.add_lora("export", 4)
    try:
        opt = torch.optim.Adam(params, lr=1e-2)
        x = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(1))
        t = torch.tensor([750.0, 500.0])
        loss = teacher.output(x, t, cond, student=True).square().mean()
        loss.backward()
        opt.step()
        noise = torch.randn((2, 3, 16, 16), generator=torch.Generator().manual_seed(2))
        ours = student_sample(teacher, cond, noise, 2, torch.Generator().manual_seed(3), merge_lora=False)
        folder = teacher.save_lora("export", tmp_path / "lora")
    finally:
        teacher.remove_lora("export")
    pipe = teacher.pipeline()
    assert pipe.scheduler.config.stochastic_sampling
    pipe.load_lora_weights(str(folder))
    try:
        theirs = pipe(prompts, sigmas=[1.0, 0.5], guidance_scale=1.0, latents=noise.clone(), generator=torch.Generator().manual_seed(3))
    finally:
        for name in list(getattr(teacher.unet, "peft_config", {}) or {}):
            teacher.remove_lora(name)
    torch.testing.assert_close(theirs, ours.clamp(-1, 1), rtol=0, atol=1e-4)


# --- the method on a flow teacher ----------------------------------------------------------------------------
N = 200  # evaluation samples


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_flash_student_beats_the_flow_teacher_at_2_nfe(components, seed):
    """150 Flash iterations (batch 16, K = 8, MSE + LSGAN + DMD, omega ~ U[1.5, 3]) on the flow teacher: the
    2-NFE student has a clearly lower toy-fd (200 samples) than the teacher at 2 NFE, sampled with its own
    flow-euler solver and CFG (1 step) and with the student's few-step sampler without CFG (2 steps)."""
    from flashbench.config import ComponentSpec, TrainConfig
    from flashbench.training import TrainingLoop, build_trainer

    teacher = _build()
    dataset = components.get("dataset", "toy-digits").build({})
    fd = components.get("evaluator", "toy-fd").build({}, device="cpu")
    fd.prepare(dataset, N)
    prompts = dataset.eval_prompts(N)
    noise = torch.randn((N, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    cond, uncond = teacher.encode_prompts(prompts), teacher.null_condition(prompts)
    solver = components.get("solver", "flow-euler").build({})
    teacher_cfg = fd.evaluate(teacher_sample(teacher, solver, cond, uncond, noise, 1, 2.0), prompts)
    teacher_fewstep = fd.evaluate(student_sample(teacher, cond, noise, 2, torch.Generator().manual_seed(1), student=False), prompts)

    iters = 150
    cfg = TrainConfig(
        teacher=ComponentSpec("toy-digits-flow"),
        dataset=ComponentSpec("toy-digits"),
        solver=ComponentSpec("flow-euler"),
        num_timesteps=8,
        phase_length=iters // 4,
        iterations=iters,
        batch_size=16,
        learning_rate=1e-3,
        disc_learning_rate=1e-3,
        guidance_min=1.5,
        guidance_max=3.0,
    )
    trainer = build_trainer(cfg, components, teacher=teacher, seed=seed, adapter_name="flow-effect")  # mse + lsgan + dmd
    try:
        TrainingLoop(trainer).run(dataset, iters, seed=seed, progress=False)
        student = fd.evaluate(student_sample(teacher, cond, noise, 2, torch.Generator().manual_seed(1)), prompts)
    finally:
        trainer.close()
    print(f"toy-fd at 2 NFE, seed {seed}: student {student:.1f}, teacher CFG 1 step {teacher_cfg:.1f}, teacher few-step {teacher_fewstep:.1f}")
    # measured (one thread, a busy 2-core machine, ~140 s a run): seed 0 student 89.3, seed 1 85.4; teacher 267.5
    # (flow-euler, CFG, 1 step) and 125.4 (few-step sampler, no CFG): 0.71x and 0.68x the stronger baseline
    assert student < 0.85 * min(teacher_cfg, teacher_fewstep), (student, teacher_cfg, teacher_fewstep)
