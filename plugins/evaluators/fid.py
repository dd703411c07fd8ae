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
- ``extractor``: the feature space, "inception" (the only one built in; the default). It keys the cached
  statistics. A custom feature space (the result is then not FID) is an evaluator of its own, registered
  through ``register_evaluators`` like any other: its factory calls :func:`build_evaluator` with its
  extractor function and a config whose ``extractor`` names that feature space.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl
from flashbench.errors import MissingWeightsError, UserError

from ._fid_inputs import STATS_FORMAT, preprocess, to_uint8  # noqa: F401  (the plugin's public names; defined beside the classes that use them)

MODES = ("clean", "legacy_tensorflow", "legacy_pytorch")
INCEPTION_ENV = "FLASHBENCH_INCEPTION_DIR"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
PT_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
INCEPTION_EXTRACTOR = "inception"  # the built-in feature space (``extractor`` option)


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


# --- the Inception network ---------------------------------------------------------------------


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


# --- the evaluator --------------------------------------------------------------------------------


def build(config: FIDConfig, *, device="cpu"):
    return build_evaluator(config, device=device, kernel=False)


def build_evaluator(config: FIDConfig, *, device="cpu", kernel: bool = False, extractor=None):
    """The ``fid`` evaluator, or with ``kernel`` the ``kid`` one (same extractor, preprocessing and
    reference images; KID keeps the reference features themselves, cached beside the statistics).

    ``extractor``: a feature function in place of Inception (a custom feature space, see the ``extractor``
    option): it takes the float batch clean-fid would feed Inception for the mode ((B, 3, 299, 299) in 0..255
    for "clean"/"legacy_pytorch", the unresized 8-bit values for "legacy_tensorflow") on ``device`` and returns
    (B, D) features (tensor or array); ``config.extractor`` must then name it, not "inception"."""
    from ._fid import FID, KID
    from ._stats_cache import StatsCache, default_cache_dir

    if extractor is None:
        if config.extractor != INCEPTION_EXTRACTOR:
            raise UserError(f"fid: unknown feature extractor {config.extractor!r}; available: {INCEPTION_EXTRACTOR}")
        extractor = _inception_extractor(config, device)
    elif config.extractor == INCEPTION_EXTRACTOR:
        raise ValueError(
            f"fid: a custom feature extractor needs its own name in the config's extractor field (not {INCEPTION_EXTRACTOR!r}), "
            "which keys its cached reference statistics"
        )
    cache = StatsCache(Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir("fid-stats"))
    return (KID if kernel else FID)(config, extractor, cache, device)


@hookimpl
def register_evaluators(register):
    register(
        "fid", build, metric="fid", config=FIDConfig, description="FID as clean-fid computes it (clean / legacy modes), reference statistics cached on disk"
    )  # noqa: E501
