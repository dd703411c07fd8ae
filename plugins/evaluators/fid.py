"""``fid``: Fréchet Inception Distance computed as clean-fid computes it (Parmar et al. 2022), lower is
better. Metric name ``fid``.

Modes (``mode``), as clean-fid's:

- ``clean`` (default): clean-fid's PIL bicubic resize to 299x299 on float32 channels, then the
  TF-ported Inception (``inception-2015-12-05.pt``, TorchScript), 2048-d pool features.
- ``legacy_tensorflow``: no resize outside the network; the TorchScript Inception resizes inside, as
  the original TensorFlow FID code did.
- ``legacy_pytorch``: PyTorch bilinear resize to 299x299 and pytorch-fid's Inception port
  (``pt_inception-2015-12-05-6726825d.pth``), as pytorch-fid.

Images: generated and reference images arrive as (B, 3, H, W) in [-1, 1]. Each is quantised to 8
bits the way a saved PNG would be (diffusers' rule: ``round(clamp(x / 2 + 0.5, 0, 1) * 255)``), then
resized by clean-fid's resizer for the mode and turned into a float batch exactly as clean-fid's
folder loader does -- so the number equals clean-fid's on the same images saved as PNG files.

Streaming: the generated images are fed batch by batch (``update``); only the running mean and
covariance of their features are kept (float64 shifted sums, memory O(D^2) whatever the sample
count). ``compute`` is clean-fid's ``frechet_distance``.

Reference statistics: ``prepare(dataset, num_samples, seed)`` computes the mean and covariance of
``reference_samples`` real images (default: as many as the generated samples), streamed in chunks
through ``dataset.reference_batches(n, seed, batch_size)`` when the dataset offers it, else
``dataset.reference_images(n, seed)``. They are computed once per key -- dataset ``reference_id()``,
number of images, seed, image size, mode, extractor -- and cached on disk with their provenance
(:mod:`flashbench_plugins.evaluators._stats_cache`), so a second study on the same protocol loads
them without running Inception on a single reference image.

Weights are never downloaded and never substituted: when the Inception file is not on the machine,
``build`` fails with one line naming the file, its URL and where to put it.

Config:

- ``mode``: "clean" | "legacy_tensorflow" | "legacy_pytorch" (default "clean").
- ``inception_dir``: the folder holding ``inception-2015-12-05.pt`` (for ``legacy_pytorch``:
  ``pt_inception-2015-12-05-6726825d.pth``, also looked for in ``$TORCH_HOME/hub/checkpoints``).
  Default: ``$FLASHBENCH_INCEPTION_DIR``, else clean-fid's own download location (``/tmp``).
- ``cache_dir``: folder of the cached reference statistics. Default ``$FLASHBENCH_CACHE/fid-stats``,
  else ``~/.cache/flashbench/fid-stats``.
- ``batch_size``: images per feature-extractor call (default 50).
- ``reference_samples``: number of real images for the reference statistics (default 0: as many as
  the generated samples).
- ``extractor``: the feature extractor, "inception" (default) or the name of one registered with
  :func:`register_feature_extractor` -- for tests and custom feature spaces (the result is then not
  FID, and its cached statistics are keyed by that name).
"""
from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flashbench import hookimpl
from flashbench.errors import MissingWeightsError, UserError

log = logging.getLogger(__name__)

MODES = ("clean", "legacy_tensorflow", "legacy_pytorch")
INCEPTION_ENV = "FLASHBENCH_INCEPTION_DIR"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
PT_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
STATS_FORMAT = 1  # bump when the preprocessing or the statistics change meaning (invalidates cached entries)


@dataclass(frozen=True)
class FIDConfig:
    mode: str = "clean"
    inception_dir: str = ""
    cache_dir: str = ""
    batch_size: int = 50
    reference_samples: int = 0
    extractor: str = "inception"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.reference_samples < 0:
            raise ValueError(f"reference_samples must be >= 0 (0: as many as the generated samples), got {self.reference_samples}")


# --- feature extractors ---------------------------------------------------------------------------

# name -> factory(config: FIDConfig, device) -> fn; fn takes the float batch clean-fid would feed
# Inception for the mode ((B, 3, 299, 299) in 0..255 for "clean"/"legacy_pytorch", the unresized
# 8-bit values for "legacy_tensorflow") on ``device`` and returns (B, D) features (tensor or array).
FEATURE_EXTRACTORS: dict[str, Callable[..., Callable[[Any], Any]]] = {}


def register_feature_extractor(name: str, factory: Callable[..., Callable[[Any], Any]], *, replace: bool = False) -> None:
    """Make ``extractor = name`` available to the ``fid`` evaluator (tests, custom feature spaces).

    ``factory(config, device)`` is called at build time and returns the extractor function; raise
    :class:`~flashbench.errors.MissingWeightsError` there when its weights are not on the machine."""
    if name in FEATURE_EXTRACTORS and not replace:
        raise ValueError(f"fid feature extractor {name!r} is already registered")
    FEATURE_EXTRACTORS[name] = factory


def inception_dir(config: FIDConfig) -> Path:
    """The configured Inception folder: option, else $FLASHBENCH_INCEPTION_DIR, else clean-fid's own."""
    if config.inception_dir:
        return Path(config.inception_dir).expanduser()
    if os.environ.get(INCEPTION_ENV):
        return Path(os.environ[INCEPTION_ENV]).expanduser()
    return Path("./" if platform.system() == "Windows" else "/tmp")


def inception_weights(config: FIDConfig) -> Path:
    """The Inception weights file for the mode; :class:`MissingWeightsError` (one line) when absent."""
    folders = [inception_dir(config)]
    if config.mode == "legacy_pytorch":
        import torch

        name, url = PT_INCEPTION_FILE, PT_INCEPTION_URL
        folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    else:
        name, url = INCEPTION_FILE, INCEPTION_URL
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise MissingWeightsError(
        f"fid ({config.mode}): Inception weights {name} not found in {' or '.join(str(f) for f in folders)}; "
        f"download {url} into {folders[0]}, or set {INCEPTION_ENV} (or the fid evaluator's inception_dir option) "
        f"to the folder that holds it"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _inception_extractor(config: FIDConfig, device):
    """clean-fid's Inception for the mode, loaded from the local file only (clean-fid's
    ``build_feature_extractor`` with the download switched off)."""
    import torch

    path = inception_weights(config)
    try:
        if config.mode == "legacy_pytorch":
            from unittest import mock

            import cleanfid.inception_pytorch as ip

            def local_state_dict(url, *args, **kwargs):
                return torch.load(path, map_location="cpu", weights_only=True)

            # pytorch-fid's port fetches its weights by URL; hand it the local file instead
            with mock.patch.object(ip, "load_state_dict_from_url", local_state_dict):
                model = ip.InceptionV3(output_blocks=[3], resize_input=False)
            model = model.to(device).eval()

            def fn(x):
                return model(x / 255)[0].squeeze(-1).squeeze(-1)

        else:
            from cleanfid.inception_torchscript import InceptionV3W

            model = InceptionV3W(str(path.parent), download=False, resize_inside=config.mode == "legacy_tensorflow")
            model = model.to(device).eval()

            def fn(x):
                return model(x)

    except Exception as exc:
        raise MissingWeightsError(f"fid ({config.mode}): could not load the Inception weights {path} ({_first_line(exc)})") from None
    fn.weights = str(path)
    return fn


FEATURE_EXTRACTORS["inception"] = _inception_extractor


# --- clean-fid's preprocessing --------------------------------------------------------------------


def to_uint8(images):
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded as diffusers saves images."""
    import numpy as np

    x = (images.detach().float().cpu() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return (x * 255).round().astype(np.uint8)


def preprocess(images, mode: str = "clean"):
    """(B, 3, H, W) in [-1, 1] -> the float batch clean-fid feeds its feature extractor for ``mode``:
    each 8-bit image goes through ``cleanfid.resize.build_resizer(mode)`` and is converted as
    ``cleanfid.utils.ResizeDataset`` converts a resized image (uint8: ToTensor x 255; float32: ToTensor)."""
    import numpy as np
    import torch
    import torchvision
    from cleanfid.resize import build_resizer

    resize = build_resizer(mode)
    to_tensor = torchvision.transforms.ToTensor()
    out = []
    for img in to_uint8(images):
        resized = resize(img)
        if resized.dtype == np.uint8:
            out.append(to_tensor(np.array(resized)) * 255)
        else:
            out.append(to_tensor(resized))
    return torch.stack(out)


# --- the evaluator --------------------------------------------------------------------------------


def _reference_chunks(dataset, n: int, seed: int, batch_size: int):
    """Real images in chunks: ``reference_batches`` when the dataset streams, else ``reference_images``."""
    if callable(getattr(dataset, "reference_batches", None)):
        for batch in dataset.reference_batches(n, seed, batch_size):
            yield getattr(batch, "images", batch)
    else:
        yield from dataset.reference_images(n, seed).split(batch_size)


def _reference_size(dataset, seed: int) -> list[int]:
    """(H, W) of the reference images, read from one image (the extractor is not involved)."""
    first = next(iter(_reference_chunks(dataset, 1, seed, 1)))
    return [int(s) for s in first.shape[-2:]]


def build(config: FIDConfig, *, device="cpu"):
    return build_evaluator(config, device=device, kernel=False)


def build_evaluator(config: FIDConfig, *, device="cpu", kernel: bool = False):
    """The ``fid`` evaluator, or with ``kernel`` the ``kid`` one (same extractor, preprocessing and
    reference images; KID keeps the reference features themselves, cached beside the statistics)."""
    import datetime
    import importlib.metadata

    import numpy as np
    import torch

    import flashbench
    from flashbench.method.evaluation import FrechetEvaluator, KernelEvaluator

    from ._stats_cache import RunningMoments, StatsCache, default_cache_dir

    if config.extractor not in FEATURE_EXTRACTORS:
        raise UserError(f"fid: unknown feature extractor {config.extractor!r}; available: {', '.join(sorted(FEATURE_EXTRACTORS))}")
    extractor = FEATURE_EXTRACTORS[config.extractor](config, device)
    cache = StatsCache(Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir("fid-stats"))

    @torch.no_grad()
    def features(evaluator, images):
        out = []
        for chunk in images.split(config.batch_size):
            evaluator.extractor_calls += 1
            feats = extractor(preprocess(chunk, config.mode).to(device))
            if isinstance(feats, torch.Tensor):
                feats = feats.detach().to("cpu", torch.float64).numpy()
            out.append(np.asarray(feats, dtype=np.float64).reshape(len(chunk), -1))
        return np.concatenate(out)

    def reference_key(dataset, num_samples, seed) -> dict:
        n = config.reference_samples or num_samples
        key = {
            "dataset": str(dataset.reference_id()),
            "num_samples": int(n),
            "seed": int(seed),
            "image_size": _reference_size(dataset, seed),
            "mode": config.mode,
            "extractor": config.extractor,
            "format": STATS_FORMAT,
        }
        if kernel:
            key["statistic"] = "features"  # KID needs the rows, not (mu, sigma): a separate cache entry
        return key

    def provenance(key, count, dim) -> dict:
        return {
            "dataset": key["dataset"],
            "requested_images": key["num_samples"],
            "images": count,
            "seed": key["seed"],
            "image_size": key["image_size"],
            "mode": config.mode,
            "extractor": config.extractor,
            "weights": getattr(extractor, "weights", None),
            "feature_dim": dim,
            "clean_fid_version": importlib.metadata.version("clean-fid"),
            "flashbench_version": flashbench.__version__,
            "torch_version": torch.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    class _Inception:
        """What FID and KID share: the extractor, the cache, the reference's key and provenance."""

        higher_is_better = False

        def __init__(self):
            self.config = config
            self.cache = cache
            self.reference = self.reference_features = None
            self.reference_key: dict | None = None
            self.reference_provenance: dict | None = None
            self.extractor_calls = 0
            self.reset()

        def features(self, images):
            return features(self, images)

    class FID(_Inception, FrechetEvaluator):
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
            from flashbench.method.evaluation import frechet

            if self.reference is None:
                raise RuntimeError("fid: prepare() must compute the reference statistics first")
            if self._moments.count < 2:
                raise ValueError(f"fid: needs at least 2 generated images, got {self._moments.count}")
            mu, sigma = self._moments.statistics()
            return frechet(mu, sigma, *self.reference)

        def prepare(self, dataset, num_samples, seed=0):
            key = reference_key(dataset, num_samples, seed)
            if key == self.reference_key:
                return
            stats = cache.load(key)
            if stats is None:
                moments = RunningMoments()
                for chunk in _reference_chunks(dataset, key["num_samples"], seed, config.batch_size):
                    moments.add(self.features(chunk))
                stats = moments.statistics()
                path = cache.save(key, *stats, provenance(key, moments.count, int(stats[0].shape[0])))
                log.info("fid: reference statistics of %d images of %s cached in %s", moments.count, key["dataset"], path)
            else:
                log.info("fid: reference statistics of %s loaded from %s", key["dataset"], cache.paths(key)[0])
            self.reference, self.reference_key = stats, key
            self.reference_provenance = cache.provenance(key)

    class KID(_Inception, KernelEvaluator):
        metric = "kid"

        def prepare(self, dataset, num_samples, seed=0):
            key = reference_key(dataset, num_samples, seed)
            if key == self.reference_key:
                return
            feats = cache.load_features(key)
            if feats is None:
                feats = np.concatenate([self.features(c) for c in _reference_chunks(dataset, key["num_samples"], seed, config.batch_size)])
                path = cache.save_features(key, feats, provenance(key, len(feats), int(feats.shape[1])))
                log.info("kid: reference features of %d images of %s cached in %s", len(feats), key["dataset"], path)
            self.reference_features, self.reference_key = feats, key
            self.reference_provenance = cache.provenance(key)

    return KID() if kernel else FID()


@hookimpl
def register_evaluators(register):
    register("fid", build, metric="fid", config=FIDConfig, description="FID as clean-fid computes it (clean / legacy modes), reference statistics cached on disk")  # noqa: E501
