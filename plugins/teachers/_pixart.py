"""The PixArt-alpha teacher: a DiT (``PixArtTransformer2DModel``) conditioned on T5 hidden states with their
attention mask, SD's VAE, a DDPM-family schedule (PixArt ships a ``DPMSolverMultistepScheduler`` config).

* Loading: diffusers/transformers ``from_pretrained`` of a hub id or a local folder with the hub's layout
  (``transformer``, ``text_encoder``, ``tokenizer``, ``vae``, ``scheduler``); offline, a missing hub model
  fails with one line naming the id and how to give a local folder (:func:`._sd_family._load`).
* Conditioning: the prompt is lower-cased and stripped as ``PixArtAlphaPipeline`` does (its caption cleaning
  without the optional ``bs4`` step), padded to ``max_sequence_length`` (120 in PixArt-alpha), encoded by T5
  with the attention mask; the cond dict is flat and batch-first: ``encoder_hidden_states`` (B, L, C),
  ``encoder_attention_mask`` (B, L) and, for models trained with micro-conditioning (the 1024-MS
  checkpoint), ``resolution`` (B, 2) = image (height, width) in pixels and ``aspect_ratio`` (B, 1) =
  height / width, the values the pipeline passes. The null condition is the empty prompt, encoded the same
  way (the pipeline's ``negative_prompt=""``).
* Denoiser: the transformer predicts a learned variance besides epsilon (``out_channels`` = 2 x latent
  channels); the first half of the channels is epsilon, as in the pipeline.
* Discriminator features (Sec. 4.3, "for a DiT, intermediate transformer tokens"): patch embedding, the
  timestep/caption embeddings and the first ``disc_blocks`` transformer blocks (default: half of them) of the
  frozen teacher, tokens (B, N, D) reshaped to (B, D, h, w) on the patch grid.
* Student: peft LoRA injected into the transformer (diffusers' ``PixArtTransformer2DModel`` has no
  ``PeftAdapterMixin``, so the adapters are managed here with peft directly); disabled adapters = teacher.
* Export: a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, keys under
  ``base_model.model.``) — diffusers 0.42's ``PixArtAlphaPipeline`` has no ``load_lora_weights``; PixArt's
  own documented way is ``PeftModel.from_pretrained(pipe.transformer, folder)`` (see
  :func:`load_peft_adapter`), which injects the adapter into the pipeline's transformer in place.
* PixArt-Sigma (:class:`PixartSigmaTeacher`) is this teacher with another stock pipeline
  (``PixArtSigmaPipeline``, which has no ``load_lora_weights`` either: same peft export), T5 prompts of up
  to 300 tokens, and no micro-conditioning; everything else (learned sigma, VP epsilon, the discriminator's
  tokens, the LoRA) is shared.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from flashbench.features import transformer_block_tokens
from flashbench.method.adapters import tuner_layers
from flashbench.method.schedule import NoiseSchedule
from flashbench.method.teacher import Teacher

from ._pixart_configs import LORA_TARGETS
from ._sd_family import _load

PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names the weights of a wrapped model
# T5-XXL rows are large (120 x 4096 values: ~2 MB in float32), so the prompt cache is bounded in bytes
_PROMPT_CACHE_BYTES = 256 * 2**20
FEW_STEP_ORIGINAL_STEPS = 4
#: what the discriminator head reads: the intermediate tokens (the paper's text), or the frozen teacher's
#: epsilon on the latent grid (what the official implementation's Pixart head, 4 input channels, receives)
DISC_FEATURES = ("tokens", "output")


# --- LoRA with peft on a model without diffusers' PEFT integration -------------------------------------------
def _targets_present(module: nn.Module, targets: Sequence[str]) -> list[str]:
    """The targets that name at least one submodule (peft's rule: the full name or its dotted suffix)."""
    names = [n for n, _ in module.named_modules()]
    return [t for t in targets if any(n == t or n.endswith("." + t) for n in names)]


def inject_lora(model: nn.Module, name: str, rank: int, *, alpha: float = 0.0, targets: Sequence[str] = LORA_TARGETS) -> list[nn.Parameter]:
    """Inject a fresh LoRA adapter ``name`` into ``model`` and make it the only active one; returns its
    parameters (trainable). ``alpha`` 0 means alpha = rank."""
    from peft import LoraConfig, inject_adapter_in_model

    if name in (getattr(model, "peft_config", None) or {}):
        raise ValueError(f"adapter {name!r} already exists")
    present = _targets_present(model, targets)
    if not present:
        raise ValueError(f"none of the LoRA targets {list(targets)} names a module of {type(model).__name__}")
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=present)
    with warnings.catch_warnings():
        # peft warns whenever a second adapter joins a model's peft_config; several adapters are intended here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        inject_adapter_in_model(config, model, adapter_name=name)
    for layer in tuner_layers(model):
        layer.set_adapter(name)  # only this adapter active; peft sets requires_grad on its weights only
    params = [p for n, p in model.named_parameters() if "lora_" in n and f".{name}." in n]
    for p in params:
        if p.dtype in (torch.float16, torch.bfloat16):
            # a half-precision base keeps float32 adapters (as PeftModel does): Adam steps of lr 1e-5 vanish in
            # bf16's 8-bit mantissa; peft's layers cast their input to the adapter's dtype and back
            p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_parameter_count(transformer_config: Mapping, rank: int, *, alpha: float = 0.0, targets: Sequence[str] = LORA_TARGETS) -> int:
    """Trainable LoRA parameters on the transformer built from ``transformer_config`` on the meta device
    (no weights are allocated or downloaded)."""
    from diffusers import PixArtTransformer2DModel

    with torch.device("meta"):
        model = PixArtTransformer2DModel(**transformer_config)
    return sum(p.numel() for p in inject_lora(model, "count", rank, alpha=alpha, targets=targets))


def few_step_scheduler(scheduler_config):
    """``LCMScheduler`` over the teacher's schedule whose trailing grid is the student's: explicit
    ``timesteps=[999, 749, 499, 249][:n]`` lie on its 4-step origin schedule, and ``num_inference_steps=n``
    (n in 1, 2, 4) alone gives the same timesteps."""
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(scheduler_config, timestep_spacing="trailing", original_inference_steps=FEW_STEP_ORIGINAL_STEPS)


def load_peft_adapter(transformer: nn.Module, folder: str | Path, adapter_name: str = "default"):
    """Load an exported student into a (pipeline's) transformer the way PixArt documents it:
    ``PeftModel.from_pretrained``; the transformer gets the adapter in place, so the pipeline that holds it
    samples with the student. Returns the ``PeftModel`` wrapper."""
    from peft import PeftModel

    return PeftModel.from_pretrained(transformer, str(folder), adapter_name=adapter_name)


# --- the teacher -------------------------------------------------------------------------------------------------
class PixartTeacher(Teacher):
    #: the family's stock diffusers pipeline (:meth:`pipeline`), by its name in ``diffusers``
    pipeline_class_name = "PixArtAlphaPipeline"

    def __init__(
        self,
        source: str,
        *,
        device="cpu",
        dtype=torch.float32,
        max_sequence_length: int = 120,
        default_lora_rank: int = 64,
        lora_alpha: float = 8.0,
        lora_targets: Sequence[str] = LORA_TARGETS,
        disc_blocks: int = 0,
        disc_features: str = "tokens",
    ):
        from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtTransformer2DModel
        from transformers import AutoTokenizer, T5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.source = str(source)
        self.device, self.dtype = torch.device(device), dtype
        self.transformer = _load(PixArtTransformer2DModel, self.source, "transformer", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.text_encoder = _load(T5EncoderModel, self.source, "text_encoder", dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.tokenizer = _load(AutoTokenizer, self.source, "tokenizer")
        self.vae = _load(AutoencoderKL, self.source, "vae", torch_dtype=dtype).to(self.device).eval().requires_grad_(False)
        self.scheduler = _load(DPMSolverMultistepScheduler, self.source, "scheduler")
        self.denoiser = self.transformer
        self.schedule = NoiseSchedule(self.scheduler.alphas_cumprod)

        cfg = self.transformer.config
        self.latent_shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_size = cfg.sample_size * self.vae_scale_factor
        # the transformer resolves None to "sample_size == 128" (the 1024-MS model); read the resolved value
        self.micro_conditioning = bool(self.transformer.use_additional_conditions)
        self.max_sequence_length = int(max_sequence_length)
        self.default_lora_rank = int(default_lora_rank)
        self.lora_alpha = float(lora_alpha)
        self.lora_targets = tuple(lora_targets)
        n_blocks = len(self.transformer.transformer_blocks)
        self.disc_blocks = int(disc_blocks) or max(1, n_blocks // 2)
        if not 1 <= self.disc_blocks <= n_blocks:
            raise ValueError(f"disc_blocks must be in [1, {n_blocks}] for {self.source}, got {disc_blocks}")
        if disc_features not in DISC_FEATURES:
            raise ValueError(f"disc_features must be one of {', '.join(DISC_FEATURES)}, got {disc_features!r}")
        self.disc_features = disc_features
        self._prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # --- conditioning ---
    @staticmethod
    def clean_prompt(prompt: str) -> str:
        """What ``PixArtAlphaPipeline`` feeds T5 (``clean_caption=False``, or when bs4/ftfy are missing)."""
        return prompt.lower().strip()

    @torch.no_grad()
    def _encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True, add_special_tokens=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self.device)
        hidden = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]
        return hidden.to(self.dtype), mask

    @torch.no_grad()
    def encode_prompts(self, prompts, extras=None):
        texts = [self.clean_prompt(p) for p in prompts]
        missing = [p for p in dict.fromkeys(texts) if p not in self._prompt_cache]
        if not missing:
            return self._cond(*self._from_cache(texts))
        h, m = self._encode_text(missing)
        row_bytes = h[0].numel() * h.element_size() + m[0].numel() * m.element_size()
        if (len(self._prompt_cache) + len(missing)) * row_bytes <= _PROMPT_CACHE_BYTES:
            # T5 is the costly part of PixArt's conditioning; one row per distinct prompt saves it every step
            self._prompt_cache.update(zip(missing, zip(h, m)))
            return self._cond(*self._from_cache(texts))
        found = dict(zip(missing, zip(h, m)))  # cache full: serve this batch from the fresh encoding and the cache
        rows = [found[p] if p in found else self._prompt_cache[p] for p in texts]
        return self._cond(torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]))

    def _from_cache(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([self._prompt_cache[p][0] for p in texts]), torch.stack([self._prompt_cache[p][1] for p in texts])

    def _cond(self, hidden: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        cond = {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        if self.micro_conditioning:
            b, (_, h, w) = hidden.shape[0], self.latent_shape
            height, width = h * self.vae_scale_factor, w * self.vae_scale_factor
            cond["resolution"] = torch.tensor([[float(height), float(width)]], device=self.device, dtype=self.dtype).repeat(b, 1)
            cond["aspect_ratio"] = torch.tensor([[height / width]], device=self.device, dtype=self.dtype).repeat(b, 1)
        return cond

    # null_condition: the base class's encode_prompts([""] * n) is PixArt's own null (negative_prompt="")

    @staticmethod
    def _added_cond(cond) -> dict:
        return {"resolution": cond.get("resolution"), "aspect_ratio": cond.get("aspect_ratio")}

    # --- denoiser ---
    def _forward(self, module, x, t, cond):
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        out = module(
            x.to(self.dtype),
            encoder_hidden_states=cond["encoder_hidden_states"],
            encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=t,
            added_cond_kwargs=self._added_cond(cond),
            return_dict=False,
        )[0]
        # learned sigma: channels [C:] interpolate the variance; the first C are epsilon
        return out[:, : x.shape[1]].to(x.dtype)

    def encoder_features(self, x, t, cond):
        """Patch embedding + the first ``disc_blocks`` transformer blocks, adapters disabled, as (B, D, h, w)
        (``disc_features="output"``: the frozen teacher's epsilon, (B, C, H, W)).

        The tokens are those ``PixArtTransformer2DModel.forward`` itself computes, stopped after the blocks
        (:func:`flashbench.features.transformer_block_tokens`; a test checks that with all blocks these are the
        tokens the full forward feeds its output layer)."""
        if self.disc_features == "output":
            with self.adapters_disabled():
                return self._forward(self.transformer, x, t, cond)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        p = self.transformer.config.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        with self.adapters_disabled():
            tokens = transformer_block_tokens(
                self.transformer,
                self.disc_blocks,
                x.to(self.dtype),
                encoder_hidden_states=cond["encoder_hidden_states"],
                encoder_attention_mask=cond["encoder_attention_mask"],
                timestep=t,
                added_cond_kwargs=self._added_cond(cond),
                return_dict=False,
            )
        return tokens.transpose(1, 2).reshape(x.shape[0], tokens.shape[-1], h, w)

    def discriminator_input(self):
        cfg = self.transformer.config
        if self.disc_features == "output":
            return cfg.in_channels, cfg.sample_size
        return cfg.num_attention_heads * cfg.attention_head_dim, cfg.sample_size // cfg.patch_size

    # --- latents ---
    def encode(self, images):
        lat = self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mean
        return lat * self.vae.config.scaling_factor

    def decode(self, latents):
        return self.vae.decode(latents.to(self.dtype) / self.vae.config.scaling_factor).sample

    # --- LoRA ---
    def add_lora(self, name, rank):
        return inject_lora(self.transformer, name, rank, alpha=self.lora_alpha, targets=self.lora_targets)

    def remove_lora(self, name):
        configs = getattr(self.transformer, "peft_config", None) or {}
        if name not in configs:
            return
        for layer in tuner_layers(self.transformer):
            layer.delete_adapter(name)
        configs.pop(name)
        if not configs:
            del self.transformer.peft_config

    def lora_state_dict(self, name) -> dict[str, torch.Tensor]:
        """The adapter's weights named as ``PeftModel.save_pretrained`` names them (adapter name dropped)."""
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.transformer, adapter_name=name)
        return {_PEFT_PREFIX + k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    def save_lora(self, name, folder):
        """Write the adapter as a peft adapter folder; load it with :func:`load_peft_adapter`
        (``PeftModel.from_pretrained(pipe.transformer, folder)``)."""
        from safetensors.torch import save_file

        configs = getattr(self.transformer, "peft_config", None) or {}
        if name not in configs:
            raise KeyError(f"no LoRA adapter {name!r} on the PixArt transformer (have: {sorted(configs)})")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = copy.copy(configs[name])
        config.base_model_name_or_path, config.inference_mode = self.source, True
        config.save_pretrained(str(folder))
        save_file(self.lora_state_dict(name), str(folder / PEFT_WEIGHTS_NAME), metadata={"format": "pt"})
        return folder

    def pipeline_class(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def pipeline(self):
        """The stock pipeline (``PixArtAlphaPipeline``; ``PixArtSigmaPipeline`` for Sigma) over these components
        with :func:`few_step_scheduler` (the student's few-step sampling; call it with ``guidance_scale=1`` (no
        CFG) and, for sizes outside PixArt's aspect-ratio bins, ``use_resolution_binning=False``)."""
        return self.pipeline_class()(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=self.transformer,
            scheduler=few_step_scheduler(self.scheduler.config),
        )


class PixartSigmaTeacher(PixartTeacher):
    """PixArt-Sigma: the PixArt-alpha teacher over ``PixArtSigmaPipeline``, T5 prompts of up to 300 tokens.

    Sigma's transformer takes no resolution / aspect-ratio embeddings and its pipeline passes none, so a
    transformer that expects them (a PixArt-alpha 1024-MS checkpoint given as ``path``) is refused here rather
    than failing inside the stock pipeline after training."""

    pipeline_class_name = "PixArtSigmaPipeline"

    def __init__(self, source: str, *, max_sequence_length: int = 300, **kw):
        super().__init__(source, max_sequence_length=max_sequence_length, **kw)
        if self.micro_conditioning:
            from flashbench.errors import UserError

            raise UserError(
                f"{self.source}: this transformer expects resolution / aspect-ratio micro-conditioning, which "
                "PixArt-Sigma models and PixArtSigmaPipeline do not have (a PixArt-alpha 1024-MS checkpoint? use pixart-alpha)"
            )
