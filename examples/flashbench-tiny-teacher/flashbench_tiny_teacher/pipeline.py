"""``TinyUNetPipeline``: the family's stock diffusers pipeline, what a user loads the distilled student into.

A ``DiffusionPipeline`` with Stable Diffusion's LoRA loader mixin, so ``save_lora_weights`` and
``load_lora_weights`` are diffusers' own, and a plain sampling loop (CFG when ``guidance_scale > 1``;
explicit ``timesteps`` such as the student's ``[999, 749, 499, 249]`` go to the scheduler unchanged).
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor


class TinyUNetPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, text_encoder, scheduler):
        super().__init__()
        # load_lora_weights looks for both `unet` and `text_encoder` (the file holds only the UNet's LoRA)
        self.register_modules(unet=unet, text_encoder=text_encoder, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, prompt, num_inference_steps: int = 4, timesteps=None, guidance_scale: float = 1.0, generator=None, latents=None):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        cond = self.text_encoder.encode(prompts)
        do_cfg = guidance_scale > 1.0
        if do_cfg:
            cond = torch.cat([cond, self.text_encoder.encode([""] * len(prompts))])
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=list(timesteps), device=self.device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        c = self.unet.config
        x = (
            latents
            if latents is not None
            else randn_tensor((len(prompts), c.in_channels, c.sample_size, c.sample_size), generator=generator, device=self.device)
        )
        x = x * self.scheduler.init_noise_sigma
        for t in self.scheduler.timesteps:
            eps = self.unet(torch.cat([x, x]) if do_cfg else x, t, encoder_hidden_states=cond).sample
            if do_cfg:
                e_c, e_u = eps.chunk(2)
                eps = e_u + guidance_scale * (e_c - e_u)
            x = self.scheduler.step(eps, t, x, generator=generator).prev_sample
        return x.clamp(-1, 1)
