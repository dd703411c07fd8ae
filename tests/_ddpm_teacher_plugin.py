"""A test plugin: the toy-digits teacher on DDPM's linear beta schedule (1e-4 .. 0.02 over 1000 steps), whose
alpha at t = 999 is 0.0064: a schedule that ends near zero SNR, as a third-party ``UNet2DModel`` teacher
trained with diffusers' ``DDPMScheduler`` defaults would have. Its config declares the noise process, so
``flashbench validate`` can check the student's parametrisation without weights. (The toy network was trained on
SD's schedule: this teacher exercises the host's plumbing, not the quality of such a teacher.)"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl


def ddpm_linear_alphas_cumprod():
    import torch

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


@dataclass(frozen=True)
class DDPMToyConfig:
    default_lora_rank: int = 4

    def noise_process(self):
        """The process this teacher will have (no weights needed): VP-epsilon over DDPM's linear schedule."""
        from flashbench.method.noise import vp_process
        from flashbench.method.schedule import NoiseSchedule

        return vp_process(NoiseSchedule(ddpm_linear_alphas_cumprod()))


def build(config: DDPMToyConfig, *, device="cpu", dtype=None):
    from flashbench.plugins import collect_components, get_plugin_manager

    toy = collect_components(get_plugin_manager(load_entry_points=False)).get("teacher", "toy-digits")
    teacher = toy.build({"default_lora_rank": config.default_lora_rank}, device=device)
    teacher.noise_process = config.noise_process()
    return teacher


@hookimpl
def register_teachers(register):
    register(
        "toy-digits-ddpm",
        build,
        config=DDPMToyConfig,
        description="the toy-digits network on DDPM's linear schedule (test plugin: a schedule ending near zero SNR)",
    )
