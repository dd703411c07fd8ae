"""``ToyDigitsTeacher``: the SD family's UNet teacher (:class:`~._sd_family.SDFamilyTeacher`) without a VAE, the
class behind ``toy-digits`` (imported when the teacher is built: it needs torch)."""

from __future__ import annotations

import torch

from ._sd_family import SDFamilyTeacher
from ._toy_pipeline import ToyDigitsPipeline


class ToyDigitsTeacher(SDFamilyTeacher):
    """Everything but the pipeline and the perceptual backbone is :class:`SDFamilyTeacher`'s (with
    :class:`ToyDigitsPipeline` as its pipeline class: pixel space, no VAE)."""

    #: the ``lpips`` loss (net = "auto") measures with the toy digit classifier's stages, not an ImageNet VGG
    perceptual_net = "toy-digits"

    def __init__(self, source: str, *, device="cpu", dtype=torch.float32, default_lora_rank: int = 16):
        super().__init__(source, device=device, dtype=dtype, default_lora_rank=default_lora_rank, pipeline_cls=ToyDigitsPipeline)

    def pipeline(self):
        """``ToyDigitsPipeline`` over these components with the few-step ``LCMScheduler`` (trailing timesteps)."""
        from diffusers import LCMScheduler

        scheduler = LCMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing")
        return ToyDigitsPipeline(self.unet, self.text_encoder, self.tokenizer, scheduler)
