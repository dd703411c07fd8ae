"""Builders shared by the tests: a manager holding only the plugins under test, the tiny CLIP text parts
every SD-family test folder needs, random images, a small two-variant study on the embedded world."""

from __future__ import annotations

import pluggy
import torch

import flashbench
from flashbench.plugins import collect_components


def plugin_components(*modules):
    """Components registered by ``modules`` alone (as a third party's plugins would be)."""
    pm = pluggy.PluginManager(flashbench.PROJECT_NAME)
    pm.add_hookspecs(flashbench.hookspecs)
    for module in modules:
        pm.register(module)
    return collect_components(pm)


def tiny_clip_text(root):
    """(text_encoder, tokenizer): a seeded tiny CLIPTextModel and a real CLIPTokenizer written offline."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from flashbench_plugins.teachers import _sd_configs as cfg
    from flashbench_plugins.toy.models import write_clip_tokenizer

    tokenizer_dir = write_clip_tokenizer(root / "_tokenizer", model_max_length=77)
    return CLIPTextModel(CLIPTextConfig(**cfg.TINY_CLIP_TEXT)).eval(), CLIPTokenizer.from_pretrained(str(tokenizer_dir))


def random_images(n, size, seed=0):
    """(n, 3, size, size) uniform in [-1, 1], seeded."""
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def write_tiny_pipeline(root, pipeline_cls, *, vae: dict, unet: dict, scheduler: dict, **extra):
    """Save a ``pipeline_cls`` of tiny seeded components (VAE, CLIP text, UNet, DDIM schedule and the
    pipeline's ``extra`` arguments) as a diffusers folder; returns the folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    text_encoder, tokenizer = tiny_clip_text(root)
    pipe = pipeline_cls(
        vae=AutoencoderKL(**vae).eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet).eval(),
        scheduler=DDIMScheduler(**scheduler),
        **extra,
    )
    pipe.save_pretrained(root / "model")
    return root / "model"


def build_teacher(module, name: str, folder, **options):
    """The teacher ``name`` registered by plugin ``module``, loaded from ``folder`` on the CPU."""
    return plugin_components(module).get("teacher", name).build({"path": str(folder), **options}, device="cpu")


def missing_weights_message(make) -> str:
    """``make()`` must raise MissingWeightsError with a one-line message; returns the message."""
    import pytest

    from flashbench.errors import MissingWeightsError

    with pytest.raises(MissingWeightsError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message, message
    return message


TWO_VARIANT_STUDY = """
[study]
name = "{name}"
seeds = [0]
primary_nfe = 4
[base]
teacher = "toy-digits"
dataset = "toy-digits"
solver = "ddim"
num_timesteps = 8
phase_length = 3
iterations = {iterations}
checkpoint_every = {checkpoint_every}
batch_size = {batch_size}
learning_rate = 1e-3
disc_learning_rate = 1e-3
guidance_min = 1.5
guidance_max = 3.0
log_every = 4
[base.eval]
nfe = [2, 4]
prompts = "toy-digits"
evaluators = ["toy-fd", "toy-clip-score"]
num_samples = 64
batch_size = 16
teacher_steps = [4]
grid_size = 4
[[variants]]
name = "distil"
adv_loss = "none"
dmd_loss = "none"
[[variants]]
name = "full"
"""


def two_variant_study(path, *, name="tiny", iterations=12, checkpoint_every=4, batch_size=4):
    """Write a toy study of two variants (distillation alone; all three losses): 14 result rows."""
    path.write_text(TWO_VARIANT_STUDY.format(name=name, iterations=iterations, checkpoint_every=checkpoint_every, batch_size=batch_size))
    return path
