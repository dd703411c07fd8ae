"""Shared code of the Stable-Diffusion-like teachers: a ``UNet2DConditionModel`` conditioned on a CLIP text
encoder's hidden states, an optional VAE (absent: pixel space), a DDPM-family noise schedule.

Loading is diffusers' own ``from_pretrained`` of a hub id or a local folder (subfolders ``unet``,
``text_encoder``, ``tokenizer``, ``scheduler`` and, for latent models, ``vae``); offline, a missing hub
model fails with one line saying which id and how to give a local folder instead.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping

import torch
from torch import nn

from flashbench.errors import MissingWeightsError
from flashbench.method.schedule import NoiseSchedule
from flashbench.method.teacher import Teacher

DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "conv_shortcut", "time_emb_proj")


def _load(cls, source: str, subfolder: str, **kw):
    try:
        return cls.from_pretrained(source, subfolder=subfolder, **kw)
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            raise MissingWeightsError(f"cannot load {subfolder!r} from local folder {source}: {exc}".splitlines()[0]) from None
        raise MissingWeightsError(
            f"teacher weights {source!r} ({subfolder}) are not on this machine and cannot be downloaded here; "
            f"download them elsewhere (huggingface-cli download {source}) and set the teacher's path option to that folder"
        ) from None


class SDFamilyTeacher(Teacher):
    def __init__(self, source: str, *, device="cpu", dtype=torch.float32, lora_targets=DEFAULT_LORA_TARGETS, default_lora_rank: int = 64, pipeline_cls=None):
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per component drowns the run's own bars

        self.source = str(source)
        self.device, self.dtype = torch.device(device), dtype
        self.unet = _load(UNet2DConditionModel, self.source, "unet", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.text_encoder = _load(CLIPTextModel, self.source, "text_encoder", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.tokenizer = _load(CLIPTokenizer, self.source, "tokenizer")
        self.scheduler = _load(DDIMScheduler, self.source, "scheduler")
        self.vae = None
        if (Path(self.source) / "vae").exists() or not Path(self.source).exists():
            from diffusers import AutoencoderKL

            self.vae = _load(AutoencoderKL, self.source, "vae", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.denoiser = self.unet
        self.schedule = NoiseSchedule(self.scheduler.alphas_cumprod)
        cfg = self.unet.config
        size = cfg.sample_size
        self.latent_shape = (cfg.in_channels, size, size)
        self.lora_targets = tuple(lora_targets)
        self.default_lora_rank = default_lora_rank
        self.pipeline_cls = pipeline_cls
        self._prompt_cache: dict[str, torch.Tensor] = {}

    # --- conditioning ---
    @torch.no_grad()
    def encode_prompts(self, prompts, extras=None):
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            hidden = self.text_encoder(ids.to(self.device))[0]
            # the cache is small (one row per distinct prompt) and saves the text encoder on every step
            if len(self._prompt_cache) < 4096:
                self._prompt_cache.update(zip(missing, hidden))
            else:
                return {"encoder_hidden_states": self._encode_uncached(prompts)}
        return {"encoder_hidden_states": torch.stack([self._prompt_cache[p] for p in prompts])}

    @torch.no_grad()
    def _encode_uncached(self, prompts):
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    # --- denoiser ---
    def _forward(self, module, x, t, cond):
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return module(x.to(self.dtype), t, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    def encoder_features(self, x, t, cond):
        """The UNet's down blocks and mid block (the encoder), run with the adapters disabled."""
        unet = self.unet
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        ehs = cond["encoder_hidden_states"]
        with self.adapters_disabled():
            emb = unet.time_embedding(unet.time_proj(t).to(x.dtype))
            h = unet.conv_in(x)
            for block in unet.down_blocks:
                if getattr(block, "has_cross_attention", False):
                    h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=ehs)
                else:
                    h, _ = block(hidden_states=h, temb=emb)
            if unet.mid_block is not None:
                h = unet.mid_block(h, emb, encoder_hidden_states=ehs)
        return h

    def discriminator_input(self):
        cfg = self.unet.config
        downsamples = sum(1 for b in self.unet.down_blocks if getattr(b, "downsamplers", None))
        return cfg.block_out_channels[-1], cfg.sample_size // (2**downsamples)

    # --- latents ---
    def encode(self, images):
        if self.vae is None:
            return images.to(self.device, self.dtype)
        lat = self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mean
        return lat * self.vae.config.scaling_factor

    def decode(self, latents):
        if self.vae is None:
            return latents
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    # --- LoRA (peft through diffusers' integration) ---
    def add_lora(self, name, rank):
        from peft import LoraConfig

        targets = [t for t in self.lora_targets if any(n.endswith(t) for n, _ in self.unet.named_modules())]
        config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets)
        self.unet.add_adapter(config, adapter_name=name)
        self.unet.set_adapter(name)
        params = []
        for n, p in self.unet.named_parameters():
            if "lora_" in n and f".{name}." in n:
                p.requires_grad_(True)
                params.append(p)
        return params

    def remove_lora(self, name):
        if getattr(self.unet, "_hf_peft_config_loaded", False) and name in self.unet.peft_config:
            self.unet.delete_adapters(name)

    @contextlib.contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        if not getattr(self.unet, "_hf_peft_config_loaded", False):
            yield
            return
        self.unet.disable_adapters()
        try:
            yield
        finally:
            self.unet.enable_adapters()

    def lora_state_dict(self, name):
        from peft.utils import get_peft_model_state_dict

        # PEFT-format keys (``lora_A``/``lora_B``), which ``load_lora_weights`` reads as they are. Not
        # ``convert_state_dict_to_diffusers``: it renames only the attention projections (to the legacy
        # ``lora.down``/``lora.up``), and the loader, seeing the conv/FF layers' ``lora_A`` keys, takes the
        # whole file for PEFT format and silently drops every attention LoRA.
        return get_peft_model_state_dict(self.unet, adapter_name=name)

    def save_lora(self, name, folder):
        folder = Path(folder)
        self.pipeline_class().save_lora_weights(str(folder), unet_lora_layers=self.lora_state_dict(name), safe_serialization=True)
        return folder

    def pipeline_class(self):
        if self.pipeline_cls is not None:
            return self.pipeline_cls
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def pipeline(self):
        """``StableDiffusionPipeline`` over these components, with a trailing ``LCMScheduler`` (few-step
        student sampling on explicit timesteps). Pixel-space families give their own (see ``toy-digits``)."""
        if self.vae is None or self.pipeline_cls is not None:
            raise NotImplementedError(f"{type(self).__name__} from {self.source} has no default pipeline; the teacher plugin must provide one")
        from diffusers import LCMScheduler, StableDiffusionPipeline

        sched = LCMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing")
        return StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet, scheduler=sched,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
