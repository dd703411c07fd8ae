"""The ``toy-digits`` dataset's class (see :mod:`flashbench_plugins.datasets.toy_digits`). Imported when the
dataset is built: it needs torch."""

from __future__ import annotations

import numpy as np
import torch

from flashbench.method.data import Batch, Dataset
from flashbench_plugins.toy import data


class ToyDigits(Dataset):
    """Training batches from the train split shifted by up to ``shift`` pixels; the held-out split unshifted."""

    name = "toy-digits"

    def __init__(self, shift: int = 1):
        self.train = data.ColouredDigits("train", shift=shift)
        self.heldout = data.ColouredDigits("heldout", shift=0)

    def train_batch(self, rng, batch_size):
        images, prompts, _, _ = self.train.batch(rng, batch_size)
        return Batch(torch.from_numpy(images), prompts)

    def eval_prompts(self, n, seed=0):
        prompts = data.all_prompts()
        order = np.random.default_rng(seed).permutation(len(prompts))
        return [prompts[order[i % len(prompts)]] for i in range(n)]

    def reference_images(self, n, seed=0):
        images, _ = self.heldout.fixed(n, seed)
        return torch.from_numpy(images)

    def reference_id(self):
        return "toy-digits-heldout"
