"""The paired-difference helper behind every claim verdict (``analysis/stats.py``), checked against a
brute-force enumeration of sign patterns and against scipy's exact Wilcoxon signed-rank test."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from analysis.stats import (CONTRADICTED, INCONCLUSIVE, MIN_PAIRS, NOT_TESTED, SUPPORTED, combine, decide,
                            exact_verdict, log_ratios, paired_interval, signed_rank_null)


def brute_null(n: int) -> np.ndarray:
    """P(T+ = t) by enumerating all 2^n sign patterns of the ranks 1..n."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    for signs in itertools.product((0, 1), repeat=n):
        counts[sum(r for r, s in zip(range(1, n + 1), signs) if s)] += 1
    return counts / 2**n


@pytest.mark.parametrize("n", [1, 2, 5, 6, 9, 12])
def test_null_distribution_equals_enumeration(n):
    assert np.allclose(signed_rank_null(n), brute_null(n), rtol=0, atol=1e-15)


def brute_p(diffs: np.ndarray) -> float:
    """Exact two-sided signed-rank p-value by enumeration (distinct nonzero |d|)."""
    ranks = np.argsort(np.argsort(np.abs(diffs))) + 1
    observed = ranks[diffs > 0].sum()
    null = brute_null(len(diffs))
    cdf = np.cumsum(null)
    lower, upper = cdf[observed], 1 - (cdf[observed - 1] if observed > 0 else 0)
    return min(1.0, 2 * min(lower, upper))


@pytest.mark.parametrize("n, seed", [(6, 0), (7, 1), (8, 2), (10, 3), (11, 4)])
def test_interval_is_the_set_of_shifts_the_exact_test_does_not_reject(n, seed):
    """Brute force: scan shifts; the exact test keeps exactly those inside [lo, hi] (scipy agrees)."""
    d = np.random.default_rng(seed).normal(0.4, 1.0, n)
    iv = paired_interval(d)
    assert iv.bounded and iv.lo <= iv.estimate <= iv.hi and iv.coverage >= 0.95
    walsh = sorted((d[i] + d[j]) / 2 for i in range(n) for j in range(i, n))
    assert iv.estimate == pytest.approx(float(np.median(walsh)))
    eps = 1e-9
    for x, kept in ((iv.lo - eps, False), (iv.lo + eps, True), (iv.hi - eps, True), (iv.hi + eps, False)):
        p = brute_p(d - x)
        assert (p >= 0.05) == kept, (x, p)
        assert wilcoxon(d - x, method="exact").pvalue == pytest.approx(p)
    grid = np.linspace(iv.lo - 1, iv.hi + 1, 101)
    kept = [x for x in grid if not np.any(np.isclose(walsh, x)) and brute_p(d - x) >= 0.05]
    assert min(kept) >= iv.lo and max(kept) <= iv.hi


@pytest.mark.parametrize("n, seed", [(15, 5), (20, 6), (40, 7)])
def test_interval_endpoints_agree_with_scipy_at_larger_n(n, seed):
    d = np.random.default_rng(seed).normal(0.3, 1.0, n)
    iv = paired_interval(d)
    eps = 1e-9
    assert wilcoxon(d - (iv.lo - eps), method="exact").pvalue < 0.05 <= wilcoxon(d - (iv.lo + eps), method="exact").pvalue
    assert wilcoxon(d - (iv.hi + eps), method="exact").pvalue < 0.05 <= wilcoxon(d - (iv.hi - eps), method="exact").pvalue


def test_fewer_than_six_pairs_cannot_decide():
    assert MIN_PAIRS == 6
    iv = paired_interval([1.0, 2.0, 3.0, 4.0, 5.0])          # five positive differences: p = 1/16 at best
    assert not iv.bounded and decide(iv, "greater") == INCONCLUSIVE and "unbounded" in iv.text()
    iv6 = paired_interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])    # six: the interval is [min, max], coverage 1 - 2/64
    assert (iv6.lo, iv6.hi) == (1.0, 6.0) and iv6.coverage == pytest.approx(1 - 2 / 64)
    assert decide(iv6, "greater") == SUPPORTED and decide(iv6, "less") == CONTRADICTED
    assert paired_interval([]) is None and paired_interval([float("nan"), None]) is None
    assert decide(None, "less") == NOT_TESTED


def test_verdicts_thresholds_and_ratios():
    iv = paired_interval(log_ratios(zip([2.0, 2.1, 1.9, 2.2, 2.05, 1.95], [1.0] * 6)), log_ratio=True)
    assert iv.n == 6 and "ratio 2.0" in iv.text() and iv.text().endswith("2.2×]")
    assert decide(iv, "greater") == SUPPORTED                         # above 1x
    assert decide(iv, "less", math.log(3)) == SUPPORTED               # "within 3x"
    assert decide(iv, "less", math.log(2)) == INCONCLUSIVE            # the interval contains 2x
    assert decide(iv, "greater", math.log(2.5)) == CONTRADICTED
    with pytest.raises(ValueError):
        decide(iv, "above")
    assert log_ratios([(1.0, 0.0), (-1.0, 1.0), (None, 1.0), (2.0, 1.0)]) == [math.log(2.0)]
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED and combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED and combine([NOT_TESTED]) == NOT_TESTED
    assert exact_verdict([True, True]) == SUPPORTED and exact_verdict([True, False]) == CONTRADICTED
    assert exact_verdict([]) == NOT_TESTED
