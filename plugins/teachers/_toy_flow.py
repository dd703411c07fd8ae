"""``ToyFlowTeacher``: the SD family's UNet teacher (:class:`~._sd_family.SDFamilyTeacher`) on a rectified-flow
scheduler, the class behind ``toy-digits-flow`` (imported when the teacher is built: it needs torch)."""

from __future__ import annotations

import torch

from flashbench.method.noise import RectifiedFlow

from ._sd_family import DEFAULT_LORA_TARGETS, SDFamilyTeacher, _load
from ._toy_pipeline import ToyDigitsPipeline, flow_few_step_scheduler


class ToyFlowTeacher(SDFamilyTeacher):
    """Everything but loading, the noise process and the pipelines is :class:`SDFamilyTeacher`'s: its ``_forward``
    returns the UNet's raw output, which is here the velocity eps - x0 (``noise_process.prediction == "flow"``)."""

    #: the ``lpips`` loss (net = "auto") measures with the toy digit classifier's stages, not an ImageNet VGG
    perceptual_net = "toy-digits"

    def __init__(self, source: str, *, device="cpu", dtype=torch.float32, default_lora_rank: int = 16):
        # not SDFamilyTeacher.__init__: it reads a DDPM-family scheduler (alphas_cumprod, prediction_type)
        from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.source, self.device, self.dtype = str(source), torch.device(device), dtype
        self.unet = _load(UNet2DConditionModel, self.source, "unet", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.text_encoder = _load(CLIPTextModel, self.source, "text_encoder", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.tokenizer = _load(CLIPTokenizer, self.source, "tokenizer")
        self.scheduler = _load(FlowMatchEulerDiscreteScheduler, self.source, "scheduler")
        self.vae = None
        self.denoiser = self.unet
        size = self.unet.config.sample_size
        self.latent_shape = (self.unet.config.out_channels, size, size)
        self.prediction_type = "flow"
        self.noise_process = RectifiedFlow.from_scheduler_config(self.scheduler.config)
        self.lora_targets = DEFAULT_LORA_TARGETS
        self.default_lora_rank = default_lora_rank
        self.pipeline_cls = ToyDigitsPipeline
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def pipeline(self):
        """``ToyDigitsPipeline`` over these components with the flow student's few-step scheduler
        (``FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)``; pass ``sigmas=[1.0, 0.5]`` for 2 steps)."""
        return ToyDigitsPipeline(self.unet, self.text_encoder, self.tokenizer, flow_few_step_scheduler(self.scheduler.config))

    def teacher_pipeline(self):
        """The teacher's own sampler: the plain (deterministic) ``FlowMatchEulerDiscreteScheduler``; CFG with
        ``guidance_scale > 1``."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return ToyDigitsPipeline(self.unet, self.text_encoder, self.tokenizer, FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config))
