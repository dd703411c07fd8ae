"""The discriminator head on the frozen teacher's encoder features (Sec. 4.3).

A small CNN: blocks of Conv(kernel 4, stride 2) + GroupNorm + SiLU while the map is larger than 2x2,
then a 1x1 conv to one score per position, averaged to one real/fake score per sample. Only this head
is trained; the features come from the teacher with its adapters disabled.
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
