"""Shared helpers for the buffer tests: configs, deep state comparison, reward groups, chi-square."""

from __future__ import annotations

import math

import numpy as np

from rlpp.buffer import PriorityBuffer
from rlpp.config.schema import BufferConfig, RetestConfig

PARKING = ("prioritized", "paper", "per")
"""Samplers that withhold solved/unsolved problems until a retest (the test's own list, not the code's)."""

FAST = dict(deadline=None, derandomize=True, database=None)
"""Hypothesis settings every property test shares: deterministic, no example database, no deadline."""


def make_cfg(sampler: str = "prioritized", **kw) -> BufferConfig:
    """A BufferConfig with ``retest`` given as a dict of RetestConfig fields (or a RetestConfig)."""
    retest = kw.pop("retest", {})
    if isinstance(retest, dict):
        retest = RetestConfig(**retest)
    return BufferConfig(sampler=sampler, retest=retest, **kw)


def group(successes: int, size: int, hi: float = 1.0, lo: float = 0.0) -> list[float]:
    """One group of ``size`` rewards with exactly ``successes`` of them >= the default threshold."""
    return [hi] * successes + [lo] * (size - successes)


def rewards_for(successes, size: int) -> np.ndarray:
    """(len(successes), size) binary reward rows with the given success counts."""
    return np.array([group(int(s), size) for s in successes], dtype=np.float64).reshape(-1, size)


def state_diff(a, b, path: str = "state") -> str | None:
    """First difference between two nested state dicts (arrays compared by shape, dtype and value,
    NaN equal to NaN), or None when they are equal."""
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return f"{path}: {type(a).__name__} != {type(b).__name__}"
        if set(a) != set(b):
            return f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            d = state_diff(a[k], b[k], f"{path}[{k!r}]")
            if d:
                return d
        return None
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a2, b2 = np.asarray(a), np.asarray(b)
        if a2.shape != b2.shape or a2.dtype != b2.dtype:
            return f"{path}: shape/dtype {a2.shape}/{a2.dtype} != {b2.shape}/{b2.dtype}"
        if not np.array_equal(a2, b2, equal_nan=a2.dtype.kind in "fc"):
            return f"{path}: arrays differ"
        return None
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return f"{path}: {a!r:.80} != {b!r:.80}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = state_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    if a != b or type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return f"{path}: {a!r} != {b!r}"
    return None


def assert_state_equal(a: dict, b: dict) -> None:
    d = state_diff(a, b)
    assert d is None, d


def assert_batches_equal(x, y) -> None:
    assert x.step == y.step
    assert np.array_equal(x.ids, y.ids), (x.ids, y.ids)
    assert np.array_equal(x.retest, y.retest)
    assert np.array_equal(x.weights, y.weights), (x.weights, y.weights)


def buffer_with(cfg: BufferConfig, n: int, seed: int = 0) -> PriorityBuffer:
    buf = PriorityBuffer(cfg, n, seed=seed)
    buf.check_invariants()
    return buf


# ------------------------------------------------------------------ chi-square without scipy
def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df): 1 - P(df/2, x/2), the regularized lower incomplete gamma
    summed as its power series (converges for every x; fine for the df and x used here)."""
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    term = total = 1.0 / a
    k = 0
    while term > total * 1e-17:
        k += 1
        term *= z / (a + k)
        total += term
    return max(0.0, 1.0 - math.exp(a * math.log(z) - z - math.lgamma(a)) * total)


def chi2_critical(df: int, alpha: float) -> float:
    """The x with P(X >= x) = alpha, by bisection on ``chi2_sf``."""
    lo, hi = 0.0, df + 40.0 * math.sqrt(2 * df) + 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if chi2_sf(mid, df) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def pearson(observed: np.ndarray, expected: np.ndarray) -> float:
    observed, expected = np.asarray(observed, dtype=float), np.asarray(expected, dtype=float)
    return float((((observed - expected) ** 2) / expected).sum())
