"""``per``: single-draw probabilities (ω + eps)^α / Σ, empirical first draws match them, importance
weights (N·P)^-β / max, and no batch repeats a problem."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer_helpers import FAST, buffer_with, chi2_critical, make_cfg, pearson, rewards_for
from rlpp.buffer import HEAP
from rlpp.config.schema import PERConfig

SUCCESSES = [1, 2, 3, 4, 5, 6, 7, 4, 1, 2]  # of 8: ω = p(1-p) from 7/64 to 1/4, all in the heap


def per_buffer(alpha=0.6, beta=0.4, eps=1e-3, successes=SUCCESSES, group_size=8, seed=0):
    n = len(successes)
    buf = buffer_with(make_cfg("per", retest=dict(mode="off"), per=PERConfig(alpha=alpha, beta=beta, eps=eps)), n, seed)
    b = buf.sample(n)
    assert sorted(b.ids.tolist()) == list(range(n))
    buf.update(np.arange(n), rewards_for(successes, group_size))
    assert (buf.pools() == HEAP).all()
    return buf


def target(buf, alpha, eps):
    """The test's own computation of P(i) from p̂, not from the buffer's priority array."""
    p = buf.p_hat
    mass = (p * (1 - p) + eps) ** alpha
    return mass / mass.sum()


@pytest.mark.parametrize("alpha, eps", [(0.6, 1e-3), (1.0, 1e-3), (0.0, 1e-3), (0.5, 0.1)])
def test_single_draw_probabilities_follow_the_priorities(alpha, eps):
    buf = per_buffer(alpha=alpha, eps=eps)
    probs = buf.sampler.probabilities(np.arange(10))
    np.testing.assert_allclose(probs, target(buf, alpha, eps), rtol=1e-12)
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    if alpha == 0:
        np.testing.assert_allclose(probs, 0.1, rtol=1e-12)
    else:  # higher priority, higher probability
        order = np.argsort(buf.priority, kind="stable")
        assert (np.diff(probs[order]) >= -1e-15).all()


def test_in_flight_problems_have_zero_probability_and_the_rest_renormalize():
    buf = per_buffer(alpha=1.0)
    b = buf.sample(3)
    probs = buf.sampler.probabilities(np.arange(10))
    assert (probs[b.ids] == 0).all()
    rest = np.setdiff1d(np.arange(10), b.ids)
    t = target(buf, 1.0, 1e-3)[rest]
    np.testing.assert_allclose(probs[rest], t / t.sum(), rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_first_draws_match_the_target_distribution(alpha):
    """5000 batches of one, each released (so priorities and the target stay fixed): Pearson's
    chi-square against the target, df = 9, at α = 0.001 (independent draws: an ordinary multinomial)."""
    buf = per_buffer(alpha=alpha, seed=3)
    p = target(buf, alpha, 1e-3)
    draws = 5000
    counts = np.zeros(10, dtype=np.int64)
    for _ in range(draws):
        b = buf.sample(1)
        counts[b.ids[0]] += 1
        buf.release(b.ids)
    np.testing.assert_allclose(buf.sampler.probabilities(np.arange(10)), p, rtol=1e-12)
    critical = chi2_critical(9, 0.001)
    assert pearson(counts, draws * p) < critical, (counts, draws * p)
    # The test discriminates: the same counts are far from uniform.
    assert pearson(counts, np.full(10, draws / 10)) > critical


@pytest.mark.parametrize("beta", [0.4, 1.0, 0.0])
def test_importance_weights_are_normalised_inverse_probabilities(beta):
    buf = per_buffer(alpha=1.0, beta=beta, seed=1)
    for _ in range(20):
        available = np.flatnonzero(buf.pools() == HEAP)
        probs = buf.sampler.probabilities(np.arange(10))
        b = buf.sample(4)
        w = (len(available) * probs[b.ids]) ** -beta
        np.testing.assert_allclose(b.weights, w / w.max(), rtol=1e-12)
        assert b.weights.max() == 1.0
        buf.release(b.ids[:2])
        buf.update(b.ids[2:], rewards_for([3, 5], 8))


def test_importance_weights_are_one_for_retests():
    buf = buffer_with(make_cfg("per", retest=dict(every_steps=1, per_round=1)), 6)
    b = buf.sample(6)
    buf.update(b.ids, rewards_for([4, 4, 1, 2, 3, 2], 4))  # two solved
    b = buf.sample(3)
    assert b.retest.tolist() == [True, False, False]
    assert b.weights[0] == 1.0


@settings(max_examples=50, **FAST)
@given(n=st.integers(2, 60), batch=st.integers(1, 70), seed=st.integers(0, 2**16), alpha=st.sampled_from([1.0, 0.6]))
def test_batches_never_repeat_a_problem_even_with_skewed_mass(n, batch, seed, alpha):
    """One problem at ω = 1/4, the rest at ω ≈ 1e-3: stratified draws hit the heavy one many times
    over and must redraw the rest."""
    succ = [500] + [1] * (n - 1)
    buf = per_buffer(alpha=alpha, successes=succ, group_size=1000, seed=seed)
    b = buf.sample(batch)
    assert len(b) == min(batch, n)
    assert len(set(b.ids.tolist())) == len(b)
    buf.check_invariants()
