"""The ``fid`` and ``kid`` evaluators' classes (see :mod:`flashbench_plugins.evaluators.fid` for the protocol,
the modes and the cache). Imported when one is built: it needs torch and numpy. The feature extractor and
the reference-statistics cache are made by ``build_evaluator`` and handed in.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging

import numpy as np
import torch

import flashbench
from flashbench.method.evaluation import FrechetEvaluator, KernelEvaluator, frechet

from ._fid_inputs import STATS_FORMAT, preprocess, reference_chunks, reference_size
from ._stats_cache import RunningMoments

log = logging.getLogger(__name__.rpartition(".")[0] + ".fid")  # records under the plugin's name, which is what users filter on


class InceptionEvaluator:
    """What FID and KID share: the extractor, the cache, the reference's key and provenance.

    ``extractor`` takes the float batch clean-fid would feed Inception for ``config.mode`` on ``device`` and
    returns (B, D) features (tensor or array); ``config.extractor`` names its feature space in the cache key."""

    higher_is_better = False
    statistic: str | None = None  # a cache entry's kind beside (mu, sigma): KID keeps the feature rows

    def __init__(self, config, extractor, cache, device="cpu"):
        self.config = config
        self.extractor, self.device = extractor, device
        self.cache = cache
        self.reference = self.reference_features = None
        self.reference_key: dict | None = None
        self.reference_provenance: dict | None = None
        self.extractor_calls = 0
        self.reset()

    @torch.no_grad()
    def features(self, images):
        out = []
        for chunk in images.split(self.config.batch_size):
            self.extractor_calls += 1
            feats = self.extractor(preprocess(chunk, self.config.mode).to(self.device))
            if isinstance(feats, torch.Tensor):
                feats = feats.detach().to("cpu", torch.float64).numpy()
            out.append(np.asarray(feats, dtype=np.float64).reshape(len(chunk), -1))
        return np.concatenate(out)

    def key_for(self, dataset, num_samples, seed) -> dict:
        """The cache key of the reference for this protocol."""
        n = self.config.reference_samples or num_samples
        key = {
            "dataset": str(dataset.reference_id()),
            "num_samples": int(n),
            "seed": int(seed),
            "image_size": reference_size(dataset, seed),
            "mode": self.config.mode,
            "extractor": self.config.extractor,
            "format": STATS_FORMAT,
        }
        if self.statistic:
            key["statistic"] = self.statistic  # KID needs the rows, not (mu, sigma): a separate cache entry
        return key

    def provenance(self, key, count, dim) -> dict:
        return {
            "dataset": key["dataset"],
            "requested_images": key["num_samples"],
            "images": count,
            "seed": key["seed"],
            "image_size": key["image_size"],
            "mode": self.config.mode,
            "extractor": self.config.extractor,
            "weights": getattr(self.extractor, "weights", None),
            "feature_dim": dim,
            "clean_fid_version": importlib.metadata.version("clean-fid"),
            "flashbench_version": flashbench.__version__,
            "torch_version": torch.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }


class FID(InceptionEvaluator, FrechetEvaluator):
    metric = "fid"

    # streamed generated side: running moments for the value, the feature rows (float32) for the
    # bootstrap -- never the images
    def reset(self):
        self._moments = RunningMoments()
        self._feats = []

    def update(self, images, prompts, *, reference=None):
        feats = self.features(images)
        self._moments.add(feats)
        self._feats.append(feats.astype(np.float32))

    def compute(self):
        if self.reference is None:
            raise RuntimeError("fid: prepare() must compute the reference statistics first")
        if self._moments.count < 2:
            raise ValueError(f"fid: needs at least 2 generated images, got {self._moments.count}")
        mu, sigma = self._moments.statistics()
        return frechet(mu, sigma, *self.reference)

    def prepare(self, dataset, num_samples, seed=0):
        key = self.key_for(dataset, num_samples, seed)
        if key == self.reference_key:
            return
        stats = self.cache.load(key)
        if stats is None:
            moments = RunningMoments()
            for chunk in reference_chunks(dataset, key["num_samples"], seed, self.config.batch_size):
                moments.add(self.features(chunk))
            stats = moments.statistics()
            path = self.cache.save(key, *stats, self.provenance(key, moments.count, int(stats[0].shape[0])))
            log.info("fid: reference statistics of %d images of %s cached in %s", moments.count, key["dataset"], path)
        else:
            log.info("fid: reference statistics of %s loaded from %s", key["dataset"], self.cache.paths(key)[0])
        self.reference, self.reference_key = stats, key
        self.reference_provenance = self.cache.provenance(key)


class KID(InceptionEvaluator, KernelEvaluator):
    metric = "kid"
    statistic = "features"

    def prepare(self, dataset, num_samples, seed=0):
        key = self.key_for(dataset, num_samples, seed)
        if key == self.reference_key:
            return
        feats = self.cache.load_features(key)
        if feats is None:
            chunks = reference_chunks(dataset, key["num_samples"], seed, self.config.batch_size)
            feats = np.concatenate([self.features(c) for c in chunks])
            path = self.cache.save_features(key, feats, self.provenance(key, len(feats), int(feats.shape[1])))
            log.info("kid: reference features of %d images of %s cached in %s", len(feats), key["dataset"], path)
        self.reference_features, self.reference_key = feats, key
        self.reference_provenance = self.cache.provenance(key)
