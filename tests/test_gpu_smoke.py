"""Issue 16, GPU-ready numbers: ``sd15`` with ``random_weights = true`` (the real SD1.5 architecture, seeded random
weights, offline tokenizer; built here on tiny configs of the same classes, in full only in the GPU-marked test),
the trainer's peak-memory field (None on a CPU), ``[paper.compute]`` validation, the projection arithmetic, and
``studies/gpu_smoke.toml`` run end to end on tiny configs (its printed projection).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from flashbench.projection import project_gpu_hours, projection_lines
from flashbench_plugins.teachers import _sd_configs as cfg
from flashbench_plugins.teachers import sd15

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "gpu_smoke.toml"
TINY = {"unet": cfg.TINY_UNET, "text_encoder": cfg.TINY_CLIP_TEXT, "vae": cfg.TINY_VAE, "scheduler": cfg.SD15_SCHEDULER}


@pytest.fixture
def tiny_random_sd15(monkeypatch, hub_offline):
    """``random_weights = true`` builds these tiny configs instead of SD1.5's (the same code path)."""
    monkeypatch.setattr(sd15, "RANDOM_CONFIGS", TINY)


def build(components, **options):
    return components.get("teacher", "sd15").build({"random_weights": True, **options})


# --- the random-weights teacher ------------------------------------------------------------------------------
def test_random_weights_build_offline_and_give_a_finite_eps(tiny_random_sd15, components):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    state = torch.get_rng_state()
    teacher = build(components, default_lora_rank=4)
    assert torch.equal(torch.get_rng_state(), state)  # the seeded init leaves the caller's RNG alone
    assert isinstance(teacher.unet, UNet2DConditionModel) and isinstance(teacher.vae, AutoencoderKL)
    assert teacher.source.startswith("random-weights:sd15") and teacher.latent_shape == (4, 8, 8)
    assert teacher.noise_process.prediction == "epsilon"
    assert teacher.tokenizer(["a red car"]).input_ids[0][0] == 49406  # CLIP's ids, offline
    cond = teacher.encode_prompts(["a red car", ""])
    assert cond["encoder_hidden_states"].shape == (2, 77, 32)
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    for t in (999, 500, 1):
        eps = teacher.eps(x, torch.full((2,), t), cond, student=False)
        assert eps.shape == x.shape and torch.isfinite(eps).all() and eps.abs().sum() > 0, t
    z = teacher.encode(torch.rand((2, 3, 16, 16)) * 2 - 1)
    assert z.shape == (2, 4, 8, 8) and torch.isfinite(teacher.decode(z)).all()


def test_random_weights_are_seeded(tiny_random_sd15, components):
    a, b = build(components), build(components)
    for (name, pa), (_, pb) in zip(a.unet.named_parameters(), b.unet.named_parameters()):
        assert torch.equal(pa, pb), name
    assert torch.equal(a.text_encoder.get_input_embeddings().weight, b.text_encoder.get_input_embeddings().weight)
    assert any(p.abs().sum() > 0 for p in a.unet.conv_out.parameters())


def test_random_weights_train_the_full_recipe(tiny_random_sd15, components):
    from flashbench.method.data import Batch
    from flashbench.testing import flash_training_smoke

    teacher = build(components)
    g = torch.Generator().manual_seed(0)
    batches = [Batch(torch.rand((2, 3, 16, 16), generator=g) * 2 - 1, ["a red car", "a cat"]) for _ in range(3)]
    trainer, stats = flash_training_smoke(teacher, batches)
    try:
        assert {"distil", "adv", "dmd", "disc"} <= set(stats[-1].losses)
        assert all(math.isfinite(v) for s in stats for v in s.losses.values())
    finally:
        trainer.close()


def test_default_sd15_still_loads_from_its_path(hub_offline, components):
    from flashbench.errors import MissingWeightsError

    config = sd15.SD15TeacherConfig()
    assert config.random_weights is False and config.path == sd15.DEFAULT_PATH
    with pytest.raises(MissingWeightsError, match="no-such-org/no-such-model"):  # from_pretrained, offline: not random
        components.get("teacher", "sd15").build({"path": "no-such-org/no-such-model"})
    with pytest.raises(ValueError, match="random_weights"):
        sd15.SD15TeacherConfig(random_weights="yes")


def test_random_configs_are_sd15s_published_sizes():
    """The full configs, on the meta device (nothing allocated): SD1.5's UNet, CLIP ViT-L/14 text tower, VAE."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    assert sd15.RANDOM_CONFIGS["unet"] is cfg.SD15_UNET and sd15.RANDOM_CONFIGS["scheduler"] is cfg.SD15_SCHEDULER
    with torch.device("meta"):
        unet = UNet2DConditionModel(**sd15.RANDOM_CONFIGS["unet"])
        text = CLIPTextModel(CLIPTextConfig(**sd15.RANDOM_CONFIGS["text_encoder"]))
        vae = AutoencoderKL(**sd15.RANDOM_CONFIGS["vae"])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(text), count(vae)) == (859_520_964, 123_060_480, 83_653_863)
    assert vae.config.scaling_factor == 0.18215 and 2 ** (len(vae.config.block_out_channels) - 1) * unet.config.sample_size == 512


# --- peak memory ----------------------------------------------------------------------------------------------
def test_peak_memory_is_none_on_a_cpu(components):
    from flashbench.config import ComponentSpec, TrainConfig
    from flashbench.training import TrainingLoop, build_trainer

    c = components
    train = TrainConfig(
        teacher=ComponentSpec("toy-digits"),
        dataset=ComponentSpec("toy-digits"),
        num_timesteps=8,
        phase_length=1,
        iterations=2,
        batch_size=2,
        guidance_min=1.5,
        guidance_max=3.0,
        adv_loss=ComponentSpec("none"),
        dmd_loss=ComponentSpec("none"),
        trackers=(),
    )
    trainer = build_trainer(train, c, seed=0, adapter_name="peak")
    try:
        summary = TrainingLoop(trainer).run(c.get("dataset", "toy-digits").build({}), 2, seed=0, progress=False)
    finally:
        trainer.close()
    assert summary.peak_memory_gb is None and summary.iterations == 2


# --- [paper.compute] --------------------------------------------------------------------------------------------
def test_paper_compute_bad_values_are_one_line_each(tmp_path, components):
    from flashbench.study import validate_study

    text = STUDY.read_text(encoding="utf-8").replace("gpu_hours = 26.0", "gpu_hours = -3\ngpu_hourz = 1")
    text = text.replace('gpu = "H100"', "gpu = 7")
    text = text.replace("global_batch = 8\n", "global_batch = 0\n", 1)
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    problems = sorted(str(e) for e in validate_study(bad, components=components))
    assert len(problems) == 4 and all("\n" not in p and "paper.compute." in p for p in problems), problems
    joined = "\n".join(problems)
    assert "gpu_hours: must be a positive number, got -3" in joined and "did you mean 'gpu_hours'" in joined
    assert "global_batch: must be a positive integer, got 0" in joined and "gpu: must be a string" in joined
    missing = tmp_path / "missing.toml"
    missing.write_text(STUDY.read_text(encoding="utf-8").replace("iterations = 20000\n", ""), encoding="utf-8")
    assert [str(e).split(": ", 1)[1] for e in validate_study(missing, components=components)] == [
        "paper.compute.iterations: required (the paper's iterations and GPU-hours, e.g. iterations = 20000, gpu_hours = 26)"
    ]


def test_the_study_states_the_papers_sd15_cost(components):
    from flashbench.study import load_study

    study = load_study(STUDY, components=components)
    assert study.paper["compute"] == {"iterations": 20000, "gpu_hours": 26.0, "global_batch": 8, "gpu": "H100"}
    (v,) = study.variants
    t = v.train
    assert t.teacher.name == "sd15" and t.teacher.options["random_weights"] is True
    assert (t.distil_loss.name, t.adv_loss.name, t.dmd_loss.name) == ("mse", "lsgan", "dmd")
    assert t.num_timesteps == 32 and t.lora_rank == 128 and t.mixed_precision == "bf16" and t.batch_size == 4
    assert t.iterations == 4 * t.phase_length and t.checkpoint_every == 0  # the paper's 4 equal phases; nothing saved while timed
    assert t.dataset.options["resolution"] == 512
    assert (ROOT / t.dataset.options["path"] / "captions.jsonl").is_file()


# --- the projection -----------------------------------------------------------------------------------------
def test_projection_arithmetic():
    # the paper: 2 GPUs x batch 4 at 26 GPU-hours for 20k iterations is 2.34 s a step
    assert project_gpu_hours(2.34, processes=2, global_batch=8, iterations=20000) == pytest.approx(26.0)
    # one GPU at the paper's per-GPU batch does half a paper step: the paper's global batch doubles it
    assert project_gpu_hours(1.17, processes=1, global_batch=4, iterations=20000, paper_global_batch=8) == pytest.approx(13.0)
    assert project_gpu_hours(1.17, processes=1, global_batch=8, iterations=20000, paper_global_batch=8) == pytest.approx(6.5)
    assert project_gpu_hours(0.5, processes=4, global_batch=8, iterations=7200) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        project_gpu_hours(1.0, processes=0, global_batch=4, iterations=10)


def test_projection_lines():
    paper = {"compute": {"iterations": 20000, "gpu_hours": 26.0, "global_batch": 8, "gpu": "H100"}}
    student = {
        "role": "student",
        "status": "ok",
        "variant": "base",
        "variant_key": "base",
        "seed": 0,
        "seconds_per_step": 0.5,
        "teacher_nfe_per_step": 40.25,
        "student_nfe_per_step": 1.75,
        "processes": 1,
        "global_batch": 4,
        "peak_memory_gb": 31.04,
    }
    rows = [
        {"role": "teacher", "status": "ok", "variant": "teacher", "variant_key": "teacher-s0"},
        student,
        {**student, "metric": "other"},
        {**student, "variant": "sib", "variant_key": "sib", "trained_with": "base"},
    ]
    lines = projection_lines(paper, rows, {"gpus": [{"name": "NVIDIA H200", "memory_gib": 139.8}]})
    assert len(lines) == 2  # one student trained; its sibling and its second row add nothing
    assert lines[0] == ("base (seed 0): 2 it/s (0.5 s/step, 1 process x batch 4), teacher NFE/step 40.2, student NFE/step 1.8, peak GPU memory 31.0 GiB")
    hours = 0.5 * 2 * 20000 / 3600
    assert f"= {hours:.3g} NVIDIA H200 GPU-hours" in lines[1] and "the paper's 26 H100-hours" in lines[1]
    assert f"({hours / 26:.2f}x)" in lines[1] and "20,000 iterations (global batch 8)" in lines[1]
    cpu = projection_lines(paper, [{**student, "peak_memory_gb": None}], {"gpus": []})
    assert "peak GPU memory n/a (CPU)" in cpu[0] and "CPU-hours" in cpu[1]
    assert projection_lines({"direction": "x"}, rows) == []


# --- the study, end to end on tiny configs ------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_smoke_study_runs_and_prints_the_projection(tiny_random_sd15, tmp_path, monkeypatch, capsys, components):
    """The study as shipped but for what a CPU cannot do at 512 px: tiny SD1.5-class networks (16 px images, 8x8
    latents) and 8 iterations in 4 phases of 2."""
    from flashbench.cli import main

    monkeypatch.setenv("FLASHBENCH_CACHE", "off")
    data = (ROOT / "studies" / "gpu_smoke_data").as_posix()
    text = STUDY.read_text(encoding="utf-8").replace('path = "studies/gpu_smoke_data", resolution = 512', f'path = "{data}", resolution = 16')
    text = re.sub(r"^iterations = 48$", "iterations = 8", text, flags=re.M)
    text = re.sub(r"^phase_length = 12 .*$", "phase_length = 2", text, flags=re.M)
    study = tmp_path / "gpu_smoke.toml"
    study.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(study), "--output", str(out)], components=components) == 0
    printed = capsys.readouterr().out
    from flashbench.results import ResultStore

    (row,) = [r for r in ResultStore(out).rows() if r["role"] == "student"]
    assert row["peak_memory_gb"] is None and row["iterations"] == 8 and row["metric"] == "lpips_to_teacher"
    assert row["trainable_params"] > 0 and row["teacher_nfe_per_step"] > 2 and row["student_nfe_per_step"] > 1  # DMD ran
    assert "it/s" in printed and "peak GPU memory n/a (CPU)" in printed
    assert "projected: the paper's 20,000 iterations (global batch 8)" in printed and "the paper's 26 H100-hours" in printed


# --- on a GPU: the full-size model ------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_full_size_random_sd15_on_cuda(hub_offline, components):
    from flashbench.method.data import Batch
    from flashbench.testing import flash_training_smoke

    teacher = components.get("teacher", "sd15").build({"random_weights": True}, device="cuda")
    assert teacher.latent_shape == (4, 64, 64) and sum(p.numel() for p in teacher.unet.parameters()) == 859_520_964
    cond = teacher.encode_prompts(["a red car", ""])
    x = torch.randn((2, 4, 64, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eps = teacher.eps(x, torch.full((2,), 999, device="cuda"), cond, student=False)
    assert torch.isfinite(eps).all()
    batches = [Batch(torch.rand((2, 3, 512, 512)) * 2 - 1, ["a red car", "a cat"]) for _ in range(2)]
    trainer, stats = flash_training_smoke(
        teacher, batches, num_timesteps=32, lora_rank=128, lr=1e-5, guidance=(3.0, 13.0), train_options={"mixed_precision": "bf16"}
    )
    try:
        assert trainer.trainable_params == 25_509_888
        assert all(math.isfinite(v) for s in stats for v in s.losses.values())
    finally:
        trainer.close()
