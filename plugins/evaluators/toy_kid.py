"""``toy-kid``: the KID construction (unbiased squared MMD, cubic polynomial kernel; see the ``kid``
evaluator) on the toy digit/colour classifier's 128-d features, the ones ``toy-fd`` uses; lower is
better. Metric name ``kid``. Unlike ``toy-fd`` it is unbiased at the toy studies' 600 samples. Not KID:
no Inception network is involved. Reference: the toy dataset's held-out images, computed once per
evaluator instance.

Config: ``reference_samples`` (default 0: as many as the generated samples).
"""
from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl


@dataclass(frozen=True)
class ToyKIDConfig:
    reference_samples: int = 0

    def __post_init__(self):
        if self.reference_samples < 0:
            raise ValueError(f"reference_samples must be >= 0 (0: as many as the generated samples), got {self.reference_samples}")


def build(config: ToyKIDConfig, *, device="cpu"):

    from flashbench.method.evaluation import KernelEvaluator
    from flashbench_plugins.toy.perceptual import features_of, load_features

    class ToyKID(KernelEvaluator):
        metric = "kid"
        higher_is_better = False

        def __init__(self):
            self.net = load_features(str(device))
            self.reference_features = None
            self.reset()

        def features(self, images):
            return features_of(self.net, images, device)

        def prepare(self, dataset, num_samples, seed=0):
            if self.reference_features is None:
                n = config.reference_samples or num_samples
                self.reference_features = self.features(dataset.reference_images(n, seed))

    return ToyKID()


@hookimpl
def register_evaluators(register):
    register("toy-kid", build, metric="kid", config=ToyKIDConfig, description="KID construction on the toy digit-classifier features")
