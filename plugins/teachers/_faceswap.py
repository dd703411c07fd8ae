"""The face-swap teacher and its pipeline: an SD2-like ``UNet2DConditionModel`` whose extra input channels
carry the source face (see :mod:`flashbench_plugins.teachers.faceswap` for the conventions).

The UNet's input is ``cat([z_t, *conditioning], dim=1)``, the conditioning in the order of the ``inputs``
option:

* ``source_face``: the source face crop (``extras["source_face"]``, (B, 3, h, w) in [-1, 1]) resized to the
  model's image size and encoded by the VAE (latent mean x scaling factor): ``latent_channels`` channels;
* ``masked_target``: the target image with the face region blanked (``extras["masked_image"]``), encoded
  the same way: ``latent_channels`` channels;
* ``face_mask``: the face region (``extras["face_mask"]``, (B, 1, H, W)), resized (nearest) to the latent
  size: 1 channel.

Null conditioning (CFG): the empty prompt and the source-face latents set to zero; the target's context
(masked target, mask) stays, as an inpainting model keeps its masked image in the unconditional branch.

Prediction type: the scheduler's ``prediction_type`` (SD2 models are often ``v_prediction``) picks the SD
family's noise process (``vp-epsilon`` or ``vp-v``), which turns the UNet's raw output into x0: with
z_t = a x0 + s eps (a = sqrt(acp), s = sqrt(1 - acp)) and v = a eps - s x0, x0 = a z_t - s v.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.utils.torch_utils import randn_tensor

from flashbench.errors import MissingWeightsError, UserError

from ._sd_family import SDFamilyTeacher, few_step_scheduler
from ._faceswap_configs import LORA_TARGETS as FACESWAP_LORA_TARGETS  # the transformer blocks' attention, projections, FF

#: input name -> (extras key, cond key); the channel count is the VAE's latent channels, 1 for the mask
INPUTS: dict[str, tuple[str, str]] = {
    "source_face": ("source_face", "source_latents"),
    "masked_target": ("masked_image", "masked_target_latents"),
    "face_mask": ("face_mask", "face_mask"),
}

#: An SD2-base-like face-swap UNet at 512 px (stabilityai/stable-diffusion-2-base's unet/config.json) with the
#: source face's 4 latent channels concatenated to the 4 noisy ones: used on the meta device to count the
#: default LoRA's parameters without weights.
SD2_FACESWAP_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 8,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "attention_head_dim": (5, 10, 20, 20),
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
    "dual_cross_attention": False,
}


def lora_parameter_count(unet_config: Mapping, rank: int, targets=FACESWAP_LORA_TARGETS) -> int:
    """Trainable parameters of the LoRA on a UNet built from ``unet_config`` on the meta device (no weights)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    with torch.device("meta"):
        unet = UNet2DConditionModel(**dict(unet_config))
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets)))
    return sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)


def input_channels(inputs, latent_channels: int) -> int:
    return sum(1 if name == "face_mask" else latent_channels for name in inputs)


@torch.no_grad()
def encode_conditioning(vae, inputs, extras: Mapping | None, *, image_size: int, latent_size: int, device, dtype, who: str) -> dict[str, torch.Tensor]:
    """The encoded conditioning tensors (cond keys of :data:`INPUTS`) of the face-swap UNet's extra channels."""
    out = {}
    for name in inputs:
        key, cond_key = INPUTS[name]
        value = None if extras is None else extras.get(key)
        if value is None:
            raise UserError(f"{who} needs extras[{key!r}] for its {name!r} input (a dataset with task = \"faceswap\" gives it)")
        value = torch.as_tensor(value).to(device, dtype)
        if name == "face_mask":
            out[cond_key] = F.interpolate(value, size=(latent_size, latent_size), mode="nearest")
            continue
        if value.shape[-2:] != (image_size, image_size):
            size = (image_size, image_size)
            value = F.interpolate(value.float(), size=size, mode="bilinear", antialias=True, align_corners=False).to(dtype)
        out[cond_key] = vae.encode(value).latent_dist.mean * vae.config.scaling_factor
    return out


def null_conditioning(cond: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The unconditional branch's extra channels: the source face zeroed, the target's context kept."""
    return {k: torch.zeros_like(v) if k == INPUTS["source_face"][1] else v for k, v in cond.items()}


class FaceSwapTeacher(SDFamilyTeacher):
    """The SD family's teacher with the face's channels: ``concat_keys`` (the family's channel-concat mechanism)
    are the encoded ``inputs``; the family's ``_forward`` concatenates them (its noise process reads
    v-prediction), and its ``encoder_features`` runs the UNet's encoder on the same concatenated input."""

    def __init__(
        self, source: str, *, inputs=("source_face",), device="cpu", dtype=torch.float32, lora_targets=FACESWAP_LORA_TARGETS, default_lora_rank: int = 64
    ):
        if not Path(source).is_dir():
            raise MissingWeightsError(
                f"teacher 'faceswap': {source} is not a folder; set path to a local diffusers folder of your "
                "face-swap model (unet, vae, text_encoder, tokenizer, scheduler)"
            )
        inputs = tuple(inputs)
        if not inputs or any(n not in INPUTS for n in inputs) or len(set(inputs)) != len(inputs):
            raise UserError(f"teacher 'faceswap': inputs must be distinct names among {', '.join(INPUTS)}, got {list(inputs)}")
        try:
            super().__init__(source, device=device, dtype=dtype, lora_targets=lora_targets, default_lora_rank=default_lora_rank, pipeline_cls=FaceSwapPipeline)
        except ValueError as exc:  # e.g. a prediction type the family does not convert
            raise UserError(f"teacher 'faceswap': {exc}".splitlines()[0]) from None
        if self.vae is None:
            raise MissingWeightsError(f"teacher 'faceswap': {source} has no vae folder; the source face is encoded by the VAE")
        self.inputs = inputs
        self.concat_keys = tuple(INPUTS[n][1] for n in inputs)
        cfg = self.unet.config
        latent_channels = self.vae.config.latent_channels
        expected = latent_channels + input_channels(inputs, latent_channels)
        if cfg.in_channels != expected or cfg.out_channels != latent_channels:
            raise UserError(
                f"teacher 'faceswap': the UNet in {source} takes {cfg.in_channels} input channels and predicts {cfg.out_channels}; "
                f"inputs {list(inputs)} need {expected} ({latent_channels} noisy latents + the conditioning) and {latent_channels} out"
            )
        self.latent_shape = (cfg.out_channels, cfg.sample_size, cfg.sample_size)
        self.image_size = cfg.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._image_cache = None

    # --- conditioning ---
    @torch.no_grad()
    def encode_prompts(self, prompts, extras=None):
        return {**super().encode_prompts(prompts, extras), **self.encode_images(extras)}

    @torch.no_grad()
    def null_condition(self, prompts, extras=None):
        return {**super().encode_prompts([""] * len(prompts), extras), **null_conditioning(self.encode_images(extras))}

    def encode_images(self, extras):
        # encode_prompts and null_condition see the same extras in a step: encode them once. The cache holds the
        # input tensors themselves (so their ids stay theirs) and their in-place version counters.
        values = tuple(None if extras is None else extras.get(INPUTS[n][0]) for n in self.inputs)
        key = tuple((id(v), getattr(v, "_version", None)) for v in values)
        if self._image_cache is not None and self._image_cache[0] == key:
            return self._image_cache[2]
        encoded = encode_conditioning(
            self.vae,
            self.inputs,
            extras,
            image_size=self.image_size,
            latent_size=self.latent_shape[-1],
            device=self.device,
            dtype=self.dtype,
            who="teacher 'faceswap'",
        )
        self._image_cache = (key, values, encoded)
        return encoded

    # --- sampling ---
    def pipeline(self):
        """:class:`FaceSwapPipeline` over these components with the family's few-step ``LCMScheduler``."""
        return FaceSwapPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=few_step_scheduler(self.scheduler.config),
            inputs=self.inputs,
        )


class FaceSwapPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """A minimal face-swap pipeline: Stable Diffusion's components and LoRA loader, the UNet fed
    ``cat([z_t, *conditioning])``; returns images in [-1, 1].

    It loads from a ``StableDiffusionPipeline`` folder (``FaceSwapPipeline.from_pretrained(folder,
    inputs=(...))``), and ``load_lora_weights`` reads the file ``teacher.save_lora`` writes. The source
    face is given cropped (``source_face``) or as a full image and its face boxes (``source_image`` and
    ``source_box``, cropped like the ``faceswap`` dataset task does). The scheduler's ``prediction_type``
    decides how the UNet's output is read.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, inputs=("source_face",)):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_to_config(inputs=tuple(inputs))

    @torch.no_grad()
    def _embed(self, prompts):
        tok = self.tokenizer
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    @torch.no_grad()
    def __call__(
        self,
        prompt="",
        source_face=None,
        *,
        source_image=None,
        source_box=None,
        masked_image=None,
        face_mask=None,
        num_inference_steps: int = 4,
        timesteps=None,
        guidance_scale: float = 1.0,
        generator=None,
        latents=None,
        margin: float | None = None,
    ):
        if source_face is None:
            if source_image is None or source_box is None:
                raise ValueError("give source_face (cropped faces) or source_image with source_box")
            from flashbench_plugins.datasets._degradations import FACE_MARGIN, crop_resize, square_box

            margin, size = FACE_MARGIN if margin is None else margin, source_image.shape[-1]
            boxes = [square_box(tuple(map(float, b)), margin) for b in source_box]
            source_face = torch.stack([crop_resize(im, box, size) for im, box in zip(source_image, boxes)])
        n = source_face.shape[0]
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        c = self.unet.config
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        dtype = self.unet.dtype
        extras = {"source_face": source_face, "masked_image": masked_image, "face_mask": face_mask}
        cond = encode_conditioning(
            self.vae,
            self.config.inputs,
            extras,
            image_size=c.sample_size * vae_scale,
            latent_size=c.sample_size,
            device=self.device,
            dtype=dtype,
            who="FaceSwapPipeline",
        )
        keys = [INPUTS[name][1] for name in self.config.inputs]
        text = self._embed(prompts)
        extra = torch.cat([cond[k] for k in keys], dim=1)
        do_cfg = guidance_scale > 1.0
        if do_cfg:
            null = null_conditioning(cond)
            text = torch.cat([text, self._embed([""] * n)])
            extra = torch.cat([extra, torch.cat([null[k] for k in keys], dim=1)])
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=list(timesteps), device=self.device)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        shape = (n, c.out_channels, c.sample_size, c.sample_size)
        x = latents if latents is not None else randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)
        x = x * self.scheduler.init_noise_sigma
        out = None
        for t in self.scheduler.timesteps:
            inp = torch.cat([x, x]) if do_cfg else x
            pred = self.unet(torch.cat([inp, extra.to(inp.dtype)], dim=1), t, encoder_hidden_states=text).sample
            if do_cfg:
                p_c, p_u = pred.chunk(2)
                pred = p_u + guidance_scale * (p_c - p_u)
            out = self.scheduler.step(pred, t, x, generator=generator)
            x = out.prev_sample
        final = getattr(out, "denoised", None)
        final = final if final is not None else x
        return self.vae.decode(final / self.vae.config.scaling_factor).sample.clamp(-1, 1)
