"""``sd15``: a tiny SD1.5-shaped pipeline (the real classes, random weights, built from config) saved with
``save_pretrained`` and loaded through the plugin; the published teacher contract; several full-method
training steps; student samples at 1, 2 and 4 NFEs; the exported LoRA reloaded into a fresh
``StableDiffusionPipeline`` reproduces the in-memory student; the offline error; bf16 on CUDA; the paper's
trainable-parameter count on the real UNet config (meta device).
"""

from __future__ import annotations

import math

import pytest
import torch

from flashbench.method.data import Batch
from flashbench.method.sampling import student_sample
from flashbench.testing import MissingWeights, TeacherContract, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import sd15

from _builders import build_teacher, plugin_components, random_images, write_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red car on a beach", "a cat with a bow tie"]
IMAGE_SIZE = 16  # tiny VAE: 2x the 8x8 latents


def write_tiny_sd15(root):
    """A ``StableDiffusionPipeline`` of tiny seeded components, saved as a diffusers folder (model_index.json)."""
    from diffusers import StableDiffusionPipeline

    from flashbench_plugins.teachers import _sd_configs as cfg

    return write_tiny_pipeline(
        root,
        StableDiffusionPipeline,
        vae=cfg.TINY_VAE,
        unet=cfg.TINY_UNET,
        scheduler=cfg.SD15_SCHEDULER,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def components():
    return plugin_components(sd15)


def build(folder, **options):
    return build_teacher(sd15, "sd15", folder, **options)


def images(n, seed=0):
    return random_images(n, IMAGE_SIZE, seed)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_sd15(tmp_path_factory.mktemp("tiny-sd15"))


# --- (1) + (2): loading through the plugin, the contract -----------------------------------------------------
class TestSD15Contract(TeacherContract):
    # the contract's opt-in checks: the offline errors, the student in a fresh stock pipeline, bf16 on CUDA
    missing_weights = ("nonexistent-org/nonexistent-sd15", MissingWeights({}, "stable-diffusion-v1-5/stable-diffusion-v1-5"))
    stock_pipeline = "StableDiffusionPipeline"
    bf16 = True

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_folder):
        request.cls.folder = tiny_folder

    def build_teacher(self, options, *, device="cpu"):
        return components().get("teacher", "sd15").build(options, device=device)

    def teacher_options(self):
        return {"path": str(self.folder), "default_lora_rank": 4}

    def prompts(self):
        return tiny_text_prompts(2)

    def stock_sample(self, pipe, teacher):
        assert teacher.noise_process.sampling_timesteps(4) == [999, 749, 499, 249]
        return super().stock_sample(pipe, teacher)

    def test_loaded_from_the_folder(self, teacher):
        from diffusers import AutoencoderKL, UNet2DConditionModel

        assert isinstance(teacher.unet, UNet2DConditionModel) and isinstance(teacher.vae, AutoencoderKL)
        assert teacher.latent_shape == (4, 8, 8) and teacher.source == str(self.folder)
        assert teacher.discriminator_input() == (64, 4)
        assert teacher.default_lora_rank == 4 and teacher.lora_targets == ("to_q", "to_k", "to_v", "to_out.0")


# --- (3), (4), (5): training, sampling, export -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_folder):
    teacher = build(tiny_folder)
    batches = [Batch(images(2, seed=i), PROMPTS) for i in range(3)]
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2)
    yield teacher, stats
    trainer.close()


def test_flash_training_steps_have_every_loss_term(trained):
    _, stats = trained
    last = stats[-1].losses
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in last and math.isfinite(last[term]), f"{term}: {last}"
    assert all(math.isfinite(v) for s in stats for v in s.losses.values())


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_student_samples(trained, nfe):
    teacher, _ = trained
    cond = teacher.encode_prompts(PROMPTS)
    noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    out = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(out).all()


def test_student_sample_agrees_with_the_stock_pipeline(trained):
    # the pipeline draws the initial noise, then LCMScheduler fresh noise after each step but the last;
    # student_sample re-noises with the same generator in the same order
    teacher, _ = trained
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, 4, g)
    theirs = teacher.pipeline()(
        PROMPTS, timesteps=[999, 749, 499, 249], guidance_scale=0.0, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    torch.testing.assert_close((ours.clamp(-1, 1) + 1) / 2, theirs, rtol=0, atol=1e-5)


# --- (8): the paper's trainable-parameter count ------------------------------------------------------------------
def test_default_lora_matches_the_paper_count_on_the_real_unet():
    from flashbench_plugins.teachers import _sd_configs as cfg

    config = sd15.SD15TeacherConfig()
    lora = cfg.lora_parameter_count(cfg.SD15_UNET, config.default_lora_rank, config.lora_targets)
    assert lora == 25_509_888  # rank 128 on to_q/to_k/to_v/to_out.0, the official Flash SD1.5 LoRA
    # the paper's 26.4M trainable parameters = this LoRA + the official discriminator head
    assert round((lora + cfg.FLASH_SD15_DISCRIMINATOR_PARAMS) / 1e6, 1) == 26.4
