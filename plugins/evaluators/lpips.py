"""``lpips``: how far a sample drifts from its teacher -- the LPIPS distance (Zhang et al. 2018, the
``lpips`` package, v0.1 linear heads) between each generated image and the teacher's many-step sample
from the same noise and prompt, averaged over samples. Metric name ``lpips_to_teacher``, lower is
closer to the teacher. Images are compared in [-1, 1] (the package's input convention) at their
generated resolution.

Weights: the package ships the linear heads; the ImageNet backbone comes from torchvision's
checkpoint in ``$TORCH_HOME/hub/checkpoints`` (e.g. ``alexnet-owt-7be5be79.pth``). When it is not
there, ``build`` fails with one line naming the file and where to put it; nothing is downloaded and
no random backbone is ever used.

Config: ``net``: "alex" (default, the usual choice for reporting LPIPS) | "vgg" | "squeeze".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from flashbench import hookimpl
from flashbench.errors import MissingWeightsError

NETS = ("alex", "vgg", "squeeze")


@dataclass(frozen=True)
class LPIPSEvalConfig:
    net: str = "alex"

    def __post_init__(self):
        if self.net not in NETS:
            raise ValueError(f"net must be one of {', '.join(NETS)}, got {self.net!r}")


def backbone_checkpoint(net: str) -> str:
    """Where torchvision keeps the ImageNet backbone the lpips package loads for ``net``."""
    import torch
    import torchvision.models as tvm

    weights = {
        "alex": tvm.AlexNet_Weights.IMAGENET1K_V1,
        "vgg": tvm.VGG16_Weights.IMAGENET1K_V1,
        "squeeze": tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1,
    }[net]
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def check_backbone(net: str) -> None:
    """One-line :class:`MissingWeightsError` when the backbone checkpoint is not on this machine
    (checked before the lpips package is asked, so that it never tries to download)."""
    import torchvision.models as tvm

    path = backbone_checkpoint(net)
    if not os.path.isfile(path):
        url = {"alex": tvm.AlexNet_Weights, "vgg": tvm.VGG16_Weights, "squeeze": tvm.SqueezeNet1_1_Weights}[net].IMAGENET1K_V1.url
        raise MissingWeightsError(
            f"lpips: backbone {net!r} needs torchvision's ImageNet checkpoint {path}, which is not on this machine; "
            f"download {url} into that folder (set TORCH_HOME to move it)"
        )


def evaluator_for(network, device="cpu"):
    """The ``lpips_to_teacher`` evaluator around an ``lpips.LPIPS``-like module (``network(x, y)`` ->
    (B, 1, 1, 1) distances for images in [-1, 1]). ``build`` passes the real network; tests and custom
    perceptual metrics may pass their own."""
    from ._lpips import LPIPSToTeacher

    return LPIPSToTeacher(network, device)


def build(config: LPIPSEvalConfig, *, device="cpu"):
    from ._lpips_net import load_lpips

    check_backbone(config.net)
    return evaluator_for(load_lpips(config.net, device), device)


@hookimpl
def register_evaluators(register):
    register(
        "lpips",
        build,
        metric="lpips_to_teacher",
        config=LPIPSEvalConfig,
        description="LPIPS (lpips package, AlexNet by default) to the teacher's many-step sample",
    )  # noqa: E501
