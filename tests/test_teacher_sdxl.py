"""The ``sdxl`` teacher plugin on a tiny SDXL-shaped folder (real classes, random weights, written from
config with ``model_index.json``) loaded through the plugin's own ``from_pretrained`` path: the conditioning
equals the stock ``StableDiffusionXLPipeline``'s, the published teacher contract, several steps of the full
method, few-step sampling, the LoRA export reloaded into the stock pipeline, the offline error, bf16 on a
GPU, and the paper's LoRA size on the real-size UNet (meta device).
"""

from __future__ import annotations

import json
import math

import pluggy
import pytest
import torch

import flashbench
import flashbench.plugins
from flashbench.method.data import Batch
from flashbench.method.sampling import student_sample
from flashbench.method.teacher import Teacher
from flashbench.testing import TeacherContract, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import sdxl as sdxl_plugin
from flashbench_plugins.teachers._sdxl_configs import write_tiny_sdxl

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = tiny_text_prompts(2)
TIMESTEPS = [999, 749, 499, 249]


def sdxl_component():
    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    pm.register(sdxl_plugin)
    return flashbench.plugins.collect_components(pm).get("teacher", "sdxl")


def build(folder, **options) -> Teacher:
    return sdxl_component().build({"path": str(folder), **options}, device="cpu")


def pipeline_sample(pipe, prompts=PROMPTS, steps: int = 4, **kw):
    """The stock pipeline's few-step student sample: trailing timesteps, no CFG, images in [0, 1]."""
    return pipe(prompts, timesteps=TIMESTEPS[:steps], guidance_scale=0.0, output_type="pt", generator=torch.Generator().manual_seed(0), **kw).images


def up_block_input(teacher, x, t, cond):
    """What the UNet's own forward feeds its first up block: the encoder's output, to check ``encoder_features``."""
    seen = {}

    def grab(module, args, kwargs):
        seen["h"] = kwargs["hidden_states"].clone()

    handle = teacher.unet.up_blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            teacher.eps(x, t, cond, student=False)
    finally:
        handle.remove()
    return seen["h"]


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    return write_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="module")
def teacher(tiny_sdxl):
    return build(tiny_sdxl)


# --- (1) loading a tiny model of the real classes through the plugin -------------------------------------
def test_plugin_loads_the_tiny_folder(teacher, tiny_sdxl):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    assert isinstance(teacher, Teacher) and teacher.source == str(tiny_sdxl)
    assert isinstance(teacher.unet, UNet2DConditionModel) and isinstance(teacher.vae, AutoencoderKL)
    assert isinstance(teacher.text_encoder, CLIPTextModel) and isinstance(teacher.text_encoder_2, CLIPTextModelWithProjection)
    assert teacher.tokenizer_2.pad_token == "!"
    assert teacher.latent_shape == (4, 8, 8) and teacher.resolution == 16  # native: sample_size x VAE scale factor
    assert teacher.force_zeros_for_empty_prompt is True
    assert teacher.vae.config.scaling_factor == 0.13025 and teacher.default_lora_rank == 64
    assert not any(p.requires_grad for m in (teacher.unet, teacher.vae, teacher.text_encoder, teacher.text_encoder_2) for p in m.parameters())


def test_conditioning_equals_the_stock_pipelines(teacher):
    pipe = teacher.pipeline()
    embeds, neg, pooled, neg_pooled = pipe.encode_prompt(PROMPTS, device=torch.device("cpu"), do_classifier_free_guidance=True)
    cond, null = teacher.encode_prompts(PROMPTS), teacher.null_condition(PROMPTS)
    assert set(cond) == {"encoder_hidden_states", "text_embeds", "time_ids"}
    torch.testing.assert_close(cond["encoder_hidden_states"], embeds)
    torch.testing.assert_close(cond["text_embeds"], pooled)
    torch.testing.assert_close(null["encoder_hidden_states"], neg)  # zeros: force_zeros_for_empty_prompt
    torch.testing.assert_close(null["text_embeds"], neg_pooled)
    assert not null["encoder_hidden_states"].any()
    ids = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=torch.float32, text_encoder_projection_dim=32)
    torch.testing.assert_close(cond["time_ids"], ids.repeat(len(PROMPTS), 1))
    torch.testing.assert_close(null["time_ids"], cond["time_ids"])


def test_null_condition_follows_the_models_config(tiny_sdxl, tmp_path):
    """A model whose ``model_index.json`` sets ``force_zeros_for_empty_prompt`` false gets the empty prompt."""
    folder = tmp_path / "no-zeros"
    folder.mkdir()
    for sub in tiny_sdxl.iterdir():
        if sub.is_dir():
            (folder / sub.name).symlink_to(sub, target_is_directory=True)
    index = json.loads((tiny_sdxl / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "force_zeros_for_empty_prompt": False}))
    teacher = build(folder)
    assert teacher.force_zeros_for_empty_prompt is False
    null, empty = teacher.null_condition(PROMPTS), teacher.encode_prompts(["", ""])
    for key in null:
        torch.testing.assert_close(null[key], empty[key])
    assert null["encoder_hidden_states"].abs().sum() > 0
    _, neg, _, neg_pooled = teacher.pipeline().encode_prompt(PROMPTS, device=torch.device("cpu"), do_classifier_free_guidance=True)
    torch.testing.assert_close(null["encoder_hidden_states"], neg)
    torch.testing.assert_close(null["text_embeds"], neg_pooled)


def test_resolution_and_crop_options_set_the_micro_conditioning(tiny_sdxl):
    teacher = build(tiny_sdxl, resolution=32, crop_top=4, crop_left=8)
    assert teacher.latent_shape == (4, 16, 16) and teacher.discriminator_input() == (64, 4)
    assert teacher.encode_prompts(PROMPTS)["time_ids"].tolist() == [[32.0, 32.0, 4.0, 8.0, 32.0, 32.0]] * 2
    with pytest.raises(flashbench.errors.UserError, match="multiple of 8"):
        build(tiny_sdxl, resolution=20)
    with pytest.raises(ValueError, match="dtype"):
        build(tiny_sdxl, dtype="float64")


def test_encoder_features_are_the_unets_own_encoder_output(teacher):
    g = torch.Generator().manual_seed(3)
    x = torch.randn((2, *teacher.latent_shape), generator=g)
    t = torch.tensor([999, 249])
    cond = teacher.encode_prompts(PROMPTS)
    torch.testing.assert_close(teacher.encoder_features(x, t, cond), up_block_input(teacher, x, t, cond))
    other = dict(cond, time_ids=cond["time_ids"] * 2)  # the added micro-conditioning embedding reaches the features
    assert (teacher.encoder_features(x, t, other) - teacher.encoder_features(x, t, cond)).abs().max() > 1e-4


def test_float16_teacher_keeps_the_vae_in_float32(tiny_sdxl):
    teacher = build(tiny_sdxl, dtype="float16")
    assert teacher.unet.dtype == torch.float16 and teacher.text_encoder_2.dtype == torch.float16
    assert teacher.vae.dtype == torch.float32  # force_upcast: SDXL's VAE overflows in float16
    images = teacher.decode(torch.zeros((1, *teacher.latent_shape), dtype=torch.float16))
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert teacher.encode(images).dtype == torch.float16
    pipe_vae = teacher.pipeline().vae
    assert pipe_vae.dtype == torch.float16 and pipe_vae is not teacher.vae  # the stock pipeline upcasts by itself


# --- (2) the published contract --------------------------------------------------------------------------
class TestSDXLContract(TeacherContract):
    lora_rank = 4
    # the contract's opt-in checks: the offline error, the student in a fresh stock pipeline, bf16 on CUDA
    missing_weights = ("nonexistent-org/nonexistent-sdxl",)
    stock_pipeline = "StableDiffusionXLPipeline"
    stock_min_change = 1e-3
    bf16 = True
    bf16_modules = ("denoiser", "vae")

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_sdxl):
        request.cls.folder = tiny_sdxl

    def build_teacher(self, options, *, device="cpu"):
        return sdxl_component().build(options, device=device)

    def teacher_options(self):
        return {"path": str(self.folder)}

    def stock_sample(self, pipe, teacher):
        return pipeline_sample(pipe, self.prompts())

    def smoke_options(self):
        return {"lr": 1e-2}


# --- (3) the full method, (4) sampling, (5) export -----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_sdxl):
    teacher = build(tiny_sdxl)
    g = torch.Generator().manual_seed(0)
    batches = [Batch(torch.rand((2, 3, 16, 16), generator=g) * 2 - 1, tiny_text_prompts(4)[2 * (i % 2) :][:2]) for i in range(4)]
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2)
    yield teacher, stats
    trainer.close()


def test_full_method_steps_have_every_loss_term(trained):
    _, stats = trained
    assert len(stats) == 4 and stats[0].phase == 0 and stats[-1].phase == 3
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in stats[-1].losses and math.isfinite(stats[-1].losses[term]), stats[-1].losses
    assert all(math.isfinite(v) for s in stats for v in s.losses.values())


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_student_samples_at_1_2_4_nfe(trained, steps):
    teacher, _ = trained
    g = torch.Generator().manual_seed(steps)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    images = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, steps, g)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_exported_lora_file_holds_the_unets_adapter(trained, tmp_path):
    from safetensors.torch import load_file

    teacher, _ = trained
    folder = teacher.save_lora("smoke", tmp_path / "lora")
    state = load_file(str(folder / "pytorch_lora_weights.safetensors"))
    assert state and all(k.startswith("unet.") for k in state) and any(".attn2.to_k.lora_A." in k for k in state)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_pipeline_scheduler_is_on_the_trained_grid(teacher, steps):
    scheduler = teacher.pipeline().scheduler
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == TIMESTEPS[:: 4 // steps] == teacher.schedule.sampling_timesteps(steps)


def test_student_sample_agrees_with_the_stock_pipeline(trained):
    """Same noise draws (initial, then one per re-noising): the method's sampler and the pipeline agree, so
    the teacher conditions the UNet as ``StableDiffusionXLPipeline`` does."""
    teacher, _ = trained
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((len(PROMPTS), *teacher.latent_shape), generator=g)
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, 4, g)
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1), pipeline_sample(teacher.pipeline()), rtol=0, atol=1e-5)


# --- (7) GPU (bf16: the contract's) -------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_vae_upcast_on_cuda(tiny_sdxl):
    teacher = sdxl_component().build({"path": str(tiny_sdxl), "dtype": "float16"}, device="cuda")
    images = teacher.decode(torch.randn((2, *teacher.latent_shape), device="cuda", dtype=torch.float16))
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    out = pipeline_sample(teacher.pipeline())
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


# --- (8) the paper's LoRA size, counted on the real-size UNet -------------------------------------------------
def test_paper_lora_parameter_count_on_meta():
    from flashbench_plugins.teachers._sdxl_configs import meta_sdxl_unet
    from flashbench_plugins.teachers._sdxl_family import SDXLTeacher

    config = sdxl_plugin.SDXLTeacherConfig()
    # the teacher's own add_lora on the published UNet config, without loading anything
    shell = SDXLTeacher.__new__(SDXLTeacher)
    shell.unet, shell.lora_targets = meta_sdxl_unet(), config.lora_targets
    assert sum(p.numel() for p in shell.unet.parameters()) == 2_567_463_684
    lora = sum(p.numel() for p in shell.add_lora("count", config.default_lora_rank))
    assert lora == 92_897_280  # rank 64 on to_q, to_k, to_v, to_out.0
    # the paper's 108M also counts its trainable SDXL discriminator head (convs 1280->256->512->1024->1, kernel 4)
    head = 1280 * 256 * 16 + 256 * 512 * 16 + 2 * 512 + 512 * 1024 * 16 + 2 * 1024 + 1024 * 16
    assert 108e6 <= lora + head < 109e6
