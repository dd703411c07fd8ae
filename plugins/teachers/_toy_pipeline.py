"""``ToyDigitsPipeline``: the stock pipeline of the pixel-space toy teacher.

A ``DiffusionPipeline`` with Stable Diffusion's LoRA loader mixin (so ``load_lora_weights`` /
``save_lora_weights`` are diffusers' own) and a plain sampling loop over any diffusers scheduler:
CFG when ``guidance_scale > 1``; explicit ``timesteps`` (the student's [999, 749, 499, 249]) are passed
to the scheduler unchanged.

The same loop samples the rectified-flow toy teacher (``toy-digits-flow``) with a
``FlowMatchEulerDiscreteScheduler``: the UNet's output is then the velocity, which that scheduler's ``step``
takes as it is; ``sigmas`` (e.g. the student's [1.0, 0.75, 0.5, 0.25]) go to its ``set_timesteps``, and a
scheduler without ``init_noise_sigma`` (the flow ones) starts from unit noise. With
``stochastic_sampling=True`` its step is the Flash student's (x0 re-noised to the next sigma with fresh
noise): :func:`flow_few_step_scheduler`.
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor


class ToyDigitsPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    @torch.no_grad()
    def _embed(self, prompts):
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    @torch.no_grad()
    def __call__(self, prompt, num_inference_steps: int = 4, timesteps=None, guidance_scale: float = 1.0, generator=None, latents=None, sigmas=None):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        cond = self._embed(prompts)
        do_cfg = guidance_scale > 1.0
        if do_cfg:
            cond = torch.cat([cond, self._embed([""] * len(prompts))])
        if sigmas is not None:
            self.scheduler.set_timesteps(sigmas=list(sigmas), device=self.device)
        elif timesteps is not None:
            self.scheduler.set_timesteps(timesteps=list(timesteps), device=self.device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        c = self.unet.config
        shape = (len(prompts), c.in_channels, c.sample_size, c.sample_size)
        x = latents if latents is not None else randn_tensor(shape, generator=generator, device=self.device)
        x = x * getattr(self.scheduler, "init_noise_sigma", 1.0)  # the flow schedulers start from unit noise
        for t in self.scheduler.timesteps:
            inp = torch.cat([x, x]) if do_cfg else x
            eps = self.unet(inp, t, encoder_hidden_states=cond).sample
            if do_cfg:
                e_c, e_u = eps.chunk(2)
                eps = e_u + guidance_scale * (e_c - e_u)
            out = self.scheduler.step(eps, t, x, generator=generator)
            x = out.prev_sample
        final = getattr(out, "denoised", None)
        return (final if final is not None else x).clamp(-1, 1)


def flow_few_step_scheduler(scheduler_config):
    """The exported flow student's sampler: the teacher's ``FlowMatchEulerDiscreteScheduler`` config with
    ``stochastic_sampling=True`` (x0 = x - sigma u, re-noised to the next sigma with fresh noise: the ``flash``
    sampler); pass ``sigmas=[1.0, 0.75, 0.5, 0.25][:n]`` (n = 4; [1.0, 0.5] for 2, [1.0] for 1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config, stochastic_sampling=True)
