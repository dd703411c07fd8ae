"""The ``image-captions`` dataset's class (see :mod:`flashbench_plugins.datasets.image_captions`). Imported
when the dataset is built: it needs torch. ``build`` reads the caption file and splits the records."""

from __future__ import annotations

from ._degradations import Batcher, Record, RecordDataset


class ImageCaptions(RecordDataset):
    """Training draws from ``train``; evaluation reads ``held`` (the held-out records, or ``train`` when
    nothing is held out). ``num_heldout`` counts the held-out files (0 when evaluation reads ``train``)."""

    name = "image-captions"

    def __init__(self, batcher: Batcher, reference_key: str, train: list[Record], held: list[Record], *, num_heldout: int):
        super().__init__(batcher, reference_key)
        self._train, self._held = train, held
        self.num_train, self.num_heldout = len(train), num_heldout

    def train_records(self, rng, n):
        return [self._train[i] for i in rng.integers(len(self._train), size=n)]

    def eval_pool(self, n):
        return self._held
