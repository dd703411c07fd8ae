"""``clip_score``: CLIP score with open_clip, by default OpenCLIP ViT-bigG-14 trained on LAION-2B
(``laion2b_s39b_b160k``), the model of the paper's tables. Metric name ``clip_score``, higher is better.

Definition: the mean, over samples, of the cosine similarity between the L2-normalised image
embedding and the L2-normalised embedding of the sample's prompt. It is NOT multiplied by 100 and
NOT clipped at 0 (torchmetrics' ``CLIPScore`` reports ``100 * max(cos, 0)``); a typical value for a
good text-to-image model under ViT-bigG-14 is about 0.3.

Images: (B, 3, H, W) in [-1, 1] are quantised to 8 bits as a saved PNG would be (diffusers' rule)
and mapped to [0, 1], then open_clip's own evaluation transform for the model and weights is applied
to the tensor batch (bicubic resize of the short side, centre crop, CLIP mean/std normalisation).
Prompts go through open_clip's tokenizer for the model (truncated to its context length).

Weights are never downloaded and never substituted: ``build`` looks for them on this machine only
(a local file, or the Hugging Face / open_clip cache in local-only mode) and otherwise fails with one
line naming the model, the tag and how to provide them.

Config:

- ``model``: an open_clip model name (default "ViT-bigG-14").
- ``pretrained``: an open_clip pretrained tag of that model (default "laion2b_s39b_b160k") or a local
  checkpoint path (.bin / .safetensors / .pt / .pth) with that model's weights.
- ``cache_dir``: where tagged weights are looked for (open_clip's ``cache_dir``: a Hugging Face hub
  cache folder, or the folder of URL-hosted checkpoints). Default ``$FLASHBENCH_OPENCLIP_DIR``, else
  open_clip's defaults (the Hugging Face cache, ``~/.cache/clip``).
- ``batch_size``: images / prompts per encoder call (default 32).
- ``precision``: open_clip precision, "fp32" (default) | "fp16" | "bf16" | "amp".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl
from flashbench.errors import MissingWeightsError, UserError

OPENCLIP_ENV = "FLASHBENCH_OPENCLIP_DIR"
WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")
PRECISIONS = ("fp32", "fp16", "bf16", "amp")


@dataclass(frozen=True)
class ClipScoreConfig:
    model: str = "ViT-bigG-14"
    pretrained: str = "laion2b_s39b_b160k"
    cache_dir: str = ""
    batch_size: int = 32
    precision: str = "fp32"

    def __post_init__(self):
        if not self.model or not self.pretrained:
            raise ValueError("model and pretrained must be set (clip_score never uses random weights)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


def _cache_dir(config: ClipScoreConfig) -> str | None:
    folder = config.cache_dir or os.environ.get(OPENCLIP_ENV, "")
    return str(Path(folder).expanduser()) if folder else None


def _is_path(pretrained: str) -> bool:
    return pretrained.lower().endswith(WEIGHT_SUFFIXES) or os.sep in pretrained or "/" in pretrained


def resolve_weights(config: ClipScoreConfig) -> tuple[str, dict]:
    """(local checkpoint file, the tag's pretrained config or {}) without touching the network;
    :class:`MissingWeightsError` (one line) when the weights are not on this machine."""
    import open_clip

    model, tag = config.model, config.pretrained
    if model not in open_clip.list_models():
        raise UserError(f"clip_score: unknown open_clip model {model!r} (see open_clip.list_models())")
    if _is_path(tag):
        path = Path(tag).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"clip_score: open_clip weights file {path} for {model} not found; set pretrained to an existing checkpoint")
        return str(path), {}
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise UserError(f"clip_score: {tag!r} is not an open_clip pretrained tag of {model} (tags: {tags}) nor a checkpoint path")
    cache_dir = _cache_dir(config)
    found, looked = None, ""
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" names open_clip's default file
        if not filename:
            candidates = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]  # open_clip prefers the safetensors copy
        elif filename.endswith((".bin", ".pth")):
            candidates = [filename[:-4] + ".safetensors", filename]
        else:
            candidates = [filename]
        for name in candidates:
            # a pure file-system lookup in the hub cache (hf_hub_download, even local_files_only, goes online)
            cached = try_to_load_from_cache(repo_id=repo, filename=name, cache_dir=cache_dir)
            if isinstance(cached, str) and os.path.isfile(cached):
                found = cached
                break
        looked = f"Hugging Face repo {repo} in {cache_dir or 'the Hugging Face cache'}"
    elif cfg.get("url"):
        folder = Path(cache_dir or "~/.cache/clip").expanduser()
        path = folder / os.path.basename(cfg["url"])
        found = str(path) if path.is_file() else None
        looked = f"{path}"
    if not found:
        raise MissingWeightsError(
            f"clip_score: open_clip weights {model} / {tag} are not on this machine (looked for {looked}); "
            f"fetch them where there is internet (open_clip.create_model({model!r}, pretrained={tag!r}, cache_dir=DIR)) "
            f"and set {OPENCLIP_ENV}=DIR (or the clip_score evaluator's cache_dir option), or set its pretrained option "
            f"to a local checkpoint file"
        )
    return found, cfg


def load_clip(config: ClipScoreConfig, device="cpu"):
    """(model, preprocess, tokenizer) from local weights only."""
    import logging

    import open_clip

    path, tag_cfg = resolve_weights(config)
    preprocess_overrides = {
        "image_mean": tag_cfg.get("mean"),
        "image_std": tag_cfg.get("std"),
        "image_interpolation": tag_cfg.get("interpolation"),
        "image_resize_mode": tag_cfg.get("resize_mode"),
    }
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # open_clip logs every loading step at INFO on the root logger
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            config.model,
            pretrained=path,
            precision=config.precision,
            device=device,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            pretrained_image=False,
            pretrained_text=False,
            require_pretrained=True,
            cache_dir=_cache_dir(config),
            **{k: v for k, v in preprocess_overrides.items() if v is not None},
        )
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise MissingWeightsError(
            f"clip_score: could not load open_clip {config.model} weights from {path} ({type(exc).__name__}: {lines[0] if lines else ''})"
        ) from None
    finally:
        root.setLevel(level)
    return model.eval().requires_grad_(False), preprocess, open_clip.get_tokenizer(config.model)


def build(config: ClipScoreConfig, *, device="cpu"):
    from ._clip_score import ClipScore

    model, preprocess, tokenizer = load_clip(config, device)
    return ClipScore(config, model, preprocess, tokenizer, device)


@hookimpl
def register_evaluators(register):
    register(
        "clip_score",
        build,
        metric="clip_score",
        config=ClipScoreConfig,
        description="CLIP score: mean image-prompt cosine similarity under open_clip (default ViT-bigG-14 laion2b), not x100",
    )
