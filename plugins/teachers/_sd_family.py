"""Shared code of the Stable-Diffusion-like teachers: a ``UNet2DConditionModel`` conditioned on a CLIP text
encoder's hidden states, an optional VAE (absent: pixel space), a DDPM-family noise schedule.

Loading is diffusers' own ``from_pretrained`` of a hub id or a local folder (subfolders ``unet``,
``text_encoder``, ``tokenizer``, ``scheduler`` and, for latent models, ``vae``); offline, a missing hub
model fails with one line saying which id and how to give a local folder instead.

Beyond text-to-image (``sd15``), the family covers channel-concat UNets: :class:`SDFamilyTeacher` concatenates
the cond-dict entries named in ``concat_keys`` to the noisy latents along the channels and passes a
``class_labels`` entry to the UNet (:class:`SDInpaintTeacher`: mask + masked-image latents;
:class:`SDUpscaleTeacher`: the noise-augmented low-res image and its noise level). v-prediction UNets (the x4
upscaler, SD2.1-768) return their raw output and declare the ``vp-v`` noise process, which gives x0 = alpha x_t -
sigma v to the method (``flashbench.method.noise``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from flashbench.errors import MissingWeightsError
from flashbench.features import unet_encoder_features
from flashbench.method.noise import vp_process
from flashbench.method.schedule import NoiseSchedule
from flashbench.method.teacher import Teacher

#: the few-step sampler of the exported student: LCM's schedule on the 4 inference timesteps, so that both
#: ``timesteps=[999, 749, 499, 249][:n]`` and ``num_inference_steps=n`` (n in 1, 2, 4; pipelines that take no
#: explicit timesteps) give the trailing grid the student was trained on
FEW_STEP_ORIGINAL_STEPS = 4

DEFAULT_LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "time_emb_proj",
)  # noqa: E501


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


def few_step_scheduler(scheduler_config):
    """``LCMScheduler`` over the teacher's training schedule (its ``prediction_type`` included) whose
    ``set_timesteps(n)`` is the trailing grid for n in 1, 2, 4: 999; 999, 499; 999, 749, 499, 249."""
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(scheduler_config, timestep_spacing="trailing", original_inference_steps=FEW_STEP_ORIGINAL_STEPS)


def torch_dtype(name: str):
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` -> the torch dtype (config files hold strings)."""
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {name!r}")
    return value


def _as_timesteps(t, x):
    t = torch.as_tensor(t, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def resolve_lora_source(source: str) -> Path:
    """A local LoRA file for ``source``: a file, a folder holding ``pytorch_lora_weights.safetensors``, or
    ``hub/id`` / ``hub/id::file.safetensors`` already in the Hugging Face cache (nothing is downloaded)."""
    repo, _, filename = str(source).partition("::")
    filename = filename or "pytorch_lora_weights.safetensors"
    local = Path(repo)
    if local.is_file():
        return local
    if local.is_dir() and (local / filename).is_file():
        return local / filename
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, filename)
    except Exception:  # a malformed repo id, an unreadable cache
        cached = None
    if isinstance(cached, str):
        return Path(cached)
    raise MissingWeightsError(
        f"LoRA {source!r} ({filename}) is not on this machine and cannot be downloaded here; "
        f"run `huggingface-cli download {repo} {filename}` where there is internet, or set pretrained_lora to the local file"
    )


class SDFamilyTeacher(Teacher):
    #: cond-dict entries concatenated after the noisy latents along the channels, in this order
    concat_keys: tuple[str, ...] = ()

    def __init__(
        self,
        source: str,
        *,
        device="cpu",
        dtype=torch.float32,
        lora_targets=DEFAULT_LORA_TARGETS,
        default_lora_rank: int = 64,
        pipeline_cls=None,
        components: dict | None = None,
    ):
        """``components``: already built ``unet``, ``text_encoder``, ``tokenizer``, ``scheduler`` and optionally
        ``vae`` (:func:`random_components`) instead of loading them from ``source``, which then only names them."""
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per component drowns the run's own bars

        self.source = str(source)
        self.device, self.dtype = torch.device(device), dtype
        if components is not None:
            self._use_components(components)
        else:
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
        # out_channels: a channel-concat UNet (inpainting 9 -> 4, x4 upscaler 7 -> 4) denoises 4 channels
        self.latent_shape = (cfg.out_channels, size, size)
        self.prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"{self.source}: prediction_type {self.prediction_type!r} is not supported (epsilon or v_prediction)")
        self.noise_process = vp_process(self.schedule, self.prediction_type)
        self.lora_targets = tuple(lora_targets)
        self.default_lora_rank = default_lora_rank
        self.pipeline_cls = pipeline_cls
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def _use_components(self, components: dict) -> None:
        missing = {"unet", "text_encoder", "tokenizer", "scheduler"} - set(components)
        if missing:
            raise ValueError(f"{self.source}: components lack {', '.join(sorted(missing))}")

        def frozen(module):  # built in float32: cast only to another dtype (diffusers warns on any dtype cast)
            module = module.to(self.device) if self.dtype == torch.float32 else module.to(self.device, self.dtype)
            return module.eval().requires_grad_(False)

        self.unet, self.text_encoder = frozen(components["unet"]), frozen(components["text_encoder"])
        self.tokenizer, self.scheduler = components["tokenizer"], components["scheduler"]
        self.vae = frozen(components["vae"]) if components.get("vae") is not None else None

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
    def _unet_input(self, x, cond):
        """The UNet's input: the noisy latents, then the ``concat_keys`` entries of ``cond`` along the channels."""
        extra = [cond[k] for k in self.concat_keys]
        for key, value in zip(self.concat_keys, extra):
            if value.shape[-2:] != x.shape[-2:]:
                raise ValueError(f"{key} is {tuple(value.shape[-2:])} but the latents are {tuple(x.shape[-2:])}; they are concatenated channel-wise")
        x = x.to(self.dtype)
        return torch.cat([x, *(v.to(x.dtype) for v in extra)], dim=1) if extra else x

    def _forward(self, module, x, t, cond):
        """The UNet's raw output (epsilon or v, as ``noise_process.prediction`` says)."""
        t = _as_timesteps(t, x)
        return module(self._unet_input(x, cond), t, encoder_hidden_states=cond["encoder_hidden_states"], class_labels=cond.get("class_labels")).sample

    def encoder_features(self, x, t, cond):
        """The UNet's down blocks and mid block (the encoder), run with the adapters disabled."""
        with self.adapters_disabled():
            return unet_encoder_features(
                self.unet,
                self._unet_input(x, cond),
                _as_timesteps(t, x),
                encoder_hidden_states=cond["encoder_hidden_states"],
                class_labels=cond.get("class_labels"),
            )

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
                # half-precision weights: keep the adapter in float32 (peft casts around it), or Adam's 1e-5
                # steps round away in bf16
                if p.dtype != torch.float32:
                    p.data = p.data.float()
                p.requires_grad_(True)
                params.append(p)
        return params

    def remove_lora(self, name):
        if getattr(self.unet, "_hf_peft_config_loaded", False) and name in self.unet.peft_config:
            self.unet.delete_adapters(name)

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

    def load_lora(self, name, source):
        """Load a published LoRA (an evaluation-only baseline, e.g. LCM-LoRA) as adapter ``name`` and
        activate it; formats the family pipeline's ``lora_state_dict`` understands (diffusers, kohya)."""
        path = resolve_lora_source(source)
        state, alphas = self.pipeline_class().lora_state_dict(str(path))
        unet_state = {k: v for k, v in state.items() if k.startswith("unet.")} or state
        self.unet.load_lora_adapter(unet_state, network_alphas=alphas, prefix="unet", adapter_name=name)
        self.unet.set_adapter(name)
        return sum(v.numel() for v in unet_state.values())

    def pipeline_class(self):
        if self.pipeline_cls is not None:
            return self.pipeline_cls
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    def pipeline(self):
        """The family's stock pipeline over these components (the UNet with its adapters), with the few-step
        ``LCMScheduler`` of :func:`few_step_scheduler`. Pixel-space families give their own (see ``toy-digits``)."""
        if self.vae is None or self.pipeline_cls is not None:
            raise NotImplementedError(f"{type(self).__name__} from {self.source} has no default pipeline; the teacher plugin must provide one")
        return self._make_pipeline(few_step_scheduler(self.scheduler.config))

    def _make_pipeline(self, scheduler):
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )


def random_components(*, unet: dict, text_encoder: dict, vae: dict | None, scheduler: dict, seed: int = 0, tokenizer_max_length: int = 77) -> dict:
    """An SD-family model's components built from their configs with seeded random weights, nothing read from
    disk or the network: the architecture's real cost (shapes, FLOPs, memory) without its weights.

    Each network is initialised on the CPU from its own generator state (``seed``, then ``seed + 1``, ...),
    inside ``fork_rng`` so the caller's global RNG is left as it was; the same seed gives the same weights on any
    machine. The tokenizer is CLIP's BPE written from the copy bundled with open_clip (the same ids as SD's
    tokenizer, padded with ``<|endoftext|>`` as SD1.5's)."""
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from flashbench_plugins.toy.models import write_clip_tokenizer

    def seeded(offset: int, make):
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed + offset)
            with torch.device("cpu"):
                return make()

    out = {
        "unet": seeded(0, lambda: UNet2DConditionModel(**unet)),
        "text_encoder": seeded(1, lambda: CLIPTextModel(CLIPTextConfig(**text_encoder))),
        "vae": seeded(2, lambda: AutoencoderKL(**vae)) if vae is not None else None,
        "scheduler": DDIMScheduler(**scheduler),
    }
    with tempfile.TemporaryDirectory() as folder:  # the tokenizer reads its files once, at construction
        write_clip_tokenizer(folder, model_max_length=tokenizer_max_length)
        out["tokenizer"] = CLIPTokenizer(f"{folder}/vocab.json", f"{folder}/merges.txt", model_max_length=tokenizer_max_length, pad_token="<|endoftext|>")
    return out


def _content_seed(image: torch.Tensor) -> int:
    """A seed derived from a tensor's values (blake2b of its float32 bytes)."""
    import hashlib

    data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & ((1 << 63) - 1)


class SDInpaintTeacher(SDFamilyTeacher):
    """SD inpainting: a 9-channel UNet over [noisy latents (4), mask (1), masked-image latents (4)].

    ``extras`` (batch first): ``mask`` (B, 1, H, W), 1 = the region to inpaint, binarised at 0.5 as the pipeline
    does; and ``image`` (B, 3, H, W) in [-1, 1], the original image (the batch image), from which the masked
    image ``image * (mask < 0.5)`` is built -- or ``masked_image`` directly. The masked image is encoded with
    the VAE (the latent mean; the pipeline samples the latent distribution, a difference of the VAE's tiny
    posterior std) and the mask is resized to the latents with nearest interpolation, as in
    ``StableDiffusionInpaintPipeline.prepare_mask_latents``. CFG's null keeps the mask and masked image and
    empties the prompt, as the pipeline's CFG does.
    """

    concat_keys = ("mask", "masked_image_latents")

    def encode_prompts(self, prompts, extras=None):
        return {**super().encode_prompts(prompts, extras), **self.inpaint_inputs(extras, len(prompts))}

    @torch.no_grad()
    def inpaint_inputs(self, extras, batch: int) -> dict[str, torch.Tensor]:
        extras = extras or {}
        if "mask" not in extras or not ({"image", "masked_image"} & set(extras)):
            raise ValueError(
                "the inpainting teacher needs extras 'mask' (B, 1, H, W; 1 = inpaint) and 'image' (B, 3, H, W in [-1, 1]) "
                f"or 'masked_image'; got {sorted(extras) or 'none'}"
            )
        mask = torch.as_tensor(extras["mask"]).to(self.device, torch.float32)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != batch:
            raise ValueError(f"extras['mask'] must be (B={batch}, 1, H, W), got {tuple(mask.shape)}")
        mask = (mask >= 0.5).float()
        if "masked_image" in extras:
            masked = torch.as_tensor(extras["masked_image"]).to(self.device, torch.float32)
        else:
            masked = torch.as_tensor(extras["image"]).to(self.device, torch.float32) * (1 - mask)
        if masked.shape[0] != batch or masked.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"the (masked) image {tuple(masked.shape)} and the mask {tuple(mask.shape)} must match, batch {batch}")
        latents = self.encode(masked)
        small = torch.nn.functional.interpolate(mask, size=latents.shape[-2:])  # nearest, as the pipeline
        return {"mask": small.to(self.dtype), "masked_image_latents": latents}

    def _make_pipeline(self, scheduler):
        from diffusers import StableDiffusionInpaintPipeline

        return StableDiffusionInpaintPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def pipeline_class(self):
        from diffusers import StableDiffusionInpaintPipeline

        return StableDiffusionInpaintPipeline


class SDUpscaleTeacher(SDFamilyTeacher):
    """A channel-concat super-resolution UNet such as the public x4 upscaler: 4 latents + the 3 RGB channels of
    the low-res image (the latents have the low-res image's size; the VAE decodes them to 4x), ``class_labels`` =
    the noise level of the low-res image's noise augmentation, text prompts, v-prediction.

    ``extras``: ``low_res`` (B, 3, h, w) in [-1, 1]. As ``StableDiffusionUpscalePipeline`` does, the low-res image
    is noised with the ``low_res_scheduler`` at ``noise_level`` before it is concatenated. The noise is a
    function of the image (seeded from its values), so the conditional and null inputs of one image carry the
    same noisy image, as in the pipeline's CFG batch, and re-encoding a batch reproduces it.

    ``text=False`` (the paper's in-house upscaler has no text): every prompt is the empty prompt and CFG's null
    is the low-res input zeroed (the usual conditioning-dropout null of an image-conditioned model); with
    ``text=True`` the null is the empty prompt with the same low-res image, as the pipeline's CFG.
    """

    concat_keys = ("low_res",)

    def __init__(self, source, *, text: bool = True, noise_level: int = 20, **kw):
        from diffusers import DDPMScheduler

        super().__init__(source, **kw)
        self.low_res_scheduler = _load(DDPMScheduler, self.source, "low_res_scheduler")
        self.text, self.noise_level = text, int(noise_level)

    def encode_prompts(self, prompts, extras=None):
        if not self.text:
            prompts = [""] * len(prompts)
        return {**super().encode_prompts(prompts, extras), **self.low_res_inputs(extras, len(prompts))}

    def null_condition(self, prompts, extras=None):
        null = super().encode_prompts([""] * len(prompts), extras)
        null.update(self.low_res_inputs(extras, len(prompts)))
        if not self.text:
            null["low_res"] = torch.zeros_like(null["low_res"])
        return null

    @torch.no_grad()
    def low_res_inputs(self, extras, batch: int) -> dict[str, torch.Tensor]:
        extras = extras or {}
        if "low_res" not in extras:
            raise ValueError(f"the super-resolution teacher needs extras 'low_res' (B, 3, h, w in [-1, 1]); got {sorted(extras) or 'none'}")
        low = torch.as_tensor(extras["low_res"]).to(self.device, torch.float32)
        if low.ndim != 4 or low.shape[:2] != (batch, 3):
            raise ValueError(f"extras['low_res'] must be (B={batch}, 3, h, w), got {tuple(low.shape)}")
        levels = torch.full((batch,), self.noise_level, dtype=torch.long, device=self.device)
        if self.noise_level > 0:
            noise = torch.stack([torch.randn(img.shape, generator=torch.Generator().manual_seed(_content_seed(img))) for img in low])
            low = self.low_res_scheduler.add_noise(low, noise.to(low.device), levels)
        return {"low_res": low.to(self.dtype), "class_labels": levels}

    def _make_pipeline(self, scheduler):
        from diffusers import StableDiffusionUpscalePipeline

        scaling = self.vae.config.scaling_factor
        pipe = StableDiffusionUpscalePipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            low_res_scheduler=self.low_res_scheduler,
            scheduler=scheduler,
        )
        if self.vae.config.scaling_factor != scaling:
            # the stock pipeline forces the x4 upscaler's 0.08333 onto any VAE it is given; keep the teacher's own
            self.vae.register_to_config(scaling_factor=scaling)
        return pipe

    def pipeline_class(self):
        from diffusers import StableDiffusionUpscalePipeline

        return StableDiffusionUpscalePipeline
