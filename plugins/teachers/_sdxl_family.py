"""The SDXL-family teachers: SDXL base (``sdxl``) and SDXL + a frozen T2I-Adapter (``adapter-canny``,
``adapter-depth``).

What SDXL adds to the SD1.5-like teacher (:class:`~._sd_family.SDFamilyTeacher`, whose LoRA and export
code this reuses):

* two CLIP text encoders: the prompt embedding is the concatenation of both encoders' *penultimate*
  hidden states (768 + 1280 = 2048 wide), the pooled embedding is text encoder 2's projected output;
* micro-conditioning: ``time_ids`` = (original size, crop top-left, target size), all from the training
  resolution, embedded with the pooled text embedding into the UNet's ``add_embedding``;
* the null conditioning of CFG: with ``force_zeros_for_empty_prompt`` (true for SDXL base, read from the
  folder's ``model_index.json``) zeros for the prompt and pooled embeddings, otherwise the encoded empty
  prompt; the micro-conditioning is the same for both halves, as in ``StableDiffusionXLPipeline``;
* the VAE (scaling factor 0.13025) overflows in float16: its config says ``force_upcast``, so in a
  float16 teacher it stays in float32 (the stock pipeline upcasts it around each decode instead).

The cond dict (every tensor batch first): ``encoder_hidden_states`` (B, 77, 2048), ``text_embeds``
(B, 1280), ``time_ids`` (B, 6) and, with a T2I-Adapter, ``adapter_0`` .. ``adapter_{n-1}``: the adapter's
residuals (``down_intrablock_additional_residuals``), already scaled by the conditioning scale.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from flashbench.errors import MissingWeightsError, UserError
from flashbench.features import unet_encoder_features
from flashbench.method.schedule import NoiseSchedule

from ._sd_family import SDFamilyTeacher, _load, few_step_scheduler

SDXL_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER_KEY = "adapter_{}"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def adapter_residuals(cond) -> list[torch.Tensor] | None:
    """The T2I-Adapter residuals of a cond dict, in order (a fresh list: the UNet pops from it)."""
    n = sum(1 for k in cond if k.startswith("adapter_"))
    return [cond[ADAPTER_KEY.format(i)] for i in range(n)] if n else None


def _timesteps(t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def _model_index(source: str) -> dict:
    """The pipeline's ``model_index.json`` (where ``force_zeros_for_empty_prompt`` lives), or {} if absent."""
    try:
        from diffusers import DiffusionPipeline

        return dict(DiffusionPipeline.load_config(source))
    except (OSError, ValueError):
        return {}


class SDXLTeacher(SDFamilyTeacher):
    """SDXL base as a teacher. ``resolution`` 0 means the UNet's native one (``sample_size`` x the VAE's
    scale factor: 1024 for SDXL base); it sets the latent size and the micro-conditioning."""

    #: distinct prompts whose embeddings are kept (an SDXL prompt embedding is 77 x 2048 numbers)
    prompt_cache_size = 1024

    def __init__(
        self,
        source: str,
        *,
        device="cpu",
        dtype=torch.float32,
        resolution: int = 0,
        crop_top: int = 0,
        crop_left: int = 0,
        lora_targets=SDXL_LORA_TARGETS,
        default_lora_rank: int = 64,
        variant: str | None = None,
    ):
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.source = str(source)
        self.device, self.dtype = torch.device(device), dtype
        weights = {"variant": variant} if variant else {}

        def model(cls, sub, dt=dtype):
            return _load(cls, self.source, sub, torch_dtype=dt, **weights).to(self.device).eval().requires_grad_(False)

        self.unet = model(UNet2DConditionModel, "unet")
        self.text_encoder = model(CLIPTextModel, "text_encoder")
        self.text_encoder_2 = model(CLIPTextModelWithProjection, "text_encoder_2")
        self.tokenizer = _load(CLIPTokenizer, self.source, "tokenizer")
        self.tokenizer_2 = _load(CLIPTokenizer, self.source, "tokenizer_2")
        self.scheduler = _load(EulerDiscreteScheduler, self.source, "scheduler")
        self.vae = model(AutoencoderKL, "vae")
        if dtype == torch.float16 and self.vae.config.force_upcast:
            self.vae.to(torch.float32)  # what the stock pipeline does around each decode, kept for training
        self.force_zeros_for_empty_prompt = bool(_model_index(self.source).get("force_zeros_for_empty_prompt", True))

        self.denoiser = self.unet
        self.schedule = NoiseSchedule(self.scheduler.alphas_cumprod)
        self.lora_targets = tuple(lora_targets)
        self.default_lora_rank = default_lora_rank
        self.pipeline_cls = StableDiffusionXLPipeline
        self._prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        if self.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
            raise UserError(f"{self.source}: prediction_type {self.scheduler.config.prediction_type!r}; the SDXL teacher supports epsilon models")
        cfg = self.unet.config
        if cfg.addition_embed_type != "text_time":
            raise UserError(f"{self.source}: the UNet has addition_embed_type={cfg.addition_embed_type!r}, not SDXL's 'text_time'")
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = resolution or cfg.sample_size * self.vae_scale_factor
        self.crop = (crop_top, crop_left)
        self._downsamples = sum(1 for b in self.unet.down_blocks if getattr(b, "downsamplers", None))
        unit = self.vae_scale_factor * 2**self._downsamples
        if self.resolution % unit:
            raise UserError(f"resolution {self.resolution} of {self.source} must be a multiple of {unit} (VAE x UNet downsampling)")
        size = self.resolution // self.vae_scale_factor
        self.latent_shape = (cfg.in_channels, size, size)
        added = cfg.addition_time_embed_dim * 6 + self.text_encoder_2.config.projection_dim
        if added != self.unet.add_embedding.linear_1.in_features:
            raise UserError(
                f"{self.source}: the UNet's add_embedding takes {self.unet.add_embedding.linear_1.in_features} numbers, "
                f"6 micro-conditioning ids and the pooled text embedding give {added}"
            )

    # --- conditioning ---
    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            out = encoder(ids.to(self.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # SDXL conditions on the penultimate layer of both encoders
        return torch.cat(hidden, dim=-1).to(self.dtype), out.text_embeds.to(self.dtype)

    @torch.no_grad()
    def _text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if len(self._prompt_cache) + len(missing) > self.prompt_cache_size:
            return self._encode_text(list(prompts))
        if missing:
            embeds, pooled = self._encode_text(missing)
            self._prompt_cache.update(zip(missing, zip(embeds, pooled)))
        rows = [self._prompt_cache[p] for p in prompts]
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def time_ids(self, batch: int) -> torch.Tensor:
        """(B, 6): original size, crop top-left, target size (``StableDiffusionXLPipeline._get_add_time_ids``)."""
        size = (self.resolution, self.resolution)
        ids = torch.tensor([[*size, *self.crop, *size]], dtype=self.dtype, device=self.device)
        return ids.repeat(batch, 1)

    def extra_condition(self, extras, batch: int) -> dict[str, torch.Tensor]:
        """Conditioning beyond text (none for SDXL base; the adapter's residuals for a T2I-Adapter teacher)."""
        return {}

    def _condition(self, embeds, pooled, extras) -> dict[str, torch.Tensor]:
        b = embeds.shape[0]
        return {"encoder_hidden_states": embeds, "text_embeds": pooled, "time_ids": self.time_ids(b), **self.extra_condition(extras, b)}

    @torch.no_grad()
    def encode_prompts(self, prompts, extras=None):
        embeds, pooled = self._text(list(prompts))
        return self._condition(embeds, pooled, extras)

    @torch.no_grad()
    def null_condition(self, prompts, extras=None):
        """SDXL's negative conditioning without a negative prompt: zeros if the model's config says
        ``force_zeros_for_empty_prompt`` (SDXL base), else the empty prompt; same micro-conditioning."""
        b = len(prompts)
        if not self.force_zeros_for_empty_prompt:
            embeds, pooled = self._text([""] * b)
        else:
            width = self.text_encoder.config.hidden_size + self.text_encoder_2.config.hidden_size
            embeds = torch.zeros(b, self.tokenizer.model_max_length, width, device=self.device, dtype=self.dtype)
            pooled = torch.zeros(b, self.text_encoder_2.config.projection_dim, device=self.device, dtype=self.dtype)
        return self._condition(embeds, pooled, extras)

    # --- denoiser ---
    def _forward(self, module, x, t, cond):
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return module(
            x.to(self.dtype),
            _timesteps(t, x),
            encoder_hidden_states=cond["encoder_hidden_states"],
            added_cond_kwargs=added,
            down_intrablock_additional_residuals=adapter_residuals(cond),
        ).sample

    def encoder_features(self, x, t, cond):
        """Output of the UNet's down blocks and mid block, as ``UNet2DConditionModel.forward`` computes it
        (time embedding + the added text/micro-conditioning embedding; adapter residuals where the cond
        has them), with the LoRA adapters disabled."""
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        with self.adapters_disabled():
            return unet_encoder_features(
                self.unet,
                x.to(self.dtype),
                _timesteps(t, x),
                encoder_hidden_states=cond["encoder_hidden_states"],
                added_cond_kwargs=added,
                down_intrablock_additional_residuals=adapter_residuals(cond),
            )

    def discriminator_input(self):
        return self.unet.config.block_out_channels[-1], self.latent_shape[1] // 2**self._downsamples

    # --- latents ---
    def _latent_stats(self, like):
        cfg = self.vae.config
        if getattr(cfg, "latents_mean", None) is None or getattr(cfg, "latents_std", None) is None:
            return None
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1).to(like.device, like.dtype)
        return mean, std

    def encode(self, images):
        lat = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist.mean
        stats = self._latent_stats(lat)
        lat = (lat - stats[0]) * self.vae.config.scaling_factor / stats[1] if stats else lat * self.vae.config.scaling_factor
        return lat.to(self.dtype)

    def decode(self, latents):
        latents = latents.to(self.vae.dtype)
        stats = self._latent_stats(latents)
        latents = latents * stats[1] / self.vae.config.scaling_factor + stats[0] if stats else latents / self.vae.config.scaling_factor
        return self.vae.decode(latents).sample

    # --- sampling pipeline (export checks) ---
    def _pipeline_components(self) -> dict:
        vae = self.vae
        if vae.dtype != self.dtype:
            # a float16 teacher keeps its VAE in float32; the stock pipeline expects it in the UNet's dtype
            # (and upcasts it around the decode itself)
            vae = copy.deepcopy(vae).to(self.dtype)
        return dict(
            vae=vae,
            text_encoder=self.text_encoder,
            text_encoder_2=self.text_encoder_2,
            tokenizer=self.tokenizer,
            tokenizer_2=self.tokenizer_2,
            unet=self.unet,
            scheduler=few_step_scheduler(self.scheduler.config),
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt,
        )

    def pipeline(self):
        """``StableDiffusionXLPipeline`` over these components (sharing the UNet and its adapters) with the
        few-step ``LCMScheduler`` (trailing grid: ``num_inference_steps=n`` or ``timesteps=[999, 749, 499, 249][:n]``);
        call it with ``guidance_scale=0`` for the student's few-step samples."""
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(**self._pipeline_components(), add_watermarker=False)


class SDXLAdapterTeacher(SDXLTeacher):
    """SDXL + a frozen T2I-Adapter. ``extras["control"]``: (B, C, H, W) control images (canny edges, depth
    maps) in [0, 1], as the stock pipeline's ``image`` tensor. The adapter runs once per batch; its residuals,
    times ``conditioning_scale``, go into the cond dict. The null conditioning keeps them (null text only),
    as ``StableDiffusionXLAdapterPipeline`` does for CFG."""

    def __init__(self, source: str, adapter_source: str, *, conditioning_scale: float = 0.8, **kw):
        from diffusers import StableDiffusionXLAdapterPipeline, T2IAdapter

        super().__init__(source, **kw)
        self.adapter_source = str(adapter_source)
        self.adapter = _load_adapter(T2IAdapter, self.adapter_source, torch_dtype=self.dtype).to(self.device).eval().requires_grad_(False)
        self.conditioning_scale = float(conditioning_scale)
        self.pipeline_cls = StableDiffusionXLAdapterPipeline
        self._residual_cache: tuple | None = None
        if self.resolution % self.adapter.total_downscale_factor:
            raise UserError(f"resolution {self.resolution} must be a multiple of the adapter's downscale factor {self.adapter.total_downscale_factor}")

    @torch.no_grad()
    def residuals(self, control: torch.Tensor) -> list[torch.Tensor]:
        """The adapter's scaled residuals for a batch of control images; cached for the last batch, since
        the cond and the null conditioning of one step share them."""
        cached = self._residual_cache
        if cached is not None and cached[0] is control and cached[1] == control._version:
            return cached[2]
        x = control.to(self.device, self.adapter.dtype)
        want = self.adapter.config.in_channels
        if x.shape[1] != want:
            if want == 1:
                x = x.mean(dim=1, keepdim=True)
            elif x.shape[1] == 1:
                x = x.expand(-1, want, -1, -1)
            else:
                raise ValueError(f"control images have {x.shape[1]} channels; the adapter takes {want}")
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = torch.nn.functional.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True, align_corners=False)
        out = [r.to(self.dtype) * self.conditioning_scale for r in self.adapter(x)]
        # holding the control tensor keeps its id from being reused by another batch
        self._residual_cache = (control, control._version, out)
        return out

    def extra_condition(self, extras, batch):
        control = (extras or {}).get("control")
        if control is None:
            raise UserError(f"the T2I-Adapter teacher ({self.adapter_source}) needs a control image per sample: extras['control'] (B, C, H, W) in [0, 1]")
        if control.shape[0] != batch:
            raise ValueError(f"extras['control'] has {control.shape[0]} images for {batch} prompts")
        return {ADAPTER_KEY.format(i): r for i, r in enumerate(self.residuals(control))}

    def pipeline(self):
        """``StableDiffusionXLAdapterPipeline`` over these components with the few-step ``LCMScheduler``; call it
        with ``image=control``, ``adapter_conditioning_scale=teacher.conditioning_scale``, ``guidance_scale=0``."""
        from diffusers import StableDiffusionXLAdapterPipeline

        return StableDiffusionXLAdapterPipeline(**self._pipeline_components(), adapter=self.adapter)


def _load_adapter(cls, source: str, **kw):
    """``from_pretrained`` of an adapter folder or hub id (weights at the root); one line if missing offline."""
    try:
        return cls.from_pretrained(source, **kw)
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            raise MissingWeightsError(f"cannot load the T2I-Adapter from local folder {source}: {exc}".splitlines()[0]) from None
        raise MissingWeightsError(
            f"T2I-Adapter weights {source!r} are not on this machine and cannot be downloaded here; "
            f"download them elsewhere (huggingface-cli download {source}) and set the teacher's adapter_path option to that folder"
        ) from None


def build_sdxl(config, *, device="cpu", dtype=None) -> SDXLTeacher:
    return SDXLTeacher(config.path, **_common(config, device, dtype))


def build_adapter(config, *, device="cpu", dtype=None) -> SDXLAdapterTeacher:
    return SDXLAdapterTeacher(config.path, config.adapter_path, conditioning_scale=config.conditioning_scale, **_common(config, device, dtype))


def _common(config, device, dtype) -> dict:
    return dict(
        device=device,
        dtype=dtype or DTYPES[config.dtype],
        resolution=config.resolution,
        crop_top=config.crop_top,
        crop_left=config.crop_left,
        lora_targets=config.lora_targets,
        default_lora_rank=config.default_lora_rank,
        variant=config.variant or None,
    )
