"""Shared code of the rectified-flow transformer teachers (``sd3``, ``flux``): an MM-DiT over a 16-channel VAE,
a ``FlowMatchEulerDiscreteScheduler`` read into :class:`~flashbench.method.noise.RectifiedFlow`, a peft LoRA
through diffusers' ``PeftAdapterMixin`` exported for the family pipeline's ``load_lora_weights``.

* Loading: diffusers/transformers ``from_pretrained`` of a hub id or a local folder with the hub layout;
  offline, a missing hub model fails with one line naming the id (:func:`._sd_family._load`).
* Noise process: rectified flow x_t = (1 - sigma) x0 + sigma eps; the network outputs the velocity eps - x0
  at timestep sigma x 1000 (float). SD3 shifts sigma by a fixed ``shift`` from its scheduler config, Flux by
  a ``mu`` from the image's token count (``use_dynamic_shifting``).
* Latents: the VAE's mean, ``(z - shift_factor) * scaling_factor`` (decode inverts it), as the pipelines do.
* Discriminator (Sec. 4.3, "for a DiT, intermediate transformer tokens"): the frozen teacher's image-stream
  tokens after its first ``disc_blocks`` joint (double-stream) blocks, (B, N, D) laid back on the patch
  grid as (B, D, h, w): the shape :class:`~flashbench.method.discriminator.DiscriminatorHead` takes, as the
  PixArt teacher does. ``disc_features = "output"`` feeds the head the frozen teacher's raw output on the
  latent grid instead (16 channels: the input of the authors' SD3 head).
* Student: a peft LoRA added with ``transformer.add_adapter``; adapters in float32 on a half-precision base
  (Adam's 1e-5 steps vanish in bf16). Export: ``<Pipeline>.save_lora_weights`` with the adapter's
  ``LoraConfig`` as metadata, so ``load_lora_weights`` restores its ``lora_alpha`` (alpha != rank).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

import torch

from flashbench.errors import UserError
from flashbench.features import transformer_block_tokens
from flashbench.method.noise import RectifiedFlow
from flashbench.method.teacher import Teacher

from ._flow_configs import DISC_FEATURES
from ._sd_family import _load


def as_timesteps(t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def lora_config(rank: int, alpha: float, targets: Sequence[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets))


def lora_parameter_count(model_cls, transformer_config: Mapping, rank: int, *, alpha: float = 0.0, targets: Sequence[str]) -> int:
    """Trainable LoRA parameters on ``model_cls(**transformer_config)`` built on the meta device (nothing is
    allocated or downloaded), with the adapter a teacher adds."""
    from peft import inject_adapter_in_model

    with torch.device("meta"):
        model = model_cls(**transformer_config)
    inject_adapter_in_model(lora_config(rank, alpha, targets), model, adapter_name="count")
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


class FlowTransformerTeacher(Teacher):
    """The family's common part; a subclass loads its text encoders and implements ``encode_prompts``,
    ``_forward``, :meth:`_block_tokens`, :meth:`pipeline_class` and :meth:`pipeline`."""

    #: the diffusers class of the denoiser (``SD3Transformer2DModel``, ``FluxTransformer2DModel``)
    transformer_class: str = ""

    def _token_side(self) -> int:
        """The side of one transformer token in latent pixels (SD3: its patch size; Flux: the 2x2 packing)."""
        return 2

    def _load_common(
        self,
        source: str,
        *,
        device,
        dtype,
        resolution: int,
        lora_rank: int,
        lora_alpha: float,
        lora_targets: Sequence[str],
        disc_blocks: int,
        disc_features: str,
    ):
        import diffusers
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.source = str(source)
        self.device, self.dtype = torch.device(device), dtype
        cls = getattr(diffusers, self.transformer_class)
        self.transformer = _load(cls, self.source, "transformer", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.vae = _load(AutoencoderKL, self.source, "vae", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        if dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            self.vae.to(torch.float32)  # the pipelines upcast such a VAE around each decode
        self.scheduler = _load(FlowMatchEulerDiscreteScheduler, self.source, "scheduler")
        self.denoiser = self.transformer

        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        # SD3's config has the native latent size (128: 1024 px); Flux's has none, and Flux.1 is a 1024 px model
        native = (getattr(self.transformer.config, "sample_size", None) or 128) * self.vae_scale_factor
        self.resolution = int(resolution) or native
        unit = self.vae_scale_factor * self._token_side()
        if self.resolution % unit:
            raise UserError(f"resolution {self.resolution} of {self.source} must be a multiple of {unit} (VAE x patch)")
        side = self.resolution // self.vae_scale_factor
        self.latent_shape = (int(self.vae.config.latent_channels), side, side)
        self.tokens_side = side // self._token_side()

        self.default_lora_rank = int(lora_rank)
        self.lora_alpha = float(lora_alpha)
        self.lora_targets = tuple(lora_targets)
        n_blocks = len(self.transformer.transformer_blocks)
        self.disc_blocks = int(disc_blocks) or max(1, n_blocks // 2)
        if not 1 <= self.disc_blocks <= n_blocks:
            raise UserError(f"disc_blocks must be in [1, {n_blocks}] for {self.source}, got {disc_blocks}")
        if disc_features not in DISC_FEATURES:
            raise ValueError(f"disc_features must be one of {', '.join(DISC_FEATURES)}, got {disc_features!r}")
        self.disc_features = disc_features

    def _set_process(self, image_seq_len: int) -> None:
        config = self.scheduler.config
        self.noise_process = RectifiedFlow.from_scheduler_config(config, image_seq_len=image_seq_len)

    # --- the discriminator's input ---
    def _block_tokens(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        """(B, N, D) image tokens after the first ``disc_blocks`` joint blocks (adapters already disabled)."""
        raise NotImplementedError

    def encoder_features(self, x, t, cond):
        """The frozen teacher's image tokens after its first ``disc_blocks`` joint blocks, as (B, D, h, w)
        on the token grid (``disc_features = "output"``: its raw output on the latent grid)."""
        t = as_timesteps(t, x)
        with self.adapters_disabled():
            if self.disc_features == "output":
                return self._forward(self.transformer, x, t, cond)
            tokens = self._block_tokens(x, t, cond)
        b, n, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, self.tokens_side, self.tokens_side)

    def discriminator_input(self):
        if self.disc_features == "output":
            return self.latent_shape[0], self.latent_shape[1]
        return self.transformer.config.num_attention_heads * self.transformer.config.attention_head_dim, self.tokens_side

    # --- latents ---
    def _shift(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def encode(self, images):
        lat = self.vae.encode(images.to(self.device, self.vae.dtype)).latent_dist.mean
        return ((lat - self._shift()) * self.vae.config.scaling_factor).to(self.dtype)

    def decode(self, latents):
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor + self._shift()
        return self.vae.decode(z).sample

    # --- LoRA ---
    def add_lora(self, name, rank):
        present = [t for t in self.lora_targets if any(n == t or n.endswith("." + t) for n, _ in self.transformer.named_modules())]
        if not present:
            raise UserError(f"none of the LoRA targets {list(self.lora_targets)} names a module of {type(self.transformer).__name__}")
        self.transformer.add_adapter(lora_config(rank, self.lora_alpha, present), adapter_name=name)
        self.transformer.set_adapter(name)
        params = []
        for n, p in self.transformer.named_parameters():
            if "lora_" in n and f".{name}." in n:
                if p.dtype != torch.float32:
                    p.data = p.data.float()  # float32 adapters on a bf16/fp16 base: peft casts around them
                p.requires_grad_(True)
                params.append(p)
        return params

    def remove_lora(self, name):
        if getattr(self.transformer, "_hf_peft_config_loaded", False) and name in self.transformer.peft_config:
            self.transformer.delete_adapters(name)

    def lora_state_dict(self, name) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.transformer, adapter_name=name)
        return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    def save_lora(self, name, folder):
        """``pytorch_lora_weights.safetensors`` in the family pipeline's format, with the adapter's config as
        metadata (``load_lora_weights`` then uses its ``lora_alpha``, not alpha = rank)."""
        configs = getattr(self.transformer, "peft_config", None) or {}
        if name not in configs:
            raise KeyError(f"no LoRA adapter {name!r} on the transformer (have: {sorted(configs)})")
        config = copy.copy(configs[name]).to_dict()
        config["target_modules"] = sorted(config["target_modules"])  # a set: JSON wants a list
        folder = Path(folder)
        self.pipeline_class().save_lora_weights(
            str(folder),
            transformer_lora_layers=self.lora_state_dict(name),
            transformer_lora_adapter_metadata=config,
            safe_serialization=True,
        )
        return folder

    def pipeline_class(self):
        raise NotImplementedError

    def few_step_scheduler(self):
        """The teacher's ``FlowMatchEulerDiscreteScheduler`` with ``stochastic_sampling``: x0 = x - sigma u, then
        re-noised to the next sigma with fresh noise, the student's sampler (``method/sampling.py``). Call the
        pipeline with ``sigmas = [i / n for i in range(n, 0, -1)]`` (1; 1, .5; 1, .75, .5, .25): the scheduler
        applies the family's shift to them, which gives the student's sigmas."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config, stochastic_sampling=True)


def few_step_sigmas(steps: int) -> list[float]:
    """The unshifted sigmas of the student's ``steps`` timesteps (the K-grid with K = steps, without 0)."""
    return [i / steps for i in range(steps, 0, -1)]


class PromptCache:
    """Encoded prompts, one row tuple per distinct prompt, bounded in bytes (an SD3 / Flux embedding is large)."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes, self.rows, self.bytes = max_bytes, {}, 0

    def get(self, prompts: list[str], encode) -> tuple[torch.Tensor, ...]:
        """The stacked rows of ``prompts``; ``encode(list)`` gives a tuple of batch-first tensors for new ones."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        found = {}
        if missing:
            fresh = encode(missing)
            found = {p: tuple(x[i] for x in fresh) for i, p in enumerate(missing)}
            size = sum(x[0].numel() * x.element_size() for x in fresh)
            if self.bytes + size * len(missing) <= self.max_bytes:
                self.rows.update(found)
                self.bytes += size * len(missing)
        rows = [found[p] if p in found else self.rows[p] for p in prompts]
        return tuple(torch.stack(col) for col in zip(*rows))


# ==================================================================================================
# Stable Diffusion 3 / 3.5
# ==================================================================================================


class SD3Teacher(FlowTransformerTeacher):
    """``SD3Transformer2DModel`` conditioned on CLIP-L + CLIP-G (penultimate hidden states, concatenated,
    zero-padded to the joint width) followed by T5 hidden states, or by zeros without T5 (what
    ``StableDiffusion3Pipeline`` does when ``text_encoder_3`` is None), and the two pooled embeddings."""

    transformer_class = "SD3Transformer2DModel"

    def __init__(
        self,
        source: str,
        *,
        device="cpu",
        dtype=torch.float32,
        use_t5: bool = False,
        max_sequence_length: int = 256,
        resolution: int = 0,
        default_lora_rank: int = 64,
        lora_alpha: float = 8.0,
        lora_targets: Sequence[str] = (),
        disc_blocks: int = 0,
        disc_features: str = "tokens",
    ):
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        self._load_common(
            source,
            device=device,
            dtype=dtype,
            resolution=resolution,
            lora_rank=default_lora_rank,
            lora_alpha=lora_alpha,
            lora_targets=lora_targets,
            disc_blocks=disc_blocks,
            disc_features=disc_features,
        )

        def model(cls, sub):
            return _load(cls, self.source, sub, torch_dtype=dtype).to(self.device).eval().requires_grad_(False)

        self.text_encoder = model(CLIPTextModelWithProjection, "text_encoder")
        self.text_encoder_2 = model(CLIPTextModelWithProjection, "text_encoder_2")
        self.tokenizer = _load(CLIPTokenizer, self.source, "tokenizer")
        self.tokenizer_2 = _load(CLIPTokenizer, self.source, "tokenizer_2")
        self.use_t5 = bool(use_t5)
        self.text_encoder_3 = self.tokenizer_3 = None
        if self.use_t5:
            from transformers import AutoTokenizer, T5EncoderModel

            self.text_encoder_3 = model(T5EncoderModel, "text_encoder_3")
            self.tokenizer_3 = _load(AutoTokenizer, self.source, "tokenizer_3")
        self.max_sequence_length = int(max_sequence_length)
        cfg = self.transformer.config
        clip_width = self.text_encoder.config.hidden_size + self.text_encoder_2.config.hidden_size
        if clip_width > cfg.joint_attention_dim:
            raise UserError(f"{self.source}: CLIP widths {clip_width} exceed the transformer's joint_attention_dim {cfg.joint_attention_dim}")
        pooled = self.text_encoder.config.projection_dim + self.text_encoder_2.config.projection_dim
        if pooled != cfg.pooled_projection_dim:
            raise UserError(f"{self.source}: pooled CLIP embeddings are {pooled} wide, the transformer takes {cfg.pooled_projection_dim}")
        if self.tokens_side > cfg.pos_embed_max_size:
            raise UserError(f"resolution {self.resolution} is beyond {self.source}'s position embeddings ({cfg.pos_embed_max_size} patches a side)")
        self._set_process(image_seq_len=self.tokens_side**2)  # SD3: a fixed shift, the token count is not read
        self._cache, self._t5_cache = PromptCache(), PromptCache()

    def _token_side(self):
        return int(self.transformer.config.patch_size)

    # --- conditioning ---
    @torch.no_grad()
    def _encode_clip(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = [], []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            out = encoder(ids.to(self.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # the penultimate layer, as the pipeline (clip_skip None)
            pooled.append(out.text_embeds)
        return torch.cat(hidden, dim=-1).to(self.dtype), torch.cat(pooled, dim=-1).to(self.dtype)

    @torch.no_grad()
    def _encode_t5(self, prompts: list[str]) -> tuple[torch.Tensor]:
        ids = self.tokenizer_3(
            prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True, add_special_tokens=True, return_tensors="pt"
        ).input_ids
        return (self.text_encoder_3(ids.to(self.device))[0].to(self.dtype),)

    @torch.no_grad()
    def encode_prompts(self, prompts, extras=None):
        prompts = list(prompts)
        clip, pooled = self._cache.get(prompts, self._encode_clip)
        width = self.transformer.config.joint_attention_dim
        if self.use_t5:
            (t5,) = self._t5_cache.get(prompts, self._encode_t5)
        else:  # no T5 (the authors' Flash SD3): its tokens are zeros, as in the pipeline without text_encoder_3
            t5 = torch.zeros(len(prompts), self.max_sequence_length, width, device=self.device, dtype=self.dtype)
        clip = torch.nn.functional.pad(clip, (0, width - clip.shape[-1]))
        return {"encoder_hidden_states": torch.cat([clip, t5], dim=-2), "pooled_projections": pooled}

    # null_condition: the base class's encode_prompts([""] * n), the pipeline's negative_prompt = ""

    # --- denoiser ---
    def _forward(self, module, x, t, cond):
        return module(
            hidden_states=x.to(self.dtype),
            encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"],
            timestep=as_timesteps(t, x),
            return_dict=False,
        )[0]

    def _block_tokens(self, x, t, cond):
        return transformer_block_tokens(
            self.transformer,
            self.disc_blocks,
            hidden_states=x.to(self.dtype),
            encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"],
            timestep=t,
            return_dict=False,
        )

    # --- the stock pipeline ---
    def pipeline_class(self):
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline

    def pipeline(self):
        """``StableDiffusion3Pipeline`` over these components (no T5 unless ``use_t5``) with the few-step
        scheduler (:meth:`FlowTransformerTeacher.few_step_scheduler`); sample the student with
        ``sigmas=few_step_sigmas(n)``, ``guidance_scale=1`` (no CFG) and ``max_sequence_length`` as the teacher's."""
        return self.pipeline_class()(
            transformer=self.transformer,
            scheduler=self.few_step_scheduler(),
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            text_encoder_3=self.text_encoder_3,
            tokenizer_3=self.tokenizer_3,
        )


# ==================================================================================================
# Flux.1
# ==================================================================================================


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): Flux's 2x2 patches as tokens (``FluxPipeline._pack_latents``)."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack` for a (H, W) latent grid."""
    b, _, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device, dtype) -> torch.Tensor:
    """(h/2 * w/2, 3) position ids of the packed tokens: (0, row, column), as ``FluxPipeline``."""
    rows = torch.arange(h // 2, dtype=torch.float32)[:, None].expand(h // 2, w // 2)
    cols = torch.arange(w // 2, dtype=torch.float32)[None, :].expand(h // 2, w // 2)
    return torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3).to(device, dtype)


class FluxTeacher(FlowTransformerTeacher):
    """``FluxTransformer2DModel`` over packed latents, conditioned on T5 hidden states and CLIP's pooled
    output. A guidance-distilled model (``guidance_embeds``: Flux.1-dev) carries omega in the cond dict's
    ``guidance`` entry (``flashbench.method.guidance``): the teacher's guided output is one forward with
    guidance = omega, the student runs at ``student_guidance``; a model without it (Flux.1-schnell) gets
    true CFG against the empty prompt."""

    transformer_class = "FluxTransformer2DModel"

    def __init__(
        self,
        source: str,
        *,
        device="cpu",
        dtype=torch.float32,
        max_sequence_length: int = 512,
        resolution: int = 0,
        student_guidance: float = 3.5,
        default_lora_rank: int = 64,
        lora_alpha: float = 0.0,
        lora_targets: Sequence[str] = (),
        disc_blocks: int = 0,
        disc_features: str = "tokens",
    ):
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

        self._load_common(
            source,
            device=device,
            dtype=dtype,
            resolution=resolution,
            lora_rank=default_lora_rank,
            lora_alpha=lora_alpha,
            lora_targets=lora_targets,
            disc_blocks=disc_blocks,
            disc_features=disc_features,
        )

        def model(cls, sub):
            return _load(cls, self.source, sub, torch_dtype=dtype).to(self.device).eval().requires_grad_(False)

        self.text_encoder = model(CLIPTextModel, "text_encoder")
        self.text_encoder_2 = model(T5EncoderModel, "text_encoder_2")
        self.tokenizer = _load(CLIPTokenizer, self.source, "tokenizer")
        self.tokenizer_2 = _load(AutoTokenizer, self.source, "tokenizer_2")
        self.max_sequence_length = int(max_sequence_length)
        self.guidance_embedded = bool(self.transformer.config.guidance_embeds)
        self.student_guidance = float(student_guidance)
        if self.latent_shape[0] * 4 != self.transformer.config.in_channels:
            raise UserError(
                f"{self.source}: the transformer takes {self.transformer.config.in_channels} channels, "
                f"2x2-packed {self.latent_shape[0]}-channel latents give {self.latent_shape[0] * 4}"
            )
        # Flux's shift depends on the image's token count: mu at this resolution (1024 px: 4096 tokens, mu 1.15)
        self._set_process(image_seq_len=self.tokens_side**2)
        self._cache = PromptCache()

    # --- conditioning ---
    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        pooled = self.text_encoder(ids.to(self.device), output_hidden_states=False).pooler_output
        ids2 = self.tokenizer_2(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True, return_tensors="pt").input_ids
        hidden = self.text_encoder_2(ids2.to(self.device), output_hidden_states=False)[0]
        return hidden.to(self.dtype), pooled.to(self.dtype)

    @torch.no_grad()
    def encode_prompts(self, prompts, extras=None):
        hidden, pooled = self._cache.get(list(prompts), self._encode_text)
        cond = {"encoder_hidden_states": hidden, "pooled_projections": pooled}
        if self.guidance_embedded:
            from flashbench.method.guidance import GUIDANCE_KEY

            cond[GUIDANCE_KEY] = torch.full((len(hidden),), self.student_guidance, device=self.device, dtype=torch.float32)
        return cond

    # null_condition: the empty prompt (the base class). A guidance-distilled Flux never reads it (its guided
    # output is one forward with guidance = omega); Flux.1-schnell uses it for true CFG.

    # --- denoiser ---
    def _inputs(self, x, t, cond) -> dict:
        _, _, h, w = x.shape
        return dict(
            hidden_states=pack(x.to(self.dtype)),
            encoder_hidden_states=cond["encoder_hidden_states"],
            pooled_projections=cond["pooled_projections"],
            timestep=as_timesteps(t, x) / 1000,  # the transformer multiplies by 1000 itself (the pipeline passes sigma)
            guidance=cond.get("guidance") if self.guidance_embedded else None,
            txt_ids=torch.zeros(cond["encoder_hidden_states"].shape[1], 3, device=x.device, dtype=self.dtype),
            img_ids=image_ids(h, w, x.device, self.dtype),
        )

    def _forward(self, module, x, t, cond):
        out = module(**self._inputs(x, t, cond), return_dict=False)[0]
        return unpack(out, x.shape[-2], x.shape[-1])

    def _block_tokens(self, x, t, cond):
        return transformer_block_tokens(self.transformer, self.disc_blocks, **self._inputs(x, t, cond), return_dict=False)

    # --- the stock pipeline ---
    def pipeline_class(self):
        from diffusers import FluxPipeline

        return FluxPipeline

    def pipeline(self):
        """``FluxPipeline`` over these components with the few-step scheduler; sample the student with
        ``sigmas=few_step_sigmas(n)``, ``guidance_scale=student_guidance`` and the teacher's ``height``/``width``
        (``resolution``) and ``max_sequence_length``."""
        return self.pipeline_class()(
            scheduler=self.few_step_scheduler(),
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            transformer=self.transformer,
        )
