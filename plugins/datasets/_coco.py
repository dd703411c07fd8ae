"""The COCO prompt sets' class (see :mod:`flashbench_plugins.datasets.coco` for the protocols). Imported when
one is built: it needs torch. ``build`` parses the protocol's selection (:class:`~.coco.CocoSelection`, no torch)
and hands it in."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from flashbench.errors import UserError
from flashbench.method.data import Dataset

from ._degradations import resize_and_crop


class CocoPrompts(Dataset):
    """Evaluation prompts and reference images of one COCO protocol; ``workers`` threads decode the images."""

    def __init__(self, selection, workers: int):
        self._sel, self.workers = selection, workers
        self.name = selection.protocol.name
        self.protocol_spec, self.root = selection.protocol, selection.root
        self.num_prompts, self.num_reference, self.resolution = selection.num_prompts, selection.num_reference, selection.config.resolution

    def _load(self, path: Path) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as img:
                tensor, _ = resize_and_crop(img, self.resolution, None)
        except Exception as exc:  # PIL raises many types for a corrupt or truncated file
            raise UserError(f"{self.name}: cannot read image {path}: {exc}".splitlines()[0]) from None
        return tensor

    def train_batch(self, rng, batch_size):
        raise UserError(
            f"{self.name} is an evaluation prompt set (COCO {self.protocol_spec.split} captions), not training data: "
            "train on image-captions or webdataset and use it as the study's eval prompts"
        )

    def selection(self) -> list[tuple[int, int, str]]:
        """The selected (image id, annotation id, caption) triples, in selection order."""
        return self._sel.selection()

    def eval_prompts(self, n, seed=0):
        """The first ``n`` selected captions; ``seed`` is ignored (the protocol is fixed)."""
        if n > self.num_prompts:
            raise UserError(
                f"{self.name}: {n} evaluation prompts asked for, the protocol selects {self.num_prompts} "
                f"(one caption per image); ask for at most {self.num_prompts}"
            )
        return [c for _, _, c in self._sel.selection()[: max(0, n)]]

    def reference_files(self, n=None) -> list[Path]:
        return self._sel.reference_files(n)

    def reference_batches(self, n, seed=0, batch_size=64):
        """The first ``min(n, set size)`` reference images, ``batch_size`` at a time, (B, 3, R, R) in
        [-1, 1]; ``seed`` is ignored. At most two batches are decoded or in flight at once."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        paths = self._sel.reference_files(n)
        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        if self.workers <= 1:
            for chunk in chunks:
                yield torch.stack([self._load(p) for p in chunk])
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="coco-decode")
        pending: list = []
        try:
            for k, chunk in enumerate(chunks):
                if k == 0:
                    pending = [pool.submit(self._load, p) for p in chunk]
                ahead = [pool.submit(self._load, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
                current, pending = pending, ahead
                yield torch.stack([f.result() for f in current])
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def reference_images(self, n, seed=0):
        """The first ``min(n, set size)`` reference images as one tensor; ``seed`` is ignored."""
        batches = list(self.reference_batches(n, seed, batch_size=64))
        return torch.cat(batches) if batches else torch.zeros((0, 3, self.resolution, self.resolution))

    def reference_id(self):
        return self._sel.reference_id()

    def protocol(self) -> dict:
        """A JSON-serialisable description of the selection, to store with the results."""
        return self._sel.protocol_dict()
