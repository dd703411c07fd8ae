"""Item 4: evaluation cost.

- Feature extraction: the ``fid`` evaluator's ``features`` (8-bit quantisation, clean-fid's PIL bicubic
  resize to 299, the float conversion clean-fid applies, the extractor) vs the bare extractor forward on the
  already-preprocessed batch; 512 px images, as SD1.5 generates. The Inception weights cannot be downloaded
  here, so a randomly initialised torchvision Inception-v3 of the same architecture (same cost) stands in for
  them, handed to the ``fid`` evaluator as the feature space ``bench-inception-v3``. The same for ``toy-fd`` and its classifier.
- Reference statistics: the first ``prepare`` computes them (every reference image through the extractor),
  a second evaluator on the same protocol -- a second study -- loads them from the disk cache. Goal (issue #6):
  the second call >= 50x faster; the ratio grows with the number of reference images (here 50; 5,000-30,000 in
  the paper's protocols).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from . import _bench

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.benchmark(group="evaluation", timer=_bench.TIMER)]

EXTRACTOR = "bench-inception-v3"


@pytest.fixture(scope="module")
def inception():
    """A stand-in for clean-fid's Inception: torchvision's Inception-v3 (2048-d pool features), random weights."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True).eval().to(_bench.DEVICE)
    net.fc = torch.nn.Identity()

    @torch.no_grad()
    def extract(x):  # x: (B, 3, 299, 299) in 0..255, as clean-fid feeds its extractor
        return net(x / 127.5 - 1)

    return extract


def build_fid(tmp_path, extractor, **options):
    """The ``fid`` evaluator on ``extractor``'s features (a custom feature space, as fid.build_evaluator takes one)."""
    from flashbench_plugins.evaluators import fid

    config = fid.FIDConfig(extractor=EXTRACTOR, cache_dir=str(tmp_path), **options)
    return fid.build_evaluator(config, device=_bench.DEVICE, extractor=extractor)


def images(n, size, seed=0):
    return torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("what", ["features", "bare-extractor"])
def test_fid_features(benchmark, inception, tmp_path, what):
    from flashbench_plugins.evaluators.fid import preprocess

    evaluator = build_fid(tmp_path, inception)
    batch = images(_bench.size(benchmark, 2, 8), 512)
    if what == "features":
        feats = _bench.measure(benchmark, lambda: evaluator.features(batch), rounds=_bench.size(benchmark, 1, 5))
    else:
        ready = preprocess(batch, "clean").to(_bench.DEVICE)
        feats = _bench.measure(benchmark, lambda: inception(ready), rounds=_bench.size(benchmark, 1, 5))
        feats = feats.cpu().double().numpy()
    np.testing.assert_allclose(np.asarray(feats), evaluator.features(batch), rtol=1e-4, atol=1e-6)  # the same features either way
    _bench.tag(benchmark, f"evaluation/fid-{what}", images=len(batch), image_size=512)


@pytest.mark.parametrize("what", ["features", "bare-extractor"])
def test_toy_fd_features(benchmark, what):
    from flashbench.plugins import collect_components

    evaluator = collect_components().get("evaluator", "toy-fd").build({}, device=_bench.DEVICE)
    batch = images(_bench.size(benchmark, 16, 256), 16).to(_bench.DEVICE)  # one chunk of the evaluator's (256), one bare call
    if what == "features":
        feats = _bench.measure(benchmark, lambda: evaluator.features(batch), rounds=_bench.size(benchmark, 1, 9))
    else:
        with torch.no_grad():
            feats = _bench.measure(benchmark, lambda: evaluator.net.features(batch), rounds=_bench.size(benchmark, 1, 9))
        feats = feats.cpu().double().numpy()
    np.testing.assert_allclose(feats, evaluator.features(batch), rtol=1e-5, atol=1e-6)
    _bench.tag(benchmark, f"evaluation/toy-fd-{what}", images=len(batch), image_size=16)


@pytest.mark.parametrize("what", ["computed", "cached"])
def test_fid_reference_statistics(benchmark, inception, tmp_path, what):
    """``computed``: an empty cache each round; ``cached``: a new evaluator each round (a new study), same cache."""
    import shutil

    from flashbench.plugins import collect_components

    dataset = collect_components().get("dataset", "toy-digits").build({})
    n = _bench.size(benchmark, 4, 50)
    cache = tmp_path / "fid-stats"
    evaluators = []

    def fresh():
        if what == "computed":
            shutil.rmtree(cache, ignore_errors=True)
        evaluators.append(build_fid(cache, inception))
        return (evaluators[-1],), {}

    if what == "cached":
        first = build_fid(cache, inception)
        first.prepare(dataset, n)
    _bench.measure(benchmark, lambda ev: ev.prepare(dataset, n), setup=fresh, rounds=_bench.size(benchmark, 1, 3 if what == "computed" else 9))
    last = evaluators[-1]
    assert last.reference is not None and last.reference[0].shape == (2048,)
    if what == "cached":
        assert last.extractor_calls == 0  # no reference image went through the extractor
        np.testing.assert_array_equal(last.reference[0], first.reference[0])
        np.testing.assert_array_equal(last.reference[1], first.reference[1])
    else:
        assert last.extractor_calls == -(-n // last.config.batch_size)
    _bench.tag(benchmark, f"evaluation/fid-reference-{what}", reference_images=n)
