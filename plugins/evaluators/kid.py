"""``kid``: Kernel Inception Distance (Binkowski et al. 2018) on the same Inception features, modes and
reference images as ``fid`` (see :mod:`flashbench_plugins.evaluators.fid`), lower is better. Metric
name ``kid``.

KID is the unbiased squared MMD between generated and reference features with the cubic polynomial
kernel ``k(a, b) = (a.b / d + 1)^3``. Unlike FID it is unbiased at any sample count, so it is the fair
Fréchet companion when a protocol evaluates fewer than the 5,000+ images FID needs
(:class:`flashbench.method.evaluation.KernelEvaluator`). It is computed over all pairs (no random
subsets): equal to clean-fid's ``kernel_distance`` when both sets have the same size, at most 1,000,
and its lower-variance full-data version beyond.

Memory: the n x n generated Gram matrix is kept for the bootstrap (5,000 images: 200 MB).
The reference features (not just their statistics) are cached on disk beside ``fid``'s statistics.

Config: the ``fid`` evaluator's (``mode``, ``inception_dir``, ``cache_dir``, ``batch_size``,
``reference_samples``, ``extractor``); weights are never downloaded (one line says where to put them).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from .fid import FIDConfig


@dataclass(frozen=True)
class KIDConfig(FIDConfig):
    pass


def build(config: KIDConfig, *, device="cpu"):
    from .fid import build_evaluator

    return build_evaluator(config, device=device, kernel=True)


@hookimpl
def register_evaluators(register):
    register("kid", build, metric="kid", config=KIDConfig, description="KID (unbiased polynomial-kernel MMD) on clean-fid's Inception features")
