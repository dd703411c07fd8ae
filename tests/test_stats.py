"""Intervals and verdicts (flashbench.stats): checked on synthetic data whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flashbench import stats
from flashbench.stats import Difference, paired_difference, verdict


def _interval_of_mean(x: np.ndarray, seed: int) -> tuple[float, float]:
    reps = stats.replicates(lambda c: c @ x / len(x), len(x), 1000, seed)
    return stats.centred_interval(float(x.mean()), reps)


def test_bootstrap_interval_of_a_mean_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    repetitions, covered = 400, 0
    for r in range(repetitions):
        x = rng.exponential(1.0, size=200)  # skewed, truth 1.0
        lo, hi = _interval_of_mean(x, seed=r)
        covered += lo <= 1.0 <= hi
    assert 0.92 <= covered / repetitions <= 0.98, covered / repetitions


def test_paired_interval_is_narrower_than_the_unpaired_one_on_correlated_samples():
    rng = np.random.default_rng(1)
    n = 400
    shared = rng.normal(size=n)  # same prompts and noise: most of each sample's score is shared
    a = shared + 0.3 * rng.normal(size=n) + 0.1
    b = shared + 0.3 * rng.normal(size=n)
    ra = stats.replicates(lambda c: c @ a / n, n, 1000, seed=7)
    rb = stats.replicates(lambda c: c @ b / n, n, 1000, seed=7)  # the same resampled indices: paired
    rb_other = stats.replicates(lambda c: c @ b / n, n, 1000, seed=8)  # other indices: unpaired
    d = float(a.mean() - b.mean())
    paired = stats.centred_interval(d, ra - rb)
    unpaired = stats.centred_interval(d, ra - rb_other)
    assert paired[1] - paired[0] < 0.5 * (unpaired[1] - unpaired[0])
    assert paired[0] > 0  # the 0.1 shift is found when paired ...
    assert unpaired[0] < 0 < unpaired[1]  # ... and lost in the shared spread when not


def test_resamples_depend_on_seed_and_n_only():
    a = np.concatenate(list(stats.resample_counts(50, 250, seed=3)))
    b = np.concatenate(list(stats.resample_counts(50, 250, seed=3)))
    assert a.shape == (250, 50) and (a.sum(1) == 50).all()
    assert (a == b).all()
    assert not (a == np.concatenate(list(stats.resample_counts(50, 250, seed=4)))).all()


def test_frechet_replicates_equal_a_brute_force_bootstrap_through_clean_fid():
    from cleanfid.fid import frechet_distance

    rng = np.random.default_rng(2)
    gen = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
    ref = rng.normal(size=(80, 5)) + 0.5
    mu_r, sigma_r = ref.mean(0), np.cov(ref, rowvar=False)
    fast = stats.replicates(lambda c: stats.frechet_replicates(gen, mu_r, sigma_r, c), len(gen), 200, seed=5)
    brute = []
    for counts in stats.resample_counts(len(gen), 200, seed=5):
        for row in counts:
            sample = np.repeat(gen, row, axis=0)  # the resample, rows repeated as drawn
            brute.append(frechet_distance(sample.mean(0), np.cov(sample, rowvar=False), mu_r, sigma_r))
    np.testing.assert_allclose(fast, brute, rtol=1e-7, atol=1e-9)
    value = frechet_distance(gen.mean(0), np.cov(gen, rowvar=False), mu_r, sigma_r)
    assert stats.centred_interval(value, fast) == pytest.approx(stats.centred_interval(value, np.array(brute)), rel=1e-7)


def test_centred_interval_corrects_the_upward_shift_of_frechet_replicates():
    """Resampling with duplicates inflates a Fréchet distance: the replicates sit above the value, and the
    basic interval (not the percentile one) still contains it."""
    rng = np.random.default_rng(3)
    gen, ref = rng.normal(size=(150, 20)), rng.normal(size=(150, 20))
    mu_r, sigma_r = ref.mean(0), np.cov(ref, rowvar=False)
    value = float(stats.frechet_replicates(gen, mu_r, sigma_r, np.ones((1, 150)))[0])
    reps = stats.replicates(lambda c: stats.frechet_replicates(gen, mu_r, sigma_r, c), 150, 500, seed=0)
    assert np.quantile(reps, 0.025) > value  # the percentile interval would miss the value
    lo, hi = stats.centred_interval(value, reps)
    assert lo < value < hi
    assert hi - lo == pytest.approx(np.quantile(reps, 0.975) - np.quantile(reps, 0.025))


def test_kid_equals_clean_fid_kernel_distance_at_equal_sizes():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(4)
    gen, ref = rng.normal(size=(120, 16)), rng.normal(size=(120, 16)) + 0.2
    assert stats.kid(gen, ref) == pytest.approx(float(kernel_distance(gen, ref)), rel=1e-10)
    # a resample's value equals the unbiased estimator on the resampled rows taken as distinct samples
    counts = next(stats.resample_counts(120, 1, seed=1))
    brute = stats.kid(np.repeat(gen, counts[0], axis=0), ref)
    assert stats.kid_replicates(gen, ref, counts)[0] == pytest.approx(brute, rel=1e-10)


def test_evaluator_bases_replicate_their_own_value_at_identity_counts():
    import torch

    from flashbench.method.evaluation import FrechetEvaluator, KernelEvaluator, MeanEvaluator

    class Mean(MeanEvaluator):
        def update(self, images, prompts, *, reference=None):
            self.add(images.flatten(1).mean(1))

    class Frechet(FrechetEvaluator):
        def features(self, images):
            return images.flatten(1).double().numpy()

    class Kernel(KernelEvaluator):
        def features(self, images):
            return images.flatten(1).double().numpy()

    g = torch.Generator().manual_seed(0)
    images = torch.randn(40, 1, 2, 2, generator=g)
    reference = torch.randn(50, 1, 2, 2, generator=g)
    f, k = Frechet(), Kernel()
    f.reference = (reference.flatten(1).double().numpy().mean(0), np.cov(reference.flatten(1).double().numpy(), rowvar=False))
    k.reference_features = reference.flatten(1).double().numpy()
    ones = np.ones((1, 40), dtype=np.int32)
    for e in (Mean(), f, k):
        e.reset()
        e.update(images[:25], [""] * 25)
        e.update(images[25:], [""] * 15)  # streamed in two batches
        assert e.replicates(ones)[0] == pytest.approx(e.compute(), rel=1e-9), type(e).__name__


def test_an_evaluator_without_a_bootstrap_gets_rows_without_an_interval():
    from flashbench.method.evaluation import Evaluator
    from flashbench.runner import measure

    class Opaque(Evaluator):
        metric, higher_is_better = "opaque", True

        def reset(self):
            pass

        def update(self, images, prompts, *, reference=None):
            pass

        def compute(self):
            return 1.5

    m = measure(Opaque(), 10, 1000, seed=0)
    assert m.value == 1.5 and math.isnan(m.low) and m.replicates is None and "no bootstrap" in m.method


# --- verdicts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "low, high, better, expected",
    [
        (-3.0, -1.0, "lower", "reproduced"),
        (1.0, 3.0, "lower", "contradicted"),
        (-1.0, 2.0, "lower", "inconclusive"),
        (0.01, 0.02, "higher", "reproduced"),
        (-0.02, -0.01, "higher", "contradicted"),
        (-0.01, 0.02, "higher", "inconclusive"),
        (0.0, 1.0, "higher", "inconclusive"),  # touching zero does not decide
    ],
)
def test_verdict_by_where_the_interval_lies(low, high, better, expected):
    assert verdict(Difference((low + high) / 2, low, high, "test", 1), better) == expected


def test_verdict_without_data_or_interval():
    assert verdict(None, "lower") == "not measured"
    assert verdict(Difference(-5.0, math.nan, math.nan, "no replicates", 1), "lower") == "inconclusive"
    with pytest.raises(ValueError):
        verdict(Difference(1, 0, 2, "", 1), "bigger")


def test_one_seed_uses_the_paired_bootstrap():
    rng = np.random.default_rng(5)
    ra, rb = rng.normal(10, 0.1, 1000), rng.normal(12, 0.1, 1000)
    d = paired_difference({0: (10.0, 12.0, ra, rb)})
    assert d.seeds == 1 and d.value == pytest.approx(-2.0) and d.high < 0
    assert "sampling noise only" in d.method
    assert verdict(d, "lower") == "reproduced"


def test_several_seeds_use_a_t_interval_over_the_per_seed_differences():
    # per-seed differences -1, -2, -3: mean -2, sd 1, t_{2,.975} = 4.303 -> [-4.48, 0.48]: inconclusive,
    # although every seed's own difference is negative and its bootstrap interval is tight
    tight = {s: (10.0 - d, 10.0, np.full(100, 10.0 - d), np.full(100, 10.0)) for s, d in enumerate((1.0, 2.0, 3.0))}
    d = paired_difference(tight)
    assert d.seeds == 3 and d.value == pytest.approx(-2.0)
    assert d.low == pytest.approx(-2 - 4.3027 / math.sqrt(3), rel=1e-4) and d.high == pytest.approx(-2 + 4.3027 / math.sqrt(3), rel=1e-4)
    assert verdict(d, "lower") == "inconclusive"
    consistent = {s: (10.0 - d, 10.0, None, None) for s, d in enumerate((1.9, 2.0, 2.1))}
    assert verdict(paired_difference(consistent), "lower") == "reproduced"
    assert verdict(paired_difference(consistent), "higher") == "contradicted"
