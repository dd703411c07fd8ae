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
    from flashbench_plugins.toy.perceptual import load_features

    from ._toy_evaluators import ToyFD

    return ToyFD(load_features(str(device)), device, reference_samples=config.reference_samples)


@hookimpl
def register_evaluators(register):
    register("toy-fd", build, metric="fd", config=ToyFDConfig, description="Fréchet distance (clean-fid) on toy digit-classifier features")
