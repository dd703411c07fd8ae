"""Uncertainty of every reported number, and the three-way verdict on a paper claim. Pure numpy.

**Within one seed: a paired bootstrap over the evaluated samples.** Every variant of a seed (and the
teacher baselines) is sampled on the same prompts and initial noise, so sample ``i`` of one row and
sample ``i`` of another are a pair. :func:`resample_counts` draws the resamples from ``(seed, n)``
alone: every row of a seed is resampled with the *same* indices, and the difference of two rows'
replicates, ``rep_a[b] - rep_b[b]``, is the bootstrap of their paired difference (positively
correlated samples cancel, so it is narrower than an unpaired interval). An evaluator turns one block
of resample counts ``(B, n)`` into ``B`` replicate values of its metric
(:meth:`flashbench.method.evaluation.Evaluator.replicates`): mean metrics weight their per-sample
scores; Fréchet metrics resample the generated feature rows with the reference statistics fixed.

The interval is the percentile interval of the replicates *re-centred on the value*:
``[q_lo - shift, q_hi - shift]`` with ``shift = median(replicates) - value``. For a mean the shift is
~0 and this is the percentile interval. A Fréchet distance's replicates sit well above its value
(resampling with duplicates makes the covariance noisier: at the toy studies' 600 samples by more
than their spread), so the plain percentile interval would miss the value, and the basic interval
``[2v - q_hi, 2v - q_lo]`` would swing below it (a bias correction FD's nonlinear bias does not
support). Re-centred, the interval says how far the value moves under resampling *at this n*; the
finite-n bias itself is the same for every row of a study (same n), and the report states it.

**Across seeds: a t-interval over the per-seed values.** With S >= 2 seeds, each seed's value (or
each seed's paired difference) is one draw that carries both training noise and sampling noise; the
interval is ``mean +- t_{S-1, 0.975} * sd / sqrt(S)``. It is wide with 3 seeds (t = 4.30), as it
should be. With one seed only the sampling noise is covered, and verdicts say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
BLOCK = 100  # resamples drawn (and evaluated) at a time: memory O(BLOCK x n), whatever the resample count
SEED_OFFSET = 30_000  # resample seed = SEED_OFFSET + study seed, apart from the noise (10_000 + s) and sampler (20_000 + s) streams

REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = "reproduced", "contradicted", "inconclusive", "not measured"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = 0, block: int = BLOCK) -> Iterator[np.ndarray]:
    """Blocks of bootstrap resamples of ``n`` samples, as counts: ``(b, n)`` int arrays whose rows sum
    to ``n``. A function of ``(n, resamples, seed, block)`` only, so every row of one seed is resampled
    with the same indices (the pairing)."""
    if n < 1:
        raise ValueError(f"cannot resample {n} samples")
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        rng = np.random.default_rng([seed, n, start])
        idx = rng.integers(0, n, size=(b, n))
        counts = np.zeros((b, n), dtype=np.int32)
        np.add.at(counts, (np.repeat(np.arange(b), n), idx.ravel()), 1)
        yield counts


def replicates(fn: Callable[[np.ndarray], np.ndarray], n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``fn(counts) -> (b,)`` over every block: the ``resamples`` bootstrap replicates of one statistic."""
    out = [np.asarray(fn(c), dtype=np.float64).reshape(-1) for c in resample_counts(n, resamples, seed)]
    return np.concatenate(out)


def centred_interval(value: float, reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The replicates' ``level`` percentile interval, shifted so that their median sits on ``value``
    (see the module docstring)."""
    reps = np.asarray(reps, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if not len(reps) or not math.isfinite(value):
        return math.nan, math.nan
    a = (1 - level) / 2
    q_lo, median, q_hi = np.quantile(reps, [a, 0.5, 1 - a])
    shift = median - value
    return float(q_lo - shift), float(q_hi - shift)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """``mean +- t_{S-1} sd / sqrt(S)`` over per-seed values (NaN with fewer than two)."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    m = float(x.mean())
    return m - half, m + half


# --- Fréchet replicates ---------------------------------------------------------------------------


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_replicates(features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray, counts: np.ndarray, ref_sqrt: np.ndarray | None = None) -> np.ndarray:
    """Fréchet distances of the resampled generated features (rows of ``features`` weighted by each row
    of ``counts``) to the fixed reference statistics, batched: the resampled mean and covariance (ddof=1,
    as ``np.cov`` of the resampled rows) and ``tr sqrt(S_r^1/2 S S_r^1/2)`` from a symmetric eigenvalue
    problem per resample (equal to clean-fid's sqrtm form to ~1e-10)."""
    x = np.asarray(features, dtype=np.float64)
    w = np.asarray(counts, dtype=np.float64)
    n = x.shape[0]
    root = psd_sqrt(sigma_ref) if ref_sqrt is None else ref_sqrt
    # In the coordinates y = x S_r^1/2 the resampled covariance of y *is* S_r^1/2 S S_r^1/2, so one
    # batched product per block gives it (centred first: the shift keeps float64 cancellation small).
    centre = x.mean(0)
    xc = x - centre
    y = xc @ root
    mu_c = w @ xc / n  # (b, D), resampled mean minus the centre
    mu_y = mu_c @ root
    inner = np.matmul((w[:, :, None] * y[None]).transpose(0, 2, 1), y) / n - mu_y[:, :, None] * mu_y[:, None, :]
    inner *= n / (n - 1)
    eig = np.linalg.eigvalsh(inner)
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum(-1)
    # tr S of the resample, from the squared norms (no D x D product per resample)
    trace_cov = (w @ (xc * xc).sum(1) / n - (mu_c * mu_c).sum(-1)) * (n / (n - 1))
    diff = mu_c + centre - mu_ref
    return (diff * diff).sum(-1) + trace_cov + np.trace(sigma_ref) - 2 * trace_sqrt


# --- kernel (KID) replicates ----------------------------------------------------------------------


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel (Binkowski et al. 2018, as clean-fid): ``(a.b / d + 1)^3``."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def kid(gen: np.ndarray, ref: np.ndarray) -> float:
    """The unbiased squared MMD with KID's kernel between all generated and all reference features (no
    subsets). Equals clean-fid's ``kernel_distance`` when both sets have the same size, at most 1,000."""
    return float(kid_replicates(gen, ref, np.ones((1, len(gen)), dtype=np.int32))[0])


def kid_replicates(
    gen: np.ndarray, ref: np.ndarray, counts: np.ndarray, *, gram: np.ndarray | None = None, ref_term: float | None = None, cross: np.ndarray | None = None
) -> np.ndarray:
    """KID of the resampled generated features (reference fixed). With counts ``w`` over the n generated
    rows, the resample's off-diagonal pairs sum to ``w'Kw - sum_i w_i K_ii`` (a duplicated sample
    pairs with its copy), over ``n (n - 1)`` pairs; the cross term is ``w'K_gr 1 / (n m)``."""
    g = np.asarray(gen, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    w = np.asarray(counts, dtype=np.float64)
    n, m = len(g), len(r)
    k_gg = polynomial_kernel(g, g) if gram is None else gram
    if ref_term is None:
        k_rr = polynomial_kernel(r, r)
        ref_term = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
    row_cross = polynomial_kernel(g, r).sum(1) if cross is None else cross
    gg = (np.einsum("bi,ij,bj->b", w, k_gg, w, optimize=True) - w @ np.diag(k_gg)) / (n * (n - 1))
    return gg + ref_term - 2 * (w @ row_cross) / (n * m)


# --- verdicts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """``variant - baseline`` of one metric, with its 95% interval and how it was computed."""

    value: float
    low: float
    high: float
    method: str
    seeds: int

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


def verdict(diff: Difference | None, better: str) -> str:
    """*reproduced* when the interval lies on the paper's side of 0 (below for ``better = "lower"``),
    *contradicted* when it lies on the other side, *inconclusive* when it contains 0 or is missing."""
    if diff is None:
        return NOT_MEASURED
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    if not diff.has_interval:
        return INCONCLUSIVE
    sign = -1 if better == "lower" else 1
    lo, hi = sorted((sign * diff.low, sign * diff.high))
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def paired_difference(per_seed: dict[int, tuple[float, float, np.ndarray | None, np.ndarray | None]], level: float = LEVEL) -> Difference | None:
    """The difference ``a - b`` from per-seed ``(a, b, replicates_a, replicates_b)``.

    One seed: the (re-centred percentile) bootstrap interval of the paired replicates' differences (sampling noise only;
    NaN when either side has no replicates). Several seeds: the t-interval over the per-seed
    differences (seed-to-seed spread, sampling noise included)."""
    seeds = sorted(per_seed)
    if not seeds:
        return None
    diffs = [per_seed[s][0] - per_seed[s][1] for s in seeds]
    value = float(np.mean(diffs))
    if len(seeds) >= 2:
        lo, hi = t_interval(diffs, level)
        return Difference(value, lo, hi, f"t-interval over {len(seeds)} seeds' paired differences", len(seeds))
    a, b, ra, rb = per_seed[seeds[0]]
    if ra is None or rb is None or len(ra) != len(rb) or not len(ra):
        return Difference(value, math.nan, math.nan, "no bootstrap replicates stored", 1)
    lo, hi = centred_interval(value, np.asarray(ra) - np.asarray(rb), level)
    return Difference(value, lo, hi, f"paired bootstrap over samples, {len(ra)} resamples (one seed: sampling noise only)", 1)
