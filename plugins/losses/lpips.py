"""``lpips``: a perceptual distillation loss on decoded images (the paper's choice for SDXL and Pixart).

``net`` picks the backbone: ``vgg``/``alex``/``squeeze`` use the lpips package, whose ImageNet backbones are
downloaded by torchvision at first use -- offline they must already be in torch's cache
(``$TORCH_HOME/hub/checkpoints``), otherwise this fails with a message saying so. ``toy-digits`` is the
toy world's perceptual distance: the same LPIPS construction (unit-normalised channel features,
squared differences, spatial mean, summed over stages; uniform channel weights, since no human
judgements exist for the toy world) on the three conv stages of the digit/colour classifier trained
here (``flashbench_plugins/weights/toy-digits-features.safetensors``). It is a really trained
backbone, never a random one.

As in the authors' code, the student's and the teacher's z~0 are decoded only in their centre 64 x 64 latent
window (512 px through SD's 8x VAE; a quarter of the decoder's cost at 1024 px) and the images clamped to
[-1, 1] before the distance; latents no larger than the window (the toy world's 16 x 16 pixels) are decoded
whole. The paper says only "LPIPS on decoded images".

Config: ``net`` ("auto" | "vgg" | "alex" | "squeeze" | "toy-digits"), default "auto": the teacher's
:attr:`~flashbench.method.teacher.Teacher.perceptual_net` ("vgg", as the paper, unless the teacher class says
otherwise: the toy teachers say "toy-digits"; "vgg" when built without a teacher); ``crop`` (the
side of the centre latent window decoded, default 64; 0 decodes the full image); ``clamp`` (clamp the
decoded images to [-1, 1], default true).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

NETS = ("auto", "vgg", "alex", "squeeze", "toy-digits")


@dataclass(frozen=True)
class LPIPSConfig:
    net: str = "auto"
    crop: int = 64
    clamp: bool = True

    def __post_init__(self):
        if self.net not in NETS:
            raise ValueError(f"net must be one of {', '.join(NETS)}, got {self.net!r}")
        if isinstance(self.crop, bool) or not isinstance(self.crop, int) or self.crop < 0:
            raise ValueError(f"crop must be an integer >= 0 (latent pixels; 0: the full image), got {self.crop!r}")
        if not isinstance(self.clamp, bool):
            raise ValueError(f"clamp must be true or false, got {self.clamp!r}")


def backbone(config: LPIPSConfig, teacher=None) -> str:
    """The backbone ``net`` names; "auto": the teacher's ``perceptual_net`` (the :class:`Teacher` default without one)."""
    if config.net != "auto":
        return config.net
    from flashbench.method.teacher import Teacher

    return (Teacher if teacher is None else teacher).perceptual_net


def build(config: LPIPSConfig, *, device="cpu", teacher=None, **context):
    from flashbench.method.losses import PerceptualDistillation

    net_name = backbone(config, teacher)
    if net_name == "toy-digits":
        from flashbench_plugins.toy.perceptual import toy_perceptual_distance

        return PerceptualDistillation(toy_perceptual_distance(device), crop=config.crop, clamp=config.clamp)
    from flashbench_plugins.evaluators._lpips_net import load_lpips

    net = load_lpips(net_name, device)
    return PerceptualDistillation(lambda a, b: net(a, b).flatten(), crop=config.crop, clamp=config.clamp)


@hookimpl
def register_losses(register):
    register("lpips", build, config=LPIPSConfig, tags=("distillation",), description="LPIPS on decoded images (toy: trained digit-classifier stages)")
