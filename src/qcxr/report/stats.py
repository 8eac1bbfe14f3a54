"""Statistics of the paper's CDL-vs-DQC comparison (section III-E), as pure functions.

Percent difference is equation (4) of the paper, 2·(a − b)/(a + b), reported in percent; p-values
come from a paired t-test over seeds (`scipy.stats.ttest_rel`); significance stars follow the
captions of Figures 5–11 (ns: p ≥ 0.05, *: p < 0.05, **: p < 0.01, ***: p < 0.001).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
STAR_THRESHOLDS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value of a against b.

    Args:
        a: f64[n] values of the first head, one per seed.
        b: f64[n] values of the second head for the same seeds, in the same order.

    Returns:
        The p-value of `scipy.stats.ttest_rel(a, b)`; NaN when n < 2 or when the differences are
        all equal to zero (the statistic is 0/0). A constant non-zero difference gives p = 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-d shapes, got {a.shape} and {b.shape}")
    if a.size < 2:
        return math.nan
    with warnings.catch_warnings():
        # A zero-variance difference makes scipy warn about catastrophic cancellation; the
        # result (NaN or 0) is handled by the callers, so the warning is noise here.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(sps.ttest_rel(a, b).pvalue)


def percent_difference(a: float, b: float) -> float:
    """The paper's percent difference, equation (4): 100 · 2·(a − b)/(a + b).

    Args:
        a: mean AUROC of the first head (CDL in the paper).
        b: mean AUROC of the second head (DQC in the paper).

    Returns:
        The difference in percent; positive when a is larger. NaN when a + b is 0 or an input
        is NaN.
    """
    total = a + b
    if not np.isfinite(total) or total == 0:
        return math.nan
    return 100.0 * 2.0 * (a - b) / total


def stars(p: float) -> str:
    """Significance marker of a p-value.

    Args:
        p: a p-value, or NaN when no test was possible.

    Returns:
        "***", "**", "*" below 0.001, 0.01, 0.05; "ns" otherwise; "n/a" for NaN.
    """
    if p is None or not np.isfinite(p):
        return "n/a"
    for threshold, marker in STAR_THRESHOLDS:
        if p < threshold:
            return marker
    return "ns"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) of a set of per-seed values.

    Args:
        values: f64[n] values, one per seed.

    Returns:
        (mean, sd); sd is NaN when n < 2, both are NaN when n = 0.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    sd = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
    return float(np.mean(x)), sd


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of two heads on one metric.

    Attributes:
        n: number of seeds with a value for both heads.
        seeds: those seeds, sorted.
        mean_a, sd_a, mean_b, sd_b: mean and sample sd over the paired seeds.
        pct_diff: percent difference of the means, `percent_difference(mean_a, mean_b)`.
        p: paired t-test p-value (NaN when untestable).
        stars: significance marker of p.
    """

    n: int
    seeds: tuple[int, ...]
    mean_a: float
    sd_a: float
    mean_b: float
    sd_b: float
    pct_diff: float
    p: float
    stars: str


def compare(by_seed_a: dict[int, float], by_seed_b: dict[int, float]) -> Comparison:
    """Pair two heads' per-seed values on the seeds both have and compare them.

    Args:
        by_seed_a: seed -> value of the first head.
        by_seed_b: seed -> value of the second head.

    Returns:
        The Comparison over the seeds present in both mappings.
    """
    seeds = tuple(sorted(set(by_seed_a) & set(by_seed_b)))
    a = [by_seed_a[s] for s in seeds]
    b = [by_seed_b[s] for s in seeds]
    mean_a, sd_a = mean_sd(a)
    mean_b, sd_b = mean_sd(b)
    p = paired_ttest(a, b)
    return Comparison(
        n=len(seeds),
        seeds=seeds,
        mean_a=mean_a,
        sd_a=sd_a,
        mean_b=mean_b,
        sd_b=sd_b,
        pct_diff=percent_difference(mean_a, mean_b),
        p=p,
        stars=stars(p),
    )
