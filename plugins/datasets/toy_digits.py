"""``toy-digits``: coloured handwritten digits from scikit-learn, with prompts "a <colour> digit <name>".

Training batches come from the train split (4 of every 5 digits) with random 1-px shifts; evaluation
prompts cycle the 60 prompts in a seeded order; reference images are the held-out split (every 5th
digit) painted in seeded colours. See :mod:`flashbench_plugins.toy.data`.

Config: ``shift`` (max random shift in pixels, default 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl


@dataclass(frozen=True)
class ToyDigitsDatasetConfig:
    shift: int = 1


def build(config: ToyDigitsDatasetConfig):
    import numpy as np
    import torch

    from flashbench.method.data import Batch, Dataset
    from flashbench_plugins.toy import data

    class ToyDigits(Dataset):
        name = "toy-digits"

        def __init__(self):
            self.train = data.ColouredDigits("train", shift=config.shift)
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

    return ToyDigits()


@hookimpl
def register_datasets(register):
    register("toy-digits", build, config=ToyDigitsDatasetConfig, description="coloured sklearn digits, 16x16, 60 prompts")
