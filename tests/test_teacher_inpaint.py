"""``inpaint``: a tiny SD-inpainting pipeline (9-channel UNet, the real classes, random weights) saved with
``save_pretrained`` and loaded through the plugin; the teacher contract with mask + image extras; the
inpainting inputs as the stock pipeline builds them; several full-method training steps; student samples at
1, 2 and 4 NFEs; the exported LoRA reloaded into a fresh ``StableDiffusionInpaintPipeline`` (``image=``,
``mask_image=``) reproduces the in-memory student; the offline error; bf16 on CUDA; the LoRA count on the
real inpainting UNet config.
"""

from __future__ import annotations

import math

import pytest
import torch

from flashbench.method.data import Batch
from flashbench.method.sampling import student_sample
from flashbench.testing import MissingWeights, TeacherContract, flash_training_smoke
from flashbench_plugins.teachers import inpaint

from _builders import build_teacher, plugin_components, random_images, write_tiny_pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red car on a beach", "a cat with a bow tie"]
IMAGE_SIZE = 16  # tiny VAE: 2x the 8x8 latents


def write_tiny_inpainting(root):
    """A ``StableDiffusionInpaintPipeline`` of tiny seeded components, saved as a diffusers folder."""
    from diffusers import StableDiffusionInpaintPipeline

    from flashbench_plugins.teachers import _sd_configs as cfg

    return write_tiny_pipeline(
        root,
        StableDiffusionInpaintPipeline,
        vae=cfg.TINY_VAE,
        unet=cfg.TINY_INPAINT_UNET,
        scheduler=cfg.SD15_SCHEDULER,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def components():
    return plugin_components(inpaint)


def build(folder, **options):
    return build_teacher(inpaint, "inpaint", folder, **options)


def images(n, seed=0):
    return random_images(n, IMAGE_SIZE, seed)


def rectangle_masks(n, size=IMAGE_SIZE, seed=0):
    """(n, 1, size, size) masks, 1 inside one random rectangle (at least a quarter of each side) per image."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size)
    for m in masks:
        h, w = (int(v) for v in torch.randint(size // 4, size // 2 + 1, (2,), generator=g))
        top, left = (int(v) for v in torch.randint(0, size - max(h, w) + 1, (2,), generator=g))
        m[:, top : top + h, left : left + w] = 1
    return masks


def extras_for(imgs, seed=0):
    return {"mask": rectangle_masks(len(imgs), seed=seed), "image": imgs}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_inpainting(tmp_path_factory.mktemp("tiny-inpaint"))


# --- (1) + (2): loading through the plugin, the contract -----------------------------------------------------
class TestInpaintContract(TeacherContract):
    # the contract's opt-in checks: the offline errors, the student in a fresh stock pipeline, bf16 on CUDA
    missing_weights = ("nonexistent-org/nonexistent-inpainting", MissingWeights({}, "stable-diffusion-v1-5/stable-diffusion-inpainting"))
    stock_pipeline = "StableDiffusionInpaintPipeline"
    bf16 = True

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_folder):
        request.cls.folder = tiny_folder

    def build_teacher(self, options, *, device="cpu"):
        return components().get("teacher", "inpaint").build(options, device=device)

    def teacher_options(self):
        return {"path": str(self.folder), "default_lora_rank": 4}

    def prompts(self):
        return PROMPTS

    def extras(self):
        return extras_for(images(2))

    def batch_extras(self, imgs, seed):
        return extras_for(imgs, seed=seed)

    def stock_sample(self, pipe, teacher):
        timesteps = teacher.schedule.sampling_timesteps(4)
        out = pipe(
            PROMPTS,
            image=(images(2, seed=7) + 1) / 2,
            mask_image=rectangle_masks(2, seed=7),
            height=IMAGE_SIZE,
            width=IMAGE_SIZE,
            timesteps=timesteps,
            guidance_scale=0.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
        assert pipe.scheduler.timesteps.tolist() == timesteps
        assert out.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
        return out

    def test_loaded_from_the_folder(self, teacher):
        assert teacher.unet.config.in_channels == 9 and teacher.latent_shape == (4, 8, 8)
        assert teacher.source == str(self.folder)

    @torch.no_grad()
    def test_inpainting_inputs_as_the_pipeline_builds_them(self, teacher):
        imgs, extras = images(2), self.extras()
        cond = teacher.encode_prompts(PROMPTS, extras)
        null = teacher.null_condition(PROMPTS, extras)
        mask = extras["mask"]
        assert set(cond) == {"encoder_hidden_states", "mask", "masked_image_latents"}
        self.assert_same(cond["masked_image_latents"], teacher.encode(imgs * (1 - mask)), "masked-image latents")
        self.assert_same(cond["mask"], torch.nn.functional.interpolate(mask, size=(8, 8)), "latent-size mask")
        # CFG's null: the same mask and masked image, the empty prompt
        for key in ("mask", "masked_image_latents"):
            self.assert_same(null[key], cond[key], f"null {key}")
        self.assert_same(null["encoder_hidden_states"], teacher.encode_prompts(["", ""], extras)["encoder_hidden_states"], "null text")
        # a precomputed masked image gives the same inputs
        again = teacher.encode_prompts(PROMPTS, {"mask": mask, "masked_image": imgs * (1 - mask)})
        self.assert_same(again["masked_image_latents"], cond["masked_image_latents"], "masked_image extra")

    @torch.no_grad()
    def test_the_mask_changes_the_prediction(self, teacher, inputs):
        x, t, cond = inputs
        other = teacher.encode_prompts(PROMPTS, extras_for(images(2), seed=5))
        self.assert_differs(teacher.eps(x, t, other, student=False), teacher.eps(x, t, cond, student=False), "eps with another mask")

    def test_missing_extras_are_a_clear_error(self, teacher):
        with pytest.raises(ValueError, match="mask"):
            teacher.encode_prompts(PROMPTS, None)
        with pytest.raises(ValueError, match="image"):
            teacher.encode_prompts(PROMPTS, {"mask": rectangle_masks(2)})


# --- (3), (4), (5): training, sampling, export -------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_folder):
    teacher = build(tiny_folder)
    batches = []
    for i in range(3):
        imgs = images(2, seed=i)
        batches.append(Batch(imgs, PROMPTS, extras_for(imgs, seed=i)))
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
    cond = teacher.encode_prompts(PROMPTS, extras_for(images(2, seed=9), seed=9))
    noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    out = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(out).all()


def test_student_sample_agrees_with_the_stock_pipeline(trained):
    # exact comparison: the pipeline gets the teacher's masked-image latents (it would otherwise sample the
    # VAE posterior with the generator); the 9-channel UNet's order [latents, mask, masked latents] must match
    teacher, _ = trained
    imgs, mask = images(2, seed=7), rectangle_masks(2, seed=7)
    cond = teacher.encode_prompts(PROMPTS, {"mask": mask, "image": imgs})
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    ours = student_sample(teacher, cond, noise, 4, g)
    theirs = teacher.pipeline()(
        PROMPTS,
        image=(imgs + 1) / 2,
        mask_image=mask,
        masked_image_latents=cond["masked_image_latents"],
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        timesteps=[999, 749, 499, 249],
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    torch.testing.assert_close((ours.clamp(-1, 1) + 1) / 2, theirs, rtol=0, atol=1e-5)


# --- (8): LoRA parameter count on the real inpainting UNet ------------------------------------------------------
def test_default_lora_count_on_the_real_unet():
    from flashbench_plugins.teachers import _sd_configs as cfg

    config = inpaint.InpaintTeacherConfig()
    # the paper states no count for inpainting: the sd15 defaults, rank 128 on the attention projections
    assert cfg.lora_parameter_count(cfg.SD_INPAINT_UNET, config.default_lora_rank, config.lora_targets) == 25_509_888
