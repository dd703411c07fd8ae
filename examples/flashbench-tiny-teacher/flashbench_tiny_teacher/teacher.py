"""``TinyUNetTeacher``: what flashbench's method needs from a diffusion family, for a tiny pixel-space
text-to-image model (diffusers' ``UNet2DConditionModel`` and a byte-level text encoder).

Everything is built from the config with seeded weights, so the example needs no download. A real
family would load its weights here instead (``UNet2DConditionModel.from_pretrained(path, subfolder="unet")``
and the family's text encoder and scheduler) and keep the rest as it is.

The student is the teacher's own UNet with a peft LoRA adapter: ``eps(..., student=True)`` runs with the
adapter, ``student=False`` with adapters disabled, so one copy of the weights serves both.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from flashbench.features import unet_encoder_features
from flashbench.method.schedule import NoiseSchedule
from flashbench.method.teacher import Teacher

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections, as SD's LoRAs


class ByteTextEncoder(nn.Module):
    """Prompts as UTF-8 bytes, embedded with positions: hidden states (B, L, dim), like a CLIP text encoder's."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.token = nn.Embedding(257, dim)  # 0 pads, byte b is b + 1
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)

    @property
    def device(self) -> torch.device:
        """Where the weights are (a diffusers pipeline asks each of its modules for it)."""
        return self.token.weight.device

    def ids(self, prompts: list[str]) -> torch.Tensor:
        rows = [[b + 1 for b in p.encode("utf-8")[: self.max_len]] for p in prompts]
        return torch.tensor([r + [0] * (self.max_len - len(r)) for r in rows], dtype=torch.long, device=self.token.weight.device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.norm(self.token(ids) + self.position(pos))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        return self(self.ids(prompts))


class TinyUNetTeacher(Teacher):
    def __init__(self, config, *, device="cpu", dtype=torch.float32):
        from diffusers import DDIMScheduler, UNet2DConditionModel

        self.config = config
        self.device, self.dtype = torch.device(device), dtype
        n = len(config.block_out_channels)
        # Seeded weights without touching the global RNG (fork_rng restores it afterwards).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.unet = UNet2DConditionModel(
                sample_size=config.sample_size,
                in_channels=config.channels,
                out_channels=config.channels,
                layers_per_block=1,
                block_out_channels=tuple(config.block_out_channels),
                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
                up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                cross_attention_dim=config.cross_attention_dim,
                norm_num_groups=min(32, config.block_out_channels[0]),
            )
            self.text_encoder = ByteTextEncoder(config.cross_attention_dim, config.max_prompt_bytes)
        for module in (self.unet, self.text_encoder):
            module.to(self.device, dtype).eval().requires_grad_(False)
        # SD's scaled-linear schedule on the 1000-step grid; the method reads alphas_cumprod from it.
        self.scheduler = DDIMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
        )
        self.schedule = NoiseSchedule(self.scheduler.alphas_cumprod)
        self.denoiser = self.unet
        self.latent_shape = (config.channels, config.sample_size, config.sample_size)
        self.default_lora_rank = config.default_lora_rank

    # --- conditioning: a dict of tensors, batch first (CFG concatenates cond and null along the batch) ---
    @torch.no_grad()
    def encode_prompts(self, prompts, extras=None):
        return {"encoder_hidden_states": self.text_encoder.encode(list(prompts)).to(self.dtype)}

    # null_condition: the base class encodes empty prompts, as SD's CFG does.

    # --- the denoiser ---
    def _forward(self, module, x, t, cond):
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return module(x.to(self.dtype), t, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    def encoder_features(self, x, t, cond):
        """The frozen teacher's encoder (down blocks + mid block), the discriminator's input (Eq. 8): what the
        UNet's own forward hands its first up block, so no part of that forward is copied here."""
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        with self.adapters_disabled():
            return unet_encoder_features(self.unet, x.to(self.dtype), t, encoder_hidden_states=cond["encoder_hidden_states"])

    def discriminator_input(self):
        downsamples = sum(1 for b in self.unet.down_blocks if getattr(b, "downsamplers", None))
        return self.config.block_out_channels[-1], self.config.sample_size // 2**downsamples

    # --- LoRA: diffusers' peft integration ---
    def add_lora(self, name, rank):
        from peft import LoraConfig

        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)), adapter_name=name)
        self.unet.set_adapter(name)
        params = [p for n, p in self.unet.named_parameters() if "lora_" in n and f".{name}." in n]
        for p in params:
            p.requires_grad_(True)
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

    def save_lora(self, name, folder):
        """The student as a diffusers LoRA file that ``TinyUNetPipeline.load_lora_weights`` reads."""
        from peft.utils import get_peft_model_state_dict

        from .pipeline import TinyUNetPipeline

        folder = Path(folder)
        TinyUNetPipeline.save_lora_weights(str(folder), unet_lora_layers=get_peft_model_state_dict(self.unet, adapter_name=name), safe_serialization=True)
        return folder

    def pipeline(self):
        """The stock pipeline over these very modules, with a few-step scheduler on the trailing grid."""
        from diffusers import LCMScheduler

        from .pipeline import TinyUNetPipeline

        scheduler = LCMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing", original_inference_steps=4)
        return TinyUNetPipeline(self.unet, self.text_encoder, scheduler)
