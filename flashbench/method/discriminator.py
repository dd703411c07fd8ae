"""The discriminator head on the frozen teacher's encoder features (Sec. 4.3).

``paper`` (the default): the paper's description, a small CNN of blocks Conv(kernel 4, stride 2) + GroupNorm
+ SiLU while the map is larger than 2x2, then a 1x1 conv to one score per position, averaged to one
real/fake score per sample. ``code``: the authors' released head (SD1.5: 0.87M parameters), conv3x3
C->64, SiLU, conv4x4/2 ->128 (no bias), SiLU, GroupNorm(4), conv4x4 ->1 (no bias, no padding); on SD1.5's
8x8 mid-block map that is one score per sample, on a larger map the scores are averaged as above. Only
the head is trained; the features come from the teacher with its adapters disabled.
"""

from __future__ import annotations

import torch
from torch import nn


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class DiscriminatorHead(nn.Module):
    def __init__(self, in_channels: int, feature_size: int, hidden: int | None = None, max_blocks: int = 3):
        super().__init__()
        hidden = hidden or min(in_channels, 256)  # wide DiT tokens (1152 ch) would make a 64M-parameter head
        layers: list[nn.Module] = []
        size, ch = feature_size, in_channels
        for _ in range(max_blocks):
            if size < 4:
                break
            layers += [nn.Conv2d(ch, hidden, 4, stride=2, padding=1), nn.GroupNorm(_groups(hidden), hidden), nn.SiLU()]
            ch, size = hidden, size // 2
        layers.append(nn.Conv2d(ch, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float()).mean(dim=(1, 2, 3))


class AuthorsHead(nn.Module):
    """The authors' discriminator head (their SD1.5 training script), for the paper-vs-code comparison."""

    def __init__(self, in_channels: int, feature_size: int, width: int = 64):
        super().__init__()
        if feature_size < 8:  # 4x4 after the strided conv, which the last 4x4 conv (no padding) needs
            raise ValueError(f"the authors' discriminator head needs feature maps of at least 8x8, got {feature_size}x{feature_size}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False),
            nn.SiLU(),
            nn.GroupNorm(4, 2 * width),
            nn.Conv2d(2 * width, 1, 4, bias=False),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float()).mean(dim=(1, 2, 3))


HEADS = {"paper": DiscriminatorHead, "code": AuthorsHead}


def build_head(kind: str, in_channels: int, feature_size: int) -> nn.Module:
    if kind not in HEADS:
        raise ValueError(f"discriminator head must be one of {', '.join(HEADS)}, got {kind!r}")
    return HEADS[kind](in_channels, feature_size)
