"""A third party's rectified-flow teacher, as a plugin: a tiny seeded ``SD3Transformer2DModel`` (built from
config, random weights, no download) whose noise process is rectified flow with SD3's shift.

Nothing of the host is changed for it: the teacher sets ``noise_process``, its ``_forward`` returns the
transformer's raw velocity, and it is registered through the ordinary ``register_teachers`` hook. The
method (trainer step, teacher solves, few-step sampler) reads everything else from the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from flashbench import hookimpl
from flashbench.method.noise import RectifiedFlow
from flashbench.method.teacher import Teacher

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@dataclass(frozen=True)
class TinyFlowConfig:
    sample_size: int = 16
    channels: int = 4
    width: int = 16  # heads x head dim
    num_layers: int = 2
    text_dim: int = 16
    shift: float = 3.0  # SD3-medium's
    seed: int = 0
    default_lora_rank: int = 4


class ByteText(nn.Module):
    """Prompts as UTF-8 bytes: (B, 16, dim) token states and their mean as the pooled embedding."""

    def __init__(self, dim: int, max_len: int = 16):
        super().__init__()
        self.max_len = max_len
        self.token = nn.Embedding(257, dim)

    @torch.no_grad()
    def forward(self, prompts: list[str]):
        rows = [[b + 1 for b in p.encode("utf-8")[: self.max_len]] for p in prompts]
        ids = torch.tensor([r + [0] * (self.max_len - len(r)) for r in rows], device=self.token.weight.device)
        states = self.token(ids)
        return states, states.mean(dim=1)


class TinyFlowTeacher(Teacher):
    def __init__(self, config: TinyFlowConfig, *, device="cpu", dtype=torch.float32):
        from diffusers import SD3Transformer2DModel

        self.config, self.device, self.dtype = config, torch.device(device), dtype
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.transformer = SD3Transformer2DModel(
                sample_size=config.sample_size,
                patch_size=2,
                in_channels=config.channels,
                out_channels=config.channels,
                num_layers=config.num_layers,
                attention_head_dim=config.width // 2,
                num_attention_heads=2,
                joint_attention_dim=config.text_dim,
                caption_projection_dim=config.width,
                pooled_projection_dim=config.text_dim,
                pos_embed_max_size=config.sample_size,
            )
            self.text = ByteText(config.text_dim)
        for module in (self.transformer, self.text):
            module.to(self.device, dtype).eval().requires_grad_(False)
        self.denoiser = self.transformer
        # the teacher's noise process: what the method reads instead of an alphas_cumprod schedule
        self.noise_process = RectifiedFlow(shift=config.shift)
        self.latent_shape = (config.channels, config.sample_size, config.sample_size)
        self.default_lora_rank = config.default_lora_rank

    def encode_prompts(self, prompts, extras=None):
        states, pooled = self.text(list(prompts))
        return {"encoder_hidden_states": states.to(self.dtype), "pooled_projections": pooled.to(self.dtype)}

    # a stand-in VAE: RGB plus its mean as a 4th channel, at the image's size (the method only needs latents)
    def encode(self, images):
        images = images.to(self.device, self.dtype)
        return torch.cat([images, images.mean(dim=1, keepdim=True)], dim=1)

    def decode(self, latents):
        return latents[:, :3]

    def _forward(self, module, x, t, cond):
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return module(
            hidden_states=x.to(self.dtype), encoder_hidden_states=cond["encoder_hidden_states"], pooled_projections=cond["pooled_projections"], timestep=t
        ).sample

    def encoder_features(self, x, t, cond):
        """The image tokens after the first transformer block (a DiT's 'encoder'), as a (B, width, h, w) map."""
        tr = self.transformer
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        with self.adapters_disabled():
            h = tr.pos_embed(x.to(self.dtype))
            temb = tr.time_text_embed(t, cond["pooled_projections"])
            ctx = tr.context_embedder(cond["encoder_hidden_states"])
            ctx, h = tr.transformer_blocks[0](hidden_states=h, encoder_hidden_states=ctx, temb=temb)
        side = self.config.sample_size // 2
        return h.transpose(1, 2).reshape(x.shape[0], -1, side, side)

    def discriminator_input(self):
        return self.config.width, self.config.sample_size // 2

    def add_lora(self, name, rank):
        from peft import LoraConfig

        self.transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)), adapter_name=name)
        self.transformer.set_adapter(name)
        params = [p for n, p in self.transformer.named_parameters() if "lora_" in n and f".{name}." in n]
        for p in params:
            p.requires_grad_(True)
        return params

    def remove_lora(self, name):
        if getattr(self.transformer, "_hf_peft_config_loaded", False) and name in self.transformer.peft_config:
            self.transformer.delete_adapters(name)

    def save_lora(self, name, folder):
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self.transformer, adapter_name=name)
        save_file({f"transformer.{k}": v.contiguous() for k, v in state.items()}, str(folder / "pytorch_lora_weights.safetensors"))
        return folder

    def pipeline(self):
        """No stock pipeline for a test family: the transformer itself, which ``load_lora_adapter`` reads."""
        return SimpleNamespace(transformer=self.transformer)


def build(config: TinyFlowConfig, *, device="cpu", dtype=None):
    return TinyFlowTeacher(config, device=device, dtype=dtype or torch.float32)


@hookimpl
def register_teachers(register):
    register("tiny-flow", build, config=TinyFlowConfig, description="tiny SD3-like rectified-flow teacher (test plugin)")
