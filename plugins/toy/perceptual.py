"""The toy world's networks, loaded from the committed weights, and the perceptual distance built on
the digit classifier (the LPIPS construction with uniform channel weights)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from flashbench.errors import MissingWeightsError

from . import nets
from .build import CLIP_FILE, FEATURES_FILE


def _load_state(path):
    from safetensors.torch import load_file

    if not path.exists():
        raise MissingWeightsError(f"toy weights {path} are missing; rebuild them with: python -m flashbench_plugins.toy.build --all")
    return {k: v.float() for k, v in load_file(str(path)).items()}


@functools.lru_cache(maxsize=4)
def load_features(device: str = "cpu") -> nets.DigitFeatures:
    net = nets.DigitFeatures()
    net.load_state_dict(_load_state(FEATURES_FILE))
    return net.to(device).eval().requires_grad_(False)


def features_of(net, images, device="cpu"):
    """The classifier's (B, 128) embedding of images in [-1, 1], float64 numpy, in chunks of 256 (toy-fd, toy-kid)."""
    import torch

    with torch.no_grad():
        out = [net.features(chunk.to(device).float().clamp(-1, 1)) for chunk in images.split(256)]
    return torch.cat(out).cpu().double().numpy()


@functools.lru_cache(maxsize=4)
def load_clip(device: str = "cpu"):
    model = nets.build_clip()
    model.load_state_dict(_load_state(CLIP_FILE))
    return model.to(device).eval().requires_grad_(False)


def toy_perceptual_distance(device="cpu"):
    net = load_features(str(device))

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], device=a.device)
        for fa, fb in zip(net.stages(a), net.stages(b)):
            fa, fb = F.normalize(fa, dim=1, eps=1e-8), F.normalize(fb, dim=1, eps=1e-8)
            total = total + (fa - fb).pow(2).sum(dim=1).mean(dim=(1, 2))
        return total

    return distance
