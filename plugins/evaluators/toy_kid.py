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
    from flashbench_plugins.toy.perceptual import load_features

    from ._toy_evaluators import ToyKID

    return ToyKID(load_features(str(device)), device, reference_samples=config.reference_samples)


@hookimpl
def register_evaluators(register):
    register("toy-kid", build, metric="kid", config=ToyKIDConfig, description="KID construction on the toy digit-classifier features")
