"""Builders shared by the teacher tests: a manager holding only the plugins under test, the tiny CLIP
text parts every SD-family test folder needs, random images."""
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
    pipe = pipeline_cls(vae=AutoencoderKL(**vae).eval(), text_encoder=text_encoder, tokenizer=tokenizer,
                        unet=UNet2DConditionModel(**unet).eval(), scheduler=DDIMScheduler(**scheduler), **extra)
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
