"""``lpips``: a perceptual distillation loss on decoded images (the paper's choice for SDXL and Pixart).

``net`` picks the backbone: ``vgg``/``alex``/``squeeze`` use the lpips package, whose ImageNet backbones are
downloaded by torchvision at first use -- offline they must already be in torch's cache
(``$TORCH_HOME/hub/checkpoints``), otherwise this fails with a message saying so. ``toy-digits`` is the
toy world's perceptual distance: the same LPIPS construction (unit-normalised channel features,
squared differences, spatial mean, summed over stages; uniform channel weights, since no human
judgements exist for the toy world) on the three conv stages of the digit/colour classifier trained
here (``flashbench_plugins/weights/toy-digits-features.safetensors``). It is a really trained
backbone, never a random one.

Config: ``net`` ("auto" | "vgg" | "alex" | "squeeze" | "toy-digits"), default "auto": the teacher's
``perceptual_net`` (the toy teacher says "toy-digits"; real backbones "vgg", as the paper).
"""
from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

NETS = ("auto", "vgg", "alex", "squeeze", "toy-digits")


@dataclass(frozen=True)
class LPIPSConfig:
    net: str = "auto"

    def __post_init__(self):
        if self.net not in NETS:
            raise ValueError(f"net must be one of {', '.join(NETS)}, got {self.net!r}")


def build(config: LPIPSConfig, *, device="cpu", teacher=None, **context):
    from flashbench.method.losses import PerceptualDistillation

    net_name = config.net if config.net != "auto" else getattr(teacher, "perceptual_net", "vgg")
    if net_name == "toy-digits":
        from flashbench_plugins.toy.perceptual import toy_perceptual_distance

        return PerceptualDistillation(toy_perceptual_distance(device))
    from flashbench_plugins.evaluators._lpips_net import load_lpips

    net = load_lpips(net_name, device)
    return PerceptualDistillation(lambda a, b: net(a, b).flatten())


@hookimpl
def register_losses(register):
    register("lpips", build, config=LPIPSConfig, tags=("distillation",), description="LPIPS on decoded images (toy: trained digit-classifier stages)")
