"""What the ``fid`` and ``kid`` evaluators feed their feature extractor: clean-fid's preprocessing of generated
images, and real images in chunks from a dataset. No torch, numpy or clean-fid import at module level (they
are imported when called), so the plugin module :mod:`flashbench_plugins.evaluators.fid` imports this cheaply.
"""

from __future__ import annotations

STATS_FORMAT = 1  # bump when the preprocessing or the statistics change meaning (invalidates cached entries)


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


def reference_chunks(dataset, n: int, seed: int, batch_size: int):
    """Real images in chunks: ``reference_batches`` when the dataset streams, else ``reference_images``."""
    if callable(getattr(dataset, "reference_batches", None)):
        for batch in dataset.reference_batches(n, seed, batch_size):
            yield getattr(batch, "images", batch)
    else:
        yield from dataset.reference_images(n, seed).split(batch_size)


def reference_size(dataset, seed: int) -> list[int]:
    """(H, W) of the reference images, read from one image (the extractor is not involved)."""
    first = next(iter(reference_chunks(dataset, 1, seed, 1)))
    return [int(s) for s in first.shape[-2:]]
