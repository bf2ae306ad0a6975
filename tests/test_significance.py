"""Intervals and paired tests on hand-worked and simulated cases."""
from __future__ import annotations

import numpy as np
import pytest

from cifarlab.evaluation.significance import (binomial_interval, detectable_difference, holm, mcnemar,
                                              paired_difference, paired_t, seed_interval, seeds_needed, verdict, welch)


def test_exact_mcnemar_on_a_hand_worked_pair():
    """a right and b wrong on images 1, 2, 3, 8 (4); b right and a wrong on image 5 (1). Under the null
    each of the 5 discordant images goes either way with p 1/2, so the two-sided exact p is
    P(X <= 1) + P(X >= 4) for X ~ Binomial(5, 1/2) = (1 + 5 + 5 + 1) / 32 = 0.375."""
    a = np.array([1, 1, 1, 1, 0, 0, 1, 0, 1, 1], bool)
    b = np.array([1, 0, 0, 0, 0, 1, 1, 0, 0, 1], bool)
    assert mcnemar(a, b) == {"a_only": 4, "b_only": 1, "p": pytest.approx(0.375)}
    assert mcnemar(a, a)["p"] == 1.0                       # identical predictions: nothing to tell apart
    with pytest.raises(ValueError, match="same test images"):
        mcnemar(a, b[:5])


def test_clopper_pearson_and_seed_intervals():
    """94 of 100: the exact interval is (87.40%, 97.77%) (Beta quantiles 0.025 of Beta(94, 7) and 0.975 of
    Beta(95, 6)); the seed interval of 93, 94, 95 is 94 +- t(0.975, 2) x 1 / sqrt(3) = 94 +- 2.484."""
    low, high = binomial_interval(94, 100)
    assert low == pytest.approx(87.40, abs=0.01) and high == pytest.approx(97.77, abs=0.01)
    assert seed_interval([93, 94, 95]) == pytest.approx((94 - 2.4841, 94 + 2.4841), abs=1e-3)
    with pytest.raises(ValueError, match="two seeds"):
        seed_interval([94.0])


def test_paired_bootstrap_contains_a_known_effect_and_excludes_zero():
    rng = np.random.default_rng(1)
    n = 10_000
    b = rng.random(n) < 0.93
    a = b.copy()
    a[np.flatnonzero(~b)[:150]] = True                    # a fixes 150 of b's errors: +1.5 points exactly
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(1.5) and d["low"] > 0 and d["low"] < 1.5 < d["high"]
    noise = rng.random(n) < 0.5                            # 50 images each way: no effect
    c = b.copy()
    c[np.flatnonzero(b & noise)[:50]] = False
    c[np.flatnonzero(~b & noise)[:50]] = True
    d0 = paired_difference(c, b)
    assert d0["difference"] == 0 and d0["low"] < 0 < d0["high"]
    seeds = np.stack([a, a, b])                            # (S, N): each image's mean over seeds
    assert paired_difference(seeds, b)["difference"] == pytest.approx(1.0)


def test_paired_t_with_seeds_on_one_side_on_a_hand_worked_case():
    """Two seeds of a on 4 images, per-image means (1, 0.5, 0, 1); b gets only image 4 right. The
    differences (1, 0.5, 0, 0) have mean 0.375 and sample variance 0.6875 / 3, so t = 0.375 /
    (sqrt(0.6875 / 3) / 2) = 1.5667 on 3 degrees of freedom: two-sided p = 0.2152."""
    a = np.array([[1, 1, 0, 1], [1, 0, 0, 1]], bool)
    b = np.array([0, 0, 0, 1], bool)
    assert paired_t(a, b) == pytest.approx(0.2152, abs=1e-4) and paired_t(b, a) == pytest.approx(0.2152, abs=1e-4)
    assert paired_t(a, a) == 1.0                           # identical predictions: nothing to tell apart
    with pytest.raises(ValueError, match="same test images"):
        paired_t(a, b[:3])


def test_holm_on_three_hand_worked_p_values():
    """Sorted 0.01, 0.03, 0.04 times 3, 2, 1 give 0.03, 0.06, 0.04; made monotone: 0.03, 0.06, 0.06."""
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


def test_verdicts_seeds_and_welch():
    assert verdict(0.3, 1.2, 0.01) == "better" and verdict(-1.2, -0.3, 0.01) == "worse"
    assert verdict(-0.2, 0.9, 0.01) == verdict(0.3, 1.2, 0.2) == "not distinguishable at 95%"
    need = seeds_needed(0.15, 0.2)
    assert detectable_difference(0.15, need) <= 0.2 < detectable_difference(0.15, need - 1)
    assert detectable_difference(0.15, 8) < detectable_difference(0.15, 3)
    assert welch([94.1, 94.2, 94.3], [93.7, 93.8, 93.9]) < 0.01 < welch([94.1, 94.3], [94.2, 94.0])
