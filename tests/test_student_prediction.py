"""The student's output parametrisation (``student_prediction``): a teacher whose schedule ends near zero SNR
(DDPM's linear schedule, alpha = 0.0064 at t = 999) makes a student read as epsilon amplify its error 157x in its
first x0; reading it as v or x0 bounds that, and validate/run say so in one line."""

from __future__ import annotations

import pytest
import torch

import _ddpm_teacher_plugin as ddpm
from flashbench.cli import main
from flashbench.config import STUDENT_PREDICTIONS, TrainConfig
from flashbench.method.noise import PREDICTIONS, RectifiedFlow, parametrisation_warning, student_process, vp_process
from flashbench.method.schedule import NoiseSchedule
from flashbench.plugins import collect_components, get_plugin_manager

pytestmark = pytest.mark.usefixtures("one_thread")


def sd_schedule() -> NoiseSchedule:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return NoiseSchedule(torch.cumprod(1.0 - betas, dim=0))


def ddpm_process():
    return vp_process(NoiseSchedule(ddpm.ddpm_linear_alphas_cumprod()))


def test_the_default_reads_the_student_as_the_teacher():
    process = vp_process(sd_schedule())
    assert TrainConfig().student_prediction == "teacher"
    assert student_process(process) is process  # the same object: the paper's path, unchanged
    assert student_process(process, "auto") is process  # SD's schedule is stable


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_each_reading_round_trips(prediction):
    process = student_process(ddpm_process(), prediction)
    assert process.prediction == prediction
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([10, 250, 600, 999])
    xt = process.add_noise(x0, eps, t)
    out = process.output_from(x0, eps, t)
    torch.testing.assert_close(process.to_x0(xt, out, t), x0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(process.to_eps(xt, out, t), eps, rtol=1e-7, atol=1e-7)


def test_amplification_at_full_noise():
    sd, ddpm_ = vp_process(sd_schedule()), ddpm_process()
    assert sd.amplification() == pytest.approx(14.6, abs=0.05)
    assert ddpm_.amplification() == pytest.approx(157.4, abs=0.1)
    assert ddpm_.amplification("v_prediction") <= 1.0 and ddpm_.amplification("sample") == 1.0
    assert RectifiedFlow(shift=3.0).amplification() == pytest.approx(1.0)


def test_auto_chooses_v_where_epsilon_is_unstable():
    assert student_process(ddpm_process(), "auto").prediction == "v_prediction"
    assert student_process(RectifiedFlow(shift=3.0), "auto").prediction == "flow"


def test_the_warning_names_the_gain_and_the_fix():
    line = parametrisation_warning(ddpm_process())
    assert "157x" in line and "alpha = 0.0064" in line and 'student_prediction = "auto"' in line
    for stable in ("auto", "v_prediction", "sample"):
        assert parametrisation_warning(ddpm_process(), stable) is None
    assert parametrisation_warning(vp_process(sd_schedule())) is None


def test_unknown_readings_are_refused():
    assert set(STUDENT_PREDICTIONS) - {"teacher", "auto"} <= set(PREDICTIONS)
    with pytest.raises(ValueError, match="student_prediction 'x0' is not one of teacher, auto, epsilon"):
        student_process(ddpm_process(), "x0")


@pytest.fixture(scope="module")
def components():
    return collect_components(get_plugin_manager(load_entry_points=False, extra_plugins=(ddpm,)))


STUDY = """
[study]
name = "ddpm_student"
title = "a teacher ending near zero SNR"
seeds = [0]
[base]
teacher = "toy-digits-ddpm"
dataset = "toy-digits"
conditioning = "text"
solver = "ddim"
num_timesteps = 8
phase_length = 2
iterations = 8
batch_size = 4
{extra}
[base.eval]
prompts = "toy-digits"
evaluators = ["toy-fd"]
num_samples = 16
nfe = [1]
"""


@pytest.mark.parametrize("extra, warned", [("", True), ('student_prediction = "auto"', False), ('student_prediction = "v_prediction"', False)])
def test_validate_warns_for_a_teacher_that_declares_an_unstable_schedule(tmp_path, capsys, components, extra, warned):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(extra=extra))
    assert main(["validate", str(path)], components=components) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == int(warned)
    if warned:
        assert str(path) in err[0] and "toy-digits-ddpm" in err[0] and "157x" in err[0]


def test_a_bad_reading_is_one_located_line(tmp_path, capsys, components):
    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(extra='student_prediction = "x0"'))
    assert main(["validate", str(path)], components=components) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "student_prediction" in err[0] and "v_prediction" in err[0]


def test_reading_as_v_bounds_the_first_step(components):
    """The untrained student (the teacher's network) at 1 NFE from pure noise: read as epsilon its x0 carries
    the network's error times 157; read as v it is about the negated noise estimate, of unit scale."""
    from flashbench.method.sampling import student_sample

    teacher = components.get("teacher", "toy-digits-ddpm").build({}, device="cpu")
    teacher.add_lora("s", 4)
    cond = teacher.encode_prompts(["a red 3", "a blue 7"] * 4)
    noise = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # the toy teacher's pixel space
    decode = teacher.decode
    teacher.decode = lambda z: z  # the raw x0 (the toy decode clamps)
    try:
        eps = student_sample(teacher, cond, noise, 1, torch.Generator().manual_seed(1), prediction="teacher")
        v = student_sample(teacher, cond, noise, 1, torch.Generator().manual_seed(1), prediction="v_prediction")
    finally:
        teacher.decode = decode
        teacher.remove_lora("s")
    rms = lambda x: float(x.pow(2).mean().sqrt())  # noqa: E731
    print(f"rms of the 1-NFE x0: epsilon-read {rms(eps):.2f}, v-read {rms(v):.2f}")
    assert rms(eps) > 5 * rms(v)
    assert rms(v) < 1.5


@pytest.mark.slow
def test_a_v_student_trains_and_run_warns_for_an_epsilon_one(tmp_path, capsys, components):
    import json

    path = tmp_path / "study.toml"
    path.write_text(STUDY.format(extra="") + '\n[[variants]]\nname = "eps"\n[[variants]]\nname = "v"\nstudent_prediction = "v_prediction"\n')
    assert main(["run", str(path), "--jobs", "1", "--output", str(tmp_path / "run")], components=components) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "variant 'eps'" in err[0] and "157x" in err[0]
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    students = {r["variant"]: r["value"] for r in rows if r["role"] == "student" and r["status"] == "ok"}
    assert set(students) == {"eps", "v"} and all(v == v and abs(v) < float("inf") for v in students.values())
