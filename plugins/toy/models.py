"""Architectures of the toy world's networks, built from config (no download).

The teacher uses Stable Diffusion's own classes so every code path of a real SD1.5 teacher runs on
it: ``UNet2DConditionModel`` (pixel space, 3 channels, 16x16, cross-attention at 8x8),
``CLIPTextModel`` and a real ``CLIPTokenizer`` whose BPE vocabulary is open_clip's bundled one (the
same ids as SD's tokenizer: start 49406, end 49407). The noise schedule is SD's ``scaled_linear``.
There is no VAE: the toy world diffuses pixels, so encode/decode are the identity.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

TEXT_MAX_LENGTH = 16

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=TEXT_MAX_LENGTH,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="trailing",
)


def write_clip_tokenizer(folder: str | Path, model_max_length: int = TEXT_MAX_LENGTH) -> Path:
    """Write vocab.json + merges.txt of CLIP's BPE from the copy that ships inside open_clip.

    The vocabulary is built the way CLIP builds it (byte symbols, the same with ``</w>``, one entry per
    merge, then the two special tokens), so ids equal those of SD's tokenizer.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": model_max_length, "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8")
    return folder


def build_tokenizer(folder: str | Path):
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=TEXT_MAX_LENGTH, pad_token="<|endoftext|>")


def build_unet(seed: int = 0):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIG)


def build_text_encoder(seed: int = 0):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)
