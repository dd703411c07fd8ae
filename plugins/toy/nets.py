"""The toy evaluators' networks: a digit/colour classifier (features for the Fréchet distance and the
perceptual distillation loss) and a tiny open_clip CLIP (CLIP score). Both are trained here on the
coloured digits by :mod:`flashbench_plugins.toy.build`; neither is passed off as Inception, LPIPS-VGG
or OpenCLIP-G.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

CLIP_MODEL_NAME = "toy-digits-clip"
CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 16, "layers": 2, "width": 64, "patch_size": 4, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class DigitFeatures(nn.Module):
    """Three conv stages (16->16->8->4) and a 128-d embedding, with digit and colour heads.

    ``features(x)`` (the 128-d embedding) feeds the Fréchet distance; ``stages(x)`` (the three conv
    activations) feed the perceptual distance. Input: (B, 3, 16, 16) in [-1, 1].
    """

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU())
        self.block2 = nn.Sequential(nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.SiLU())
        self.block3 = nn.Sequential(nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GroupNorm(8, 64), nn.SiLU())
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, self.feature_dim), nn.SiLU())
        self.digit_head = nn.Linear(self.feature_dim, 10)
        self.colour_head = nn.Linear(self.feature_dim, 6)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        h1 = self.block1(x)
        h2 = self.block2(h1)
        h3 = self.block3(h2)
        return [h1, h2, h3]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.stages(x)[-1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.digit_head(f), self.colour_head(f)


def register_clip_config() -> None:
    """Make ``toy-digits-clip`` known to open_clip (idempotent)."""
    import tempfile

    import open_clip

    if CLIP_MODEL_NAME in open_clip.list_models():
        return
    folder = Path(tempfile.mkdtemp(prefix="flashbench-clipcfg-"))
    (folder / f"{CLIP_MODEL_NAME}.json").write_text(json.dumps(CLIP_CONFIG))
    open_clip.add_model_config(folder)


def build_clip():
    import open_clip

    register_clip_config()
    # open_clip logs "no pretrained weights loaded" on the root logger; the caller loads ours next
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(CLIP_MODEL_NAME, pretrained=None)
    finally:
        root.setLevel(level)
