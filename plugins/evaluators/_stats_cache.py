"""Reference statistics on disk: the (mu, sigma) of a reference image set, computed once per key and
reused by every later study on the machine.

A key is a flat dict of JSON-serialisable fields (dataset reference id, number of images, seed, image
size, FID mode, feature extractor, ...); its SHA-256 names the files. Each entry is two files in the
cache folder::

    <reference-id slug>-<hash>.npz    mu (D,), sigma (D, D), float64
    <reference-id slug>-<hash>.json   {"key": {...}, "provenance": {...}}: where the numbers come from

Both are written atomically (a temporary file in the same folder, then ``os.replace``); the JSON is
written last and is the commit marker, so a half-written entry is never read. An entry whose JSON
key differs from the one asked for (a hash collision, a hand-edited file) or that cannot be read is
treated as absent and recomputed, with a warning.

Folder: the evaluator's ``cache_dir`` option, else ``$FLASHBENCH_CACHE/<sub>``, else
``~/.cache/flashbench/<sub>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from flashbench.results import atomic_write_with

log = logging.getLogger(__name__)

CACHE_ENV = "FLASHBENCH_CACHE"


def default_cache_dir(sub: str) -> Path:
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "flashbench"
    return base / sub


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")[-60:] or "stats"


def _atomic_write(path: Path, write) -> None:
    """``write(binary file handle)`` into a temporary file next to ``path``, then rename it over ``path``."""
    atomic_write_with(path, write, binary=True)


class StatsCache:
    """Reference (mu, sigma) keyed by a dict of fields, in one folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def paths(self, key: dict) -> tuple[Path, Path]:
        stem = f"{_slug(key.get('dataset', 'stats'))}-{key_hash(key)}"
        return self.root / f"{stem}.npz", self.root / f"{stem}.json"

    def _read(self, key: dict, what: str) -> dict | None:
        """The arrays of the complete entry for ``key``, or None (no entry, another key, unreadable)."""
        npz, sidecar = self.paths(key)
        if not sidecar.is_file() or not npz.is_file():
            return None
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            if meta.get("key") != json.loads(json.dumps(key, default=str)):
                log.warning("reference %s %s were made for another key; recomputing", what, sidecar)
                return None
            with np.load(npz) as data:
                return {name: np.array(data[name], dtype=np.float64) for name in data.files}
        except (OSError, ValueError, KeyError) as exc:
            log.warning("reference %s %s are unreadable (%s); recomputing", what, npz, exc)
            return None

    def load(self, key: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached (mu, sigma) for ``key``, or None when there is no complete, matching entry."""
        data = self._read(key, "statistics")
        if data is None or "mu" not in data or "sigma" not in data:
            return None
        mu, sigma = data["mu"], data["sigma"]
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            log.warning("reference statistics %s have inconsistent shapes; recomputing", self.paths(key)[0])
            return None
        return mu, sigma

    def provenance(self, key: dict) -> dict | None:
        _, sidecar = self.paths(key)
        try:
            return json.loads(sidecar.read_text(encoding="utf-8")).get("provenance")
        except (OSError, ValueError):
            return None

    def save(self, key: dict, mu: np.ndarray, sigma: np.ndarray, provenance: dict) -> Path:
        """Store (mu, sigma) with the key and its provenance; returns the .npz path."""
        self.root.mkdir(parents=True, exist_ok=True)
        npz, sidecar = self.paths(key)
        mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
        _atomic_write(npz, lambda fh: np.savez(fh, mu=mu, sigma=sigma))
        meta = {"key": key, "provenance": provenance}
        text = json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
        _atomic_write(sidecar, lambda fh: fh.write(text.encode("utf-8")))
        return npz

    def load_features(self, key: dict) -> np.ndarray | None:
        """Cached reference feature rows (KID) for ``key``, or None."""
        data = self._read(key, "features")
        feats = None if data is None else data.get("features")
        return feats if feats is not None and feats.ndim == 2 else None

    def save_features(self, key: dict, features: np.ndarray, provenance: dict) -> Path:
        """Store reference feature rows with the key and its provenance; returns the .npz path."""
        self.root.mkdir(parents=True, exist_ok=True)
        npz, sidecar = self.paths(key)
        feats = np.asarray(features, dtype=np.float64)
        _atomic_write(npz, lambda fh: np.savez(fh, features=feats))
        text = json.dumps({"key": key, "provenance": provenance}, indent=2, sort_keys=True, default=str) + "\n"
        _atomic_write(sidecar, lambda fh: fh.write(text.encode("utf-8")))
        return npz


class RunningMoments:
    """Mean and covariance of feature batches without keeping the features: shifted float64 sums
    (the shift is the first batch's mean, which keeps the subtraction well conditioned). Equal to
    ``features.mean(0)`` and ``np.cov(features, rowvar=False)`` over all batches to rounding."""

    def __init__(self):
        self.count = 0
        self._shift = self._sum = self._outer = None

    def add(self, features) -> None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be (batch, dim), got shape {f.shape}")
        if not len(f):
            return
        if self._shift is None:
            self._shift = f.mean(axis=0)
            self._sum = np.zeros_like(self._shift)
            self._outer = np.zeros((f.shape[1], f.shape[1]))
        elif f.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature dimension changed from {self._shift.shape[0]} to {f.shape[1]}")
        d = f - self._shift
        self._sum += d.sum(axis=0)
        self._outer += d.T @ d
        self.count += len(f)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) with the unbiased (n - 1) covariance, as ``np.cov``."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        mean_d = self._sum / self.count
        sigma = (self._outer - self.count * np.outer(mean_d, mean_d)) / (self.count - 1)
        return self._shift + mean_d, (sigma + sigma.T) / 2
