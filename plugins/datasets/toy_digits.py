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
    from ._toy_digits import ToyDigits

    return ToyDigits(shift=config.shift)


@hookimpl
def register_datasets(register):
    register("toy-digits", build, config=ToyDigitsDatasetConfig, description="coloured sklearn digits, 16x16, 60 prompts")
