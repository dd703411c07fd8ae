"""The loss terms of Eq. (10): distillation (Eq. 6), adversarial (Eq. 8) and DMD (Eq. 9)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import torch
import torch.nn.functional as F

# --- distillation -------------------------------------------------------------------------------


class DistillationLoss(ABC):
    @abstractmethod
    def __call__(self, student_x0: torch.Tensor, teacher_x0: torch.Tensor, decode: Callable) -> torch.Tensor: ...


class MSEDistillation(DistillationLoss):
    """|| z~0_student - z~0_teacher ||^2 in latent space (the paper's choice for SD1.5)."""

    def __call__(self, student_x0, teacher_x0, decode=None):
        return F.mse_loss(student_x0.float(), teacher_x0.float())


def centre_crop(latents: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size`` x ``size`` window of (..., H, W) latents (each side capped at H or W); 0: all of it."""
    if size <= 0:
        return latents
    h, w = latents.shape[-2:]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return latents[..., top : top + ch, left : left + cw]


class PerceptualDistillation(DistillationLoss):
    """A perceptual distance on *decoded* images (LPIPS for SDXL / Pixart).

    ``distance(a, b)`` maps two image batches in [-1, 1] to per-sample distances; it is an LPIPS network
    or, at toy scale, the toy world's trained classifier features (see the ``lpips`` loss plugin).

    As in the authors' code, only the centre ``crop`` x ``crop`` window of the latents is decoded (64: 512 px
    through an 8x VAE; at 1024 px a quarter of the decoder's cost) and the decoded images are clamped to
    [-1, 1], the range LPIPS expects (a VAE overshoots it). ``crop=0`` decodes the whole latents;
    latents smaller than the window are decoded whole.
    """

    def __init__(self, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, crop: int = 64, clamp: bool = True):
        self.distance, self.crop, self.clamp = distance, crop, clamp

    def _image(self, latents, decode):
        image = decode(centre_crop(latents, self.crop)).float()
        return image.clamp(-1, 1) if self.clamp else image

    def __call__(self, student_x0, teacher_x0, decode):
        return self.distance(self._image(student_x0, decode), self._image(teacher_x0, decode)).mean()


# --- adversarial --------------------------------------------------------------------------------


class GANLoss(ABC):
    """Generator and discriminator objectives on the discriminator's raw scores.

    ``head`` names the discriminator head the trainer builds for this loss (``flashbench.method.discriminator``:
    "paper", the paper's description, or "code", the authors' released head)."""

    head: str = "paper"

    def make_head(self, in_channels: int, feature_size: int) -> torch.nn.Module:
        from .discriminator import build_head

        return build_head(self.head, in_channels, feature_size)

    @abstractmethod
    def generator(self, fake: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor: ...

    def before_critic_step(self, head: torch.nn.Module) -> None:
        """Called by the trainer once per step, before the discriminator head's forward and update: the place
        for a constraint on the critic (WGAN's weight clipping). Nothing by default."""


class LSGAN(GANLoss):
    """Eq. (8): L_adv = 1/2 E[(D(fake) - 1)^2]; L_D = 1/2 E[(D(real) - 1)^2 + D(fake)^2] on the raw scores.

    ``scores="sigmoid"`` is the authors' code instead: the scores go through a sigmoid first and the
    generator's loss has no 1/2, L_adv = E[(s(D(fake)) - 1)^2]; L_D = 1/2 E[(s(D(real)) - 1)^2 + s(D(fake))^2].
    The sigmoid bounds the scores to (0, 1), so the generator's gradient vanishes where the head is sure.
    """

    def __init__(self, scores: str = "raw", head: str = "paper"):
        if scores not in ("raw", "sigmoid"):
            raise ValueError(f"scores must be 'raw' (Eq. 8) or 'sigmoid' (the authors' code), got {scores!r}")
        self.scores, self.head = scores, head

    def generator(self, fake):
        if self.scores == "sigmoid":
            return (torch.sigmoid(fake) - 1).pow(2).mean()
        return 0.5 * (fake - 1).pow(2).mean()

    def discriminator(self, real, fake):
        if self.scores == "sigmoid":
            real, fake = torch.sigmoid(real), torch.sigmoid(fake)
        return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


class Hinge(GANLoss):
    """L_adv = -E[D(fake)]; L_D = E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""

    def __init__(self, head: str = "paper"):
        self.head = head

    def generator(self, fake):
        return -fake.mean()

    def discriminator(self, real, fake):
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


class WGAN(GANLoss):
    """L_adv = -E[D(fake)]; L_D = E[D(fake)] - E[D(real)] (critic).

    The critic must be Lipschitz for L_D to estimate a Wasserstein distance; without a constraint its scores
    grow without bound and Figure 5(b) would compare LSGAN with a broken WGAN. As Arjovsky et al. (cited by
    the paper) and the authors' code, every parameter of the head is clipped to [-clip, clip] before each
    critic step (``clip`` = 0: no constraint).
    """

    def __init__(self, clip: float = 0.01, head: str = "paper"):
        if not clip >= 0:
            raise ValueError(f"clip must be >= 0, got {clip}")
        self.clip, self.head = float(clip), head

    def before_critic_step(self, head):
        if self.clip > 0:
            with torch.no_grad():
                for p in head.parameters():
                    p.clamp_(-self.clip, self.clip)

    def generator(self, fake):
        return -fake.mean()

    def discriminator(self, real, fake):
        return fake.mean() - real.mean()


# --- distribution matching ----------------------------------------------------------------------


def dmd_loss(student_x0: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (9) as an MSE to a stop-gradient target (DMD, Yin et al. 2024).

    ``x0_real`` / ``x0_fake`` are the teacher's (CFG) and the student's x0 predictions from the re-noised
    student sample. Since s = -(z - alpha x0)/sigma^2, s_teacher - s_student = alpha/sigma^2 (x0_real - x0_fake),
    so the gradient -(s_teacher - s_student) points along g = (x0_fake - x0_real). It is normalised per sample
    by the mean absolute distance between the student sample and x0_real. The loss is the mean of
    (student_x0 - (student_x0 - g))^2 with no 1/2, as in the authors' code (and DMD's), so its gradient
    w.r.t. ``student_x0`` is 2 g / numel: with a 1/2 the gradient would be half the authors' and
    lambda_DMD = [0, .3, .5, .7] would act as [0, .15, .25, .35].
    """
    with torch.no_grad():
        dims = tuple(range(1, student_x0.ndim))
        weight = (student_x0 - x0_real).abs().mean(dim=dims, keepdim=True).clamp_min(1e-6)
        grad = (x0_fake - x0_real) / weight
        target = (student_x0 - grad).detach()
    return F.mse_loss(student_x0.float(), target.float(), reduction="mean")


class DMDLoss:
    """Callable wrapper of :func:`dmd_loss`, what the ``dmd`` plugin builds."""

    def __call__(self, student_x0, x0_real, x0_fake):
        return dmd_loss(student_x0, x0_real, x0_fake)
