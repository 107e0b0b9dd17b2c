"""``uniform`` draws uniformly, whatever the priorities; ``dapo_filter`` draws ceil(oversample * B).

Goodness of fit without scipy. Each batch is a uniform B-subset of the N problems (all are answered
before the next batch, so all are available). Over T batches the count vector has mean T·B/N per
problem and covariance T·q(1-q)·N/(N-1)·(I - J/N) with q = B/N: sampling without replacement makes
the counts less spread than a multinomial with the same total, by the factor (N-B)/(N-1). Pearson's
X² = Σ (O - E)² / E is therefore (N-B)/(N-1) times a χ²(N-1) variable asymptotically, and
X² · (N-1)/(N-B) is compared with the χ²(N-1) critical value at α = 0.001. The critical value comes
from ``chi2_critical`` (a series for the regularized incomplete gamma), itself checked here against
table values. The seed is fixed, so the outcome is deterministic; α only says how unlucky a seed
would have to be for a correct sampler to fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from buffer_helpers import buffer_with, chi2_critical, chi2_sf, make_cfg, pearson, rewards_for
from rlpp.config.schema import DapoFilterConfig

N, B, T = 20, 5, 3000


def draw_counts(sampler: str, rewards_of, seed: int = 7) -> np.ndarray:
    """How often each problem is drawn over T batches of B, each answered with ``rewards_of(ids)``."""
    buf = buffer_with(make_cfg(sampler, retest=dict(mode="off")), N, seed=seed)
    counts = np.zeros(N, dtype=np.int64)
    for _ in range(T):
        b = buf.sample(B)
        assert len(b) == B and len(set(b.ids.tolist())) == B
        counts[b.ids] += 1
        buf.update(b.ids, rewards_of(b.ids))
    buf.check_invariants()
    return counts


def uniformity_statistic(counts: np.ndarray) -> float:
    """Pearson's X² against equal counts, rescaled for subset sampling (see the module docstring)."""
    expected = np.full(N, counts.sum() / N)
    return pearson(counts, expected) * (N - 1) / (N - B)


@pytest.mark.parametrize("df, alpha, table", [(1, 0.05, 3.841), (9, 0.001, 27.877), (19, 0.001, 43.820),
                                              (19, 0.05, 30.144), (100, 0.01, 135.807)])
def test_chi_square_critical_values_match_the_tables(df, alpha, table):
    assert chi2_critical(df, alpha) == pytest.approx(table, abs=2e-3)
    assert chi2_sf(table, df) == pytest.approx(alpha, rel=2e-3)


def test_uniform_draws_every_problem_equally_often():
    rng = np.random.default_rng(0)
    # Random rewards: priorities keep changing and differ between problems.
    counts = draw_counts("uniform", lambda ids: rng.random((len(ids), 4)))
    assert counts.sum() == T * B
    stat = uniformity_statistic(counts)
    assert stat < chi2_critical(N - 1, 0.001), (stat, counts)


def test_the_uniformity_check_rejects_a_biased_sampler():
    """The same statistic flags ``prioritized``, which prefers some problems: the check can fail."""
    rng = np.random.default_rng(0)
    counts = draw_counts("prioritized", lambda ids: rng.random((len(ids), 4)) < np.where(ids < 10, 0.5, 0.95)[:, None])
    assert uniformity_statistic(counts) > chi2_critical(N - 1, 0.001)


def consecutive_overlap(sampler: str, seed: int = 11) -> tuple[int, float, float]:
    """Problems shared by consecutive batches, summed over T - 1 pairs, with the mean and standard
    deviation of that sum for independent uniform batches: each overlap is hypergeometric(N, B, B)
    and, given everything before, independent of the earlier ones (its law does not depend on the
    batch it overlaps with)."""
    buf = buffer_with(make_cfg(sampler, retest=dict(mode="off")), N, seed=seed)
    rng = np.random.default_rng(seed)
    total, prev = 0, set()
    for _ in range(T):
        b = buf.sample(B)
        ids = set(b.ids.tolist())
        total += len(ids & prev)
        prev = ids
        buf.update(b.ids, rng.random((B, 4)))
    q = B / N
    return total, (T - 1) * B * q, math.sqrt((T - 1) * B * q * (1 - q) * (N - B) / (N - 1))


def test_uniform_batches_are_independent_of_the_previous_one():
    """Marginal counts cannot see a sampler that avoids (or favours) what it just served; the overlap
    of consecutive batches can."""
    total, mean, sd = consecutive_overlap("uniform")
    assert abs(total - mean) < 4.5 * sd, (total, mean, sd)


def high_priority_share(sampler: str) -> tuple[int, float, float]:
    """Problems 0..9 always score half their rollouts (ω = 0.25), 10..19 all (ω = 0, solved).
    Returns (draws of 0..9, mean and standard deviation of that count for a uniform sampler)."""
    counts = draw_counts(sampler, lambda ids: rewards_for(np.where(ids < 10, 2, 4), 4))
    # Per batch the number of 0..9 drawn is hypergeometric(N, K = 10, B): mean B·K/N, and variance
    # B·(K/N)(1 - K/N)(N - B)/(N - 1); batches are independent.
    mean = T * B * 10 / N
    sd = math.sqrt(T * B * 0.5 * 0.5 * (N - B) / (N - 1))
    return int(counts[:10].sum()), mean, sd


def test_uniform_does_not_prefer_high_priorities():
    high, mean, sd = high_priority_share("uniform")
    assert abs(high - mean) < 4.5 * sd, (high, mean, sd)


def test_the_priority_preference_check_can_fail():
    high, mean, sd = high_priority_share("prioritized")
    assert abs(high - mean) > 4.5 * sd


def test_uniform_serves_solved_and_unsolved_problems_without_parking():
    buf = buffer_with(make_cfg("uniform"), 6)
    b = buf.sample(6)
    buf.update(b.ids, rewards_for([4, 4, 4, 0, 0, 0], 4))
    assert buf.stats()["buffer/solved"] == 3 and buf.stats()["buffer/unsolved"] == 3
    b = buf.sample(6)
    assert len(b) == 6 and not b.retest.any() and (b.weights == 1).all()


@pytest.mark.parametrize("oversample, batch, drawn", [(2.0, 3, 6), (1.5, 5, 8), (1.0, 4, 4), (1.1, 10, 11), (3.0, 1, 3),
                                                      # 1.1 * 50 is 55.00000000000001 in floating point
                                                      (1.1, 50, 55), (2.2, 25, 55), (1.01, 99, 100)])
def test_dapo_filter_draws_ceil_oversample_times_the_batch(oversample, batch, drawn):
    buf = buffer_with(make_cfg("dapo_filter", dapo_filter=DapoFilterConfig(oversample=oversample)), 120)
    b = buf.sample(batch)
    assert len(b) == drawn
    assert len(set(b.ids.tolist())) == drawn and not b.retest.any() and (b.weights == 1).all()
    buf.check_invariants()


def test_dapo_filter_draws_what_is_left_when_fewer_are_available():
    buf = buffer_with(make_cfg("dapo_filter"), 7)
    assert len(buf.sample(3)) == 6
    assert len(buf.sample(3)) == 1
    assert len(buf.sample(3)) == 0
