"""``superres``: a tiny x4-upscaler pipeline (7-channel UNet with noise-level class labels, a 4x VAE,
v-prediction; the real classes, random weights) saved with ``save_pretrained`` and loaded through the plugin;
the teacher contract with a low-res extra, with and without text; the low-res conditioning as the stock
pipeline builds it; v -> epsilon; several full-method training steps; student samples at 1, 2 and 4 NFEs; the
exported LoRA reloaded into a fresh ``StableDiffusionUpscalePipeline`` reproduces the in-memory student; the
offline error; bf16 on CUDA; the LoRA count on the real upscaler UNet config.
"""

from __future__ import annotations

import math

import pytest
import torch

from flashbench.method.data import Batch
from flashbench.method.sampling import student_sample
from flashbench.testing import MissingWeights, TeacherContract, flash_training_smoke
from flashbench_plugins.teachers import superres

from _builders import build_teacher, plugin_components, write_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a sharp photo of a red car", "a cat with a bow tie"]
LOW, HIGH = 8, 32  # the latents have the low-res image's size; the tiny VAE decodes them to 4x


def write_tiny_upscaler(root):
    """A ``StableDiffusionUpscalePipeline`` of tiny seeded components, saved as a diffusers folder."""
    from diffusers import DDPMScheduler, StableDiffusionUpscalePipeline

    from flashbench_plugins.teachers import _sd_configs as cfg

    return write_tiny_pipeline(
        root,
        StableDiffusionUpscalePipeline,
        vae=cfg.TINY_X4_VAE,
        unet=cfg.TINY_X4_UNET,
        scheduler=cfg.X4_SCHEDULER,
        low_res_scheduler=DDPMScheduler(**cfg.X4_LOW_RES_SCHEDULER),
        max_noise_level=cfg.X4_MAX_NOISE_LEVEL,
    )


def components():
    return plugin_components(superres)


def build(folder, **options):
    return build_teacher(superres, "superres", folder, **options)


def images(n, seed=0):
    """High-resolution targets in [-1, 1]: smooth random colour fields (upsampled noise)."""
    coarse = torch.rand((n, 3, 4, 4), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(HIGH, HIGH), mode="bilinear", align_corners=False)


def downscale(imgs):
    """The x4 degradation of these tests: area downsampling (a dataset plugin adds blur, noise, JPEG)."""
    return torch.nn.functional.interpolate(imgs, size=(LOW, LOW), mode="area")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_upscaler(tmp_path_factory.mktemp("tiny-x4"))


# --- (1) + (2): loading through the plugin, the contract (no text: the paper's case; and with text) ----------------
class TestSuperResContract(TeacherContract):
    text = False
    # the contract's opt-in checks: the offline errors, the student in a fresh stock pipeline, bf16 on CUDA
    missing_weights = ("nonexistent-org/nonexistent-upscaler", MissingWeights({}, "stabilityai/stable-diffusion-x4-upscaler"))
    stock_pipeline = "StableDiffusionUpscalePipeline"
    bf16 = True

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_folder):
        request.cls.folder = tiny_folder

    def build_teacher(self, options, *, device="cpu"):
        return components().get("teacher", "superres").build(options, device=device)

    def teacher_options(self):
        return {"path": str(self.folder), "default_lora_rank": 4, "text": self.text}

    def batch_extras(self, imgs, seed):
        return {"low_res": downscale(imgs)}

    def smoke_options(self):
        return {"guidance": superres.PAPER_GUIDANCE}

    def stock_sample(self, pipe, teacher):
        # no text: the student was trained on empty prompts
        out = pipe(
            ["", ""],
            image=(downscale(images(2, seed=7)) + 1) / 2,
            noise_level=20,
            num_inference_steps=4,
            guidance_scale=0.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        assert pipe.scheduler.timesteps.tolist() == [999, 749, 499, 249]
        assert out.shape == (2, 3, HIGH, HIGH)
        return out

    def prompts(self):
        return PROMPTS

    def extras(self):
        return {"low_res": downscale(images(2))}

    def test_loaded_from_the_folder(self, teacher):
        assert teacher.unet.config.in_channels == 7 and teacher.latent_shape == (4, LOW, LOW)
        assert teacher.prediction_type == "v_prediction" and teacher.vae.config.scaling_factor == 0.08333
        assert teacher.decode(torch.zeros(1, 4, LOW, LOW)).shape == (1, 3, HIGH, HIGH)

    @torch.no_grad()
    def test_low_res_is_noise_augmented_like_the_pipeline(self, teacher):
        low = downscale(images(2))
        cond = teacher.encode_prompts(PROMPTS, {"low_res": low})
        assert cond["class_labels"].tolist() == [20, 20]
        ac = teacher.low_res_scheduler.alphas_cumprod[20]
        noise = (cond["low_res"] - ac.sqrt() * low) / (1 - ac).sqrt()
        assert 0.7 < noise.std() < 1.3 and noise.mean().abs() < 0.2, "not N(0, 1) noise at level 20"
        # the noise is a function of the image: same image, same noise, wherever it sits in the batch
        swapped = teacher.encode_prompts(PROMPTS[::-1], {"low_res": low.flip(0)})
        self.assert_same(swapped["low_res"], cond["low_res"].flip(0), "noise of the same images, swapped")

    @torch.no_grad()
    def test_null_condition(self, teacher):
        extras = self.extras()
        cond = teacher.encode_prompts(PROMPTS, extras)
        null = teacher.null_condition(PROMPTS, extras)
        empty = teacher.encode_prompts(["", ""], extras)["encoder_hidden_states"]
        self.assert_same(null["encoder_hidden_states"], empty, "null prompt")
        self.assert_same(null["class_labels"], cond["class_labels"], "null noise level")
        if self.text:
            self.assert_same(null["low_res"], cond["low_res"], "null low-res (text model: the same image)")
            self.assert_differs(cond["encoder_hidden_states"], empty, "prompts are used")
        else:
            assert not null["low_res"].any(), "no-text null: the low-res image zeroed"
            self.assert_same(cond["encoder_hidden_states"], empty, "no-text model: prompts are ignored")

    def test_v_prediction_is_read_by_the_vp_v_process(self, teacher):
        # diffusers' own definition of v (DDPMScheduler.get_velocity): v = alpha eps - sigma x0
        g = torch.Generator().manual_seed(3)
        x0, eps = torch.randn(2, 4, LOW, LOW, generator=g), torch.randn(2, 4, LOW, LOW, generator=g)
        t = torch.tensor([999, 249])
        v = teacher.scheduler.get_velocity(x0, eps, t)
        xt = teacher.scheduler.add_noise(x0, eps, t)
        process = teacher.noise_process
        assert process.name == "vp-v" and process.prediction == "v_prediction"
        torch.testing.assert_close(process.to_eps(xt, v, t), eps, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(process.to_x0(xt, v, t), x0, rtol=1e-4, atol=1e-4)

    @torch.no_grad()
    def test_encoder_features_are_the_unets_own_mid_block_output(self, teacher, inputs):
        # the discriminator's features go through the same concat + noise-level embedding as the full forward
        x, t, cond = inputs
        seen = []
        hook = teacher.unet.mid_block.register_forward_hook(lambda module, args, out: seen.append(out))
        try:
            teacher.eps(x, t, cond, student=False)
        finally:
            hook.remove()
        self.assert_same(teacher.encoder_features(x, t, cond), seen[0], "encoder_features vs the UNet's mid block")

    def test_missing_low_res_is_a_clear_error(self, teacher):
        with pytest.raises(ValueError, match="low_res"):
            teacher.encode_prompts(PROMPTS, None)


class TestSuperResTextContract(TestSuperResContract):
    text = True
    missing_weights, stock_pipeline, bf16 = (), None, False  # checked once, on the paper's text-free teacher


# --- (3), (4), (5): training, sampling, export -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_folder):
    teacher = build(tiny_folder, text=False)
    batches = []
    for i in range(3):
        imgs = images(2, seed=i)
        batches.append(Batch(imgs, PROMPTS, {"low_res": downscale(imgs)}))
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2, guidance=superres.PAPER_GUIDANCE)
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
    cond = teacher.encode_prompts(PROMPTS, {"low_res": downscale(images(2, seed=9))})
    noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    out = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, HIGH, HIGH) and torch.isfinite(out).all()


def test_few_step_scheduler_lands_on_the_trained_timesteps(trained):
    from flashbench_plugins.teachers._sd_family import few_step_scheduler

    teacher, _ = trained
    sched = few_step_scheduler(teacher.scheduler.config)
    assert sched.config.prediction_type == "v_prediction"
    for n in (1, 2, 4):
        sched.set_timesteps(n)  # what StableDiffusionUpscalePipeline calls: it takes no explicit timesteps
        assert sched.timesteps.tolist() == teacher.schedule.sampling_timesteps(n)


def test_student_sample_agrees_with_the_stock_pipeline(trained):
    # checks v -> epsilon, the channel order and the class labels against diffusers' own upscale pipeline.
    # Exact at noise level 0 with a low-res scheduler whose level 0 adds no noise (beta_0 = 0); the pipeline
    # draws that (unused) low-res noise first, then the latents, then LCM's noise after each step but the last.
    from diffusers import DDPMScheduler

    from flashbench_plugins.teachers import _sd_configs as cfg

    teacher, _ = trained
    low = downscale(images(2, seed=7))
    noise_level, teacher.noise_level = teacher.noise_level, 0
    try:
        cond = teacher.encode_prompts(PROMPTS, {"low_res": low})
        g = torch.Generator().manual_seed(0)
        torch.randn(low.shape, generator=g)
        noise = torch.randn((2, *teacher.latent_shape), generator=g)
        ours = student_sample(teacher, cond, noise, 4, g)
        pipe = teacher.pipeline()
        betas = DDPMScheduler(**cfg.X4_LOW_RES_SCHEDULER).betas.clone()
        betas[0] = 0
        pipe.low_res_scheduler = DDPMScheduler(**{**cfg.X4_LOW_RES_SCHEDULER, "trained_betas": betas.tolist()})
        theirs = pipe(
            ["", ""],
            image=(low + 1) / 2,
            noise_level=0,
            num_inference_steps=4,
            guidance_scale=0.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
    finally:
        teacher.noise_level = noise_level
    torch.testing.assert_close((ours.clamp(-1, 1) + 1) / 2, theirs, rtol=0, atol=1e-5)


# --- (6): the config ----------------------------------------------------------------------------------------------
def test_config_is_validated():
    with pytest.raises(ValueError, match="noise_level"):
        superres.SuperResTeacherConfig(noise_level=351)
    with pytest.raises(ValueError, match="dtype"):
        superres.SuperResTeacherConfig(dtype="float8")


# --- (8): LoRA parameter count on the real x4 upscaler UNet -----------------------------------------------------
def test_default_lora_count_on_the_real_unet():
    from flashbench_plugins.teachers import _sd_configs as cfg

    config = superres.SuperResTeacherConfig()
    # the paper states no count for super-resolution: the sd15 defaults, rank 128 on the attention projections
    assert cfg.lora_parameter_count(cfg.X4_UPSCALER_UNET, config.default_lora_rank, config.lora_targets) == 25_690_112
