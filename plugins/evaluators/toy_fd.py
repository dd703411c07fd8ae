"""``toy-fd``: a Fréchet distance for the toy world, through clean-fid, on features of the digit/colour
classifier trained here (128-d embedding; held-out accuracy 99.7% digit, 100% colour). It is *not* FID:
no Inception network is involved, and numbers are comparable only with other ``toy-fd`` numbers at
the same sample count. Reference statistics: the toy dataset's held-out images, computed once per
evaluator instance (so once per study).

Config: ``reference_samples`` (default 0: as many as the generated samples).
"""
from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl


@dataclass(frozen=True)
class ToyFDConfig:
    reference_samples: int = 0


def build(config: ToyFDConfig, *, device="cpu"):

    from flashbench.method.evaluation import FrechetEvaluator, feature_statistics
    from flashbench_plugins.toy.perceptual import features_of, load_features

    class ToyFD(FrechetEvaluator):
        metric = "fd"
        higher_is_better = False

        def __init__(self):
            self.net = load_features(str(device))
            self.reference: tuple | None = None
            self.extractor_calls = 0

        def features(self, images):
            self.extractor_calls += 1
            return features_of(self.net, images, device)

        def prepare(self, dataset, num_samples, seed=0):
            if self.reference is None:
                n = config.reference_samples or num_samples
                self.reference = feature_statistics(self.features(dataset.reference_images(n, seed)))

    return ToyFD()


@hookimpl
def register_evaluators(register):
    register("toy-fd", build, metric="fd", config=ToyFDConfig, description="Fréchet distance (clean-fid) on toy digit-classifier features")
