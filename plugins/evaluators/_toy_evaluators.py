"""The toy world's evaluator classes, behind ``toy-fd``, ``toy-kid``, ``toy-lpips`` and ``toy-clip-score`` (see
those plugin modules for what each measures). Imported when one of them is built: it needs torch. The
trained networks are loaded by the plugins' ``build`` and handed in; open_clip is imported only by
``toy-clip-score``'s ``build``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flashbench.method.evaluation import FrechetEvaluator, KernelEvaluator, MeanEvaluator, feature_statistics
from flashbench_plugins.toy.perceptual import features_of


class ToyFD(FrechetEvaluator):
    """Fréchet distance on the digit classifier's features ``net``; reference statistics computed once."""

    metric = "fd"
    higher_is_better = False

    def __init__(self, net, device="cpu", *, reference_samples: int = 0):
        self.net, self.device, self.reference_samples = net, device, reference_samples
        self.reference: tuple | None = None
        self.extractor_calls = 0

    def features(self, images):
        self.extractor_calls += 1
        return features_of(self.net, images, self.device)

    def prepare(self, dataset, num_samples, seed=0):
        if self.reference is None:
            n = self.reference_samples or num_samples
            self.reference = feature_statistics(self.features(dataset.reference_images(n, seed)))


class ToyKID(KernelEvaluator):
    """The KID construction on the digit classifier's features ``net``; reference features computed once."""

    metric = "kid"
    higher_is_better = False

    def __init__(self, net, device="cpu", *, reference_samples: int = 0):
        self.net, self.device, self.reference_samples = net, device, reference_samples
        self.reference_features = None
        self.reset()

    def features(self, images):
        return features_of(self.net, images, self.device)

    def prepare(self, dataset, num_samples, seed=0):
        if self.reference_features is None:
            n = self.reference_samples or num_samples
            self.reference_features = self.features(dataset.reference_images(n, seed))


class ToyLPIPS(MeanEvaluator):
    """``distance(images, reference)`` -> (B,) per sample, to the teacher's many-step samples."""

    metric = "lpips_to_teacher"
    higher_is_better = False
    needs_teacher_reference = True

    def __init__(self, distance):
        self.distance = distance

    @torch.no_grad()
    def update(self, images, prompts, *, reference=None):
        if reference is None:
            raise ValueError("toy-lpips needs the teacher's many-step samples as reference")
        self.add(self.distance(images.float().clamp(-1, 1), reference.float().clamp(-1, 1)))


class ToyClipScore(MeanEvaluator):
    """Mean image-prompt cosine similarity under the toy CLIP ``model`` and its open_clip ``tokenizer``."""

    metric = "clip_score"
    higher_is_better = True

    def __init__(self, model, tokenizer, device="cpu"):
        self.model, self.tokenizer, self.device = model, tokenizer, device

    @torch.no_grad()
    def update(self, images, prompts, *, reference=None):
        img = F.normalize(self.model.encode_image(images.to(self.device).float().clamp(-1, 1)), dim=-1)
        txt = F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)), dim=-1)
        self.add((img * txt).sum(-1))
