"""Small statistics for ablation reports: Student-t quantiles, mean ± 95% CI over seeds, rollouts
needed to reach a target accuracy, moving averages. numpy and the standard library only (no scipy)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TOLERANCE = 1e-9
"""Accuracies within this of a target count as reaching it (a mean of equal floats may exceed them)."""


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on ``t_cdf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its two-sided ``level`` Student-t confidence interval over ``values``
    (NaN values are left out; the half-width is NaN with fewer than two values)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    sem = float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()), t_quantile(0.5 + level / 2.0, len(x) - 1) * sem


def rollouts_to_target(rollouts: Sequence[float], accuracy: Sequence[float], target: float) -> float | None:
    """Rollouts at which accuracy first reaches ``target``: the first evaluation at or above it, linearly
    interpolated in rollouts from the evaluation before it; None when it never gets there."""
    prev = None
    for r, a in zip(rollouts, accuracy):
        if a >= target - TOLERANCE:
            if prev is None or prev[1] >= a:
                return float(r)
            r0, a0 = prev
            return float(r0 + (target - a0) / (a - a0) * (r - r0))
        prev = (r, a)
    return None


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over up to ``window`` points (shorter at the start; NaNs skipped)."""
    x = np.asarray(values, dtype=float)
    ok = np.isfinite(x)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    cnt = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    n = cnt[idx] - cnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (csum[idx] - csum[lo]) / np.maximum(n, 1), np.nan)


def paired_ratio(pairs: Sequence[tuple[float | None, float]], level: float = 0.95) -> dict:
    """Geometric mean of per-seed ratios arm/reference and its Student-t CI (computed on the logs).

    ``pairs`` holds, per seed, (the arm's value or None when it never got there, the reference's value
    for the same seed, > 0). A None makes the estimate censored: the arm needs more than its budget on
    that seed, so the CI's upper end is infinite and the point estimate is only a lower bound; the
    caller passes the arm's budget in place of None to get that bound. Returns ``ratios`` (per seed,
    None where censored), ``mean``, ``lo``, ``hi``, ``n`` and ``censored``.
    """
    ratios = [None if a is None else float(a) / float(r) for a, r in pairs]
    hits = [x for x in ratios if x is not None]
    out = {"ratios": ratios, "n": len(ratios), "censored": len(ratios) - len(hits),
           "mean": math.nan, "lo": math.nan, "hi": math.nan}
    if not hits or any(x <= 0 for x in hits):
        return out
    m, h = mean_ci(np.log(hits), level)
    out["mean"] = math.exp(m)
    if np.isfinite(h):
        out["lo"], out["hi"] = math.exp(m - h), math.exp(m + h)
    if out["censored"]:
        out["hi"] = math.inf
    return out
