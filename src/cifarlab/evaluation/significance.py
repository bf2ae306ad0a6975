"""Which differences between runs are real: intervals on test top-1 and paired tests on the same images.

All figures are in percentage points of top-1. The statistics come from scipy and statsmodels:

* one run's top-1: the exact Clopper-Pearson 95% interval of a binomial proportion over the test
  images (``scipy.stats.binomtest(...).proportion_ci(method="exact")``);
* a row of seeds: the t interval of the mean over seeds (``scipy.stats.t``);
* two runs on the same images: the top-1 difference with a paired bootstrap interval over the
  images (``scipy.stats.bootstrap(paired=True)``, seeded) and the exact McNemar test on the discordant
  images (``scipy.stats.binomtest`` of one discordant count against p = 1/2);
* seeds on one side: the bootstrap and a paired t-test (``scipy.stats.ttest_rel``) on each image's
  mean correctness over the seeds;
* seeds on both sides: the bootstrap on each image's mean correctness over the seeds, and Welch's
  t-test on the per-seed top-1s (``scipy.stats.ttest_ind(equal_var=False)``);
* many pairs in one table: Holm's step-down correction (``statsmodels.stats.multitest.multipletests``);
* how many seeds: the power of a two-sample t-test (``statsmodels.stats.power.TTestIndPower``).

Inputs are per-image correctness arrays: bool or 0/1 (N,) for one run, float (S, N) for S seeds.
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def binomial_interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of ``correct / n``, in %: ``(low, high)``.

    Raises:
        ValueError: ``n`` < 1 or ``correct`` outside [0, n].
    """
    from scipy.stats import binomtest
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="exact")
    return 100 * ci.low, 100 * ci.high


def seed_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """t interval of the mean of per-seed ``values`` (%, two or more), ``(low, high)``.

    Raises:
        ValueError: fewer than two values.
    """
    from scipy import stats
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        raise ValueError("a seed interval needs at least two seeds")
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def _per_image(correct) -> np.ndarray:
    """(N,) float: correctness of one run, or each image's mean over seeds for (S, N)."""
    c = np.asarray(correct, dtype=float)
    return c.mean(0) if c.ndim == 2 else c


def paired_difference(correct_a, correct_b, level: float = LEVEL) -> dict:
    """Top-1 of ``a`` minus top-1 of ``b`` on the same test images, with a paired bootstrap interval.

    Args:
        correct_a, correct_b: per-image correctness, (N,) or (S, N) over seeds (each image's mean
            correctness over its seeds is resampled), the same N images in the same order.

    Returns:
        ``{"difference", "low", "high"}`` in percentage points.

    Raises:
        ValueError: the two do not cover the same number of images.
    """
    from scipy.stats import bootstrap
    a, b = _per_image(correct_a), _per_image(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same test images: {a.shape[0]} and {b.shape[0]} images")
    diff = 100 * float(a.mean() - b.mean())
    if np.array_equal(a, b):
        return {"difference": 0.0, "low": 0.0, "high": 0.0}
    res = bootstrap((a, b), lambda x, y, axis=-1: 100 * (x.mean(axis) - y.mean(axis)), paired=True,
                    confidence_level=level, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                    random_state=np.random.default_rng(BOOTSTRAP_SEED), vectorized=True)
    return {"difference": diff, "low": float(res.confidence_interval.low), "high": float(res.confidence_interval.high)}


def mcnemar(correct_a, correct_b) -> dict:
    """The exact McNemar test of two runs on the same images (one seed each): ``{"a_only", "b_only",
    "p"}``, where ``a_only`` counts images only ``a`` gets right; p is two-sided (1.0 when no image is
    discordant).

    Raises:
        ValueError: different numbers of images.
    """
    from scipy.stats import binomtest
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar's test needs the same test images: {a.shape[0]} and {b.shape[0]} images")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if a_only + b_only == 0 else float(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p": p}


def paired_t(correct_a, correct_b) -> float:
    """Two-sided p of the paired t-test over the test images of each image's correctness, a mean over
    its seeds for (S, N) input (``scipy.stats.ttest_rel``); 1.0 when every image's difference is 0.
    It tests these trained models on these images (as McNemar's test does for one run a side), not
    the training recipe: for that, seeds on both sides and `welch`.

    Raises:
        ValueError: different numbers of images.
    """
    from scipy.stats import ttest_rel
    a, b = _per_image(correct_a), _per_image(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"a paired test needs the same test images: {a.shape[0]} and {b.shape[0]} images")
    if np.array_equal(a, b):
        return 1.0
    return float(ttest_rel(a, b).pvalue)


def welch(top1_a, top1_b) -> float:
    """Two-sided p of Welch's t-test on per-seed top-1s (two or more seeds each side)."""
    from scipy.stats import ttest_ind
    return float(ttest_ind(np.asarray(top1_a, float), np.asarray(top1_b, float), equal_var=False).pvalue)


def holm(pvalues) -> list[float]:
    """Holm-adjusted p-values of the pairs of one table, in the order given."""
    from statsmodels.stats.multitest import multipletests
    p = list(pvalues)
    return [] if not p else [float(x) for x in multipletests(p, method="holm")[1]]


def verdict(low: float, high: float, p_adjusted: float, level: float = LEVEL) -> str:
    """``better`` / ``worse`` (the difference's interval excludes 0 and the corrected p is below
    1 - level) or ``not distinguishable at 95%``."""
    if p_adjusted < 1 - level and low > 0:
        return "better"
    if p_adjusted < 1 - level and high < 0:
        return "worse"
    return f"not distinguishable at {100 * level:.0f}%"


def detectable_difference(seed_sd: float, seeds: int, level: float = LEVEL, power: float = 0.8) -> float:
    """The smallest top-1 difference (points) that ``seeds`` seeds per side tell apart with Welch's
    t-test at ``level`` and ``power``, for a seed-to-seed standard deviation ``seed_sd`` (points)."""
    from statsmodels.stats.power import TTestIndPower
    d = TTestIndPower().solve_power(nobs1=seeds, alpha=1 - level, power=power, ratio=1.0)
    return float(d * seed_sd)


def seeds_needed(seed_sd: float, difference: float, level: float = LEVEL, power: float = 0.8) -> int:
    """Seeds per side to tell ``difference`` (points) apart at ``level`` and ``power`` (at least 2)."""
    from statsmodels.stats.power import TTestIndPower
    if difference <= 0:
        raise ValueError(f"the difference to detect must be > 0 points (got {difference})")
    n = TTestIndPower().solve_power(effect_size=difference / seed_sd, alpha=1 - level, power=power, ratio=1.0)
    return max(2, int(np.ceil(n)))
