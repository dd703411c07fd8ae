"""A third-party rectified-flow teacher needs no change to the host (issue 15): the test plugin
``tests/_flow_teacher_plugin.py`` registers a tiny seeded SD3 transformer through ``register_teachers``; it
passes the published teacher contract, trains a few Flash steps (distillation + adversarial + DMD, with the
``flow-euler`` and ``dpm-solver`` teacher solvers) and samples in 1, 2 and 4 steps on the shifted sigmas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import _flow_teacher_plugin as plugin
from flashbench.config import ComponentSpec, TrainConfig
from flashbench.method.data import Batch
from flashbench.method.noise import RectifiedFlow
from flashbench.plugins import collect_components, get_plugin_manager
from flashbench.testing import TeacherContract

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red 3", "a blue 7"]


def flow_components():
    """The built-in plugins and the third party's, as a study run collects them."""
    return collect_components(get_plugin_manager(load_entry_points=False, extra_plugins=(plugin,)))


class TestTinyFlowTeacherContract(TeacherContract):
    def make_teacher(self):
        return flow_components().get("teacher", "tiny-flow").build({}, device="cpu")

    def load_lora_into(self, pipe, folder):
        from safetensors.torch import load_file

        pipe.transformer.load_lora_adapter(load_file(str(folder / "pytorch_lora_weights.safetensors")), prefix="transformer")

    def test_timesteps_are_flow_timesteps(self, teacher):
        t = self.timesteps(teacher, 3)
        assert t.dtype == torch.float32 and float(t[0]) == pytest.approx(1000.0) and float(t.min()) > 0


@pytest.fixture(scope="module")
def components():
    return flow_components()


@pytest.fixture(scope="module")
def teacher(components):
    return components.get("teacher", "tiny-flow").build({}, device="cpu")


def batches(n: int, size: int = 16, batch: int = 2):
    g = torch.Generator().manual_seed(0)
    return [Batch(torch.rand((batch, 3, size, size), generator=g) * 2 - 1, PROMPTS[:batch]) for _ in range(n)]


def test_the_teacher_declares_rectified_flow(teacher):
    process = teacher.noise_process
    assert isinstance(process, RectifiedFlow) and process.prediction == "flow" and process.shift == 3.0
    # eps (the method's old currency) still works for such a teacher: the process converts the velocity
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([750.0, 250.0])
    cond = teacher.encode_prompts(PROMPTS)
    with torch.no_grad():
        u = teacher.output(x, t, cond, student=False)
        torch.testing.assert_close(teacher.eps(x, t, cond, student=False), x + process.alpha(t, x) * u)


@pytest.mark.parametrize("solver_name", ["flow-euler", "dpm-solver"])
def test_flash_training_steps_on_the_flow_teacher(components, teacher, solver_name):
    from flashbench.training import build_trainer

    seen = []
    forward = teacher._forward

    def spy(module, x, t, cond):
        seen.append(torch.as_tensor(t).detach().clone())
        return forward(module, x, t, cond)

    cfg = TrainConfig(
        solver=ComponentSpec(solver_name),
        num_timesteps=8,
        phase_length=1,
        iterations=3,
        batch_size=2,
        learning_rate=1e-3,
        disc_learning_rate=1e-3,
        guidance_min=1.5,
        guidance_max=3.0,
        lora_rank=4,
        trackers=(),
    )
    trainer = build_trainer(cfg, components, teacher=teacher, seed=0, adapter_name=f"flow-{solver_name}")  # mse + lsgan + dmd
    solver = trainer.solver
    try:
        before = [p.detach().clone() for p in trainer.lora_params]
        teacher._forward = spy
        stats = [trainer.step(b, i) for i, b in enumerate(batches(3))]
        teacher._forward = forward
        for s in stats:
            assert all(np.isfinite(v) for v in s.losses.values()), s.losses
        assert {"distil", "adv", "dmd", "disc"} <= set(stats[-1].losses)
        assert any(not torch.equal(a, p.detach()) for a, p in zip(before, trainer.lora_params)), "the LoRA did not move"
        # the network only ever saw flow timesteps: float sigma * 1000 in (0, 1000], on the shifted K-grid
        # (teacher solve and student), the shifted t' (adversarial) and the training table (DMD)
        ts = torch.cat([t.reshape(-1) for t in seen])
        assert ts.dtype == torch.float32 and float(ts.min()) > 0 and float(ts.max()) <= 1000.0
        grid = {round(v, 2) for v in RectifiedFlow(shift=3.0).grid_timestep(torch.arange(1, 9), 8).tolist()}
        assert grid & {round(v, 2) for v in ts.tolist()}

        from flashbench.method.sampling import student_sample, teacher_sample

        cond = teacher.encode_prompts(PROMPTS)
        noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(3))
        samples = {}
        for nfe in (1, 2, 4):
            seen.clear()
            teacher._forward = spy
            samples[nfe] = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1))
            teacher._forward = forward
            assert samples[nfe].shape == (2, 3, 16, 16) and torch.isfinite(samples[nfe]).all()
            expected = RectifiedFlow(shift=3.0).sampling_timesteps(nfe)
            assert [float(t[0]) for t in seen] == pytest.approx(expected, abs=1e-3)
        assert not torch.allclose(samples[1], samples[4])
        out = teacher_sample(teacher, solver, cond, teacher.null_condition(PROMPTS), noise, 4, 2.0)
        assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
    finally:
        teacher._forward = forward
        trainer.close()


def test_the_flow_teacher_arrives_through_the_entry_point_group_alone(tmp_path, monkeypatch):
    """No extra_plugins, no host change: a distribution whose metadata names the plugin module in the
    ``flashbench`` entry-point group is enough for a study run's plugin manager to find and build the teacher."""
    info = tmp_path / "fb_tiny_flow-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fb-tiny-flow\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[flashbench]\ntiny_flow = {plugin.__name__}\n")
    monkeypatch.delenv("FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    without = collect_components(get_plugin_manager())
    assert "tiny-flow" not in without["teacher"].names()
    monkeypatch.syspath_prepend(str(tmp_path))
    components = collect_components(get_plugin_manager())
    component = components.get("teacher", "tiny-flow")
    assert component.distribution == "fb-tiny-flow"
    teacher = component.build({}, device="cpu")
    assert isinstance(teacher.noise_process, RectifiedFlow)
