"""The published anchors as presets: ``mopps`` and ``greso`` each equal their paper's rule (the update
recursions written out independently here, and statistical tests of what they draw), and the
``random_skip`` control."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlpp.buffer import PriorityBuffer
from rlpp.config.schema import BufferConfig
from rlpp.config.buffer import GresoConfig, MoppsConfig, RandomSkipConfig
from tests.buffer.buffer_helpers import rewards_for


def z_ok(hits: int, trials: int, p: float, z: float = 4.0) -> bool:
    return abs(hits - trials * p) <= z * math.sqrt(trials * p * (1 - p)) + 1


def serve(buf: PriorityBuffer, ids, successes, g: int = 8) -> None:
    """Serve exactly ``ids`` (draw the pool, hand the rest back) and update them with these successes."""
    b = buf.sample(buf.num_problems)
    keep = np.isin(b.ids, list(ids))
    buf.release(b.ids[~keep])
    order = {i: k for k, i in enumerate(ids)}
    got = b.ids[keep]
    buf.update(got, rewards_for([successes[order[i]] for i in got.tolist()], g))


# ---------------------------------------------------------------------------------------------- mopps
def mopps(n: int, seed: int = 0, **kw) -> PriorityBuffer:
    return PriorityBuffer(BufferConfig(sampler="mopps", mopps=MoppsConfig(**kw)), n, seed=seed)


def test_mopps_updates_alpha_and_beta_exactly_as_the_paper_at_every_visit():
    """α ← λα + (1 − λ)α₀ + s·n, β ← λβ + (1 − λ)β₀ + (1 − s)·n with s the group's success rate
    (MoPPS ``PosteriorSampler.train``), kept per problem in a dict as the paper's code does."""
    lam, a0, b0, g = 0.5, 1.0, 2.0, 8
    buf = mopps(4, decay=lam, prior_successes=a0, prior_failures=b0)
    alpha, beta = {}, {}
    visits = [([0, 1], [8, 3]), ([0, 2], [0, 5]), ([0, 1, 3], [6, 8, 1]), ([1], [2])]
    for ids, succ in visits:
        serve(buf, ids, succ, g)
        for i, c in zip(ids, succ):
            s = c / g
            alpha[i] = alpha.get(i, a0) * lam + a0 * (1 - lam) + s * g
            beta[i] = beta.get(i, b0) * lam + b0 * (1 - lam) + (1 - s) * g
    a, b = buf.sampler.posterior(np.arange(4))
    np.testing.assert_allclose(a, [alpha[i] for i in range(4)])
    np.testing.assert_allclose(b, [beta[i] for i in range(4)])


def test_mopps_serves_the_candidate_whose_draw_is_closest_to_the_target():
    """All three problems are candidates (candidates x B >= pool): a batch of one serves the problem whose
    r ~ Beta is closest to 0.5; its frequency must match that chance, computed independently."""
    buf = mopps(3, seed=4, candidates=8, decay=1.0)
    serve(buf, [0, 1, 2], [4, 8, 1])
    serve(buf, [0, 1, 2], [3, 8, 0])
    a, b = buf.sampler.posterior(np.arange(3))
    r = np.random.default_rng(7).beta(a, b, size=(400_000, 3))
    expected = np.bincount(np.abs(r - 0.5).argmin(axis=1), minlength=3) / len(r)
    counts, trials = np.zeros(3, dtype=int), 6000
    for _ in range(trials):
        got = buf.sample(1, step=2)
        counts[got.ids[0]] += 1
        buf.release(got.ids)
    assert expected[0] > 0.6 and expected[1] < 0.05
    for k in range(3):
        assert z_ok(counts[k], trials, expected[k]), (counts, expected)


def test_mopps_draws_its_candidates_uniformly_from_the_pool():
    """candidates=2, batch of one: the informative problem is served only when it is one of the two
    uniform candidates, i.e. with probability 1 − C(n-1, 2) / C(n, 2) = 2 / n (it then always wins)."""
    n = 10
    buf = mopps(n, seed=5, candidates=2, decay=1.0)
    for _ in range(6):  # problem 0 mixed, the rest always solved: their draws sit near 1
        serve(buf, list(range(n)), [4] + [8] * (n - 1))
    hits, trials = 0, 4000
    for _ in range(trials):
        got = buf.sample(1, step=buf.step)
        hits += int(got.ids[0] == 0)
        buf.release(got.ids)
    assert z_ok(hits, trials, 2 / n), hits / trials


# ---------------------------------------------------------------------------------------------- greso
def greso(n: int, seed: int = 0, **kw) -> PriorityBuffer:
    return PriorityBuffer(BufferConfig(sampler="greso", greso=GresoConfig(**kw)), n, seed=seed)


@pytest.mark.parametrize("side, k, p, keep", [("easy", 2, 0.5, 0.25), ("hard", 3, 0.6, 0.216),
                                              ("hard", 10, 0.5, 0.01)])
def test_greso_skips_after_k_zero_variance_groups_with_one_minus_max_p_to_the_k_and_the_floor(side, k, p, keep):
    """Half the pool had k easy (or hard) groups in a row, the other half mixed ones. A uniform draw keeps
    a skip candidate with max(p^k, 0.01), so its share of a small batch is keep / (1 + keep)."""
    n = 2000
    buf = greso(n, seed=1, p_easy=p, p_hard=p, adjust=0.0)
    zero = 8 if side == "easy" else 0
    for _ in range(k):
        serve(buf, list(range(n)), [zero] * (n // 2) + [4] * (n // 2))
    hits = total = 0
    for _ in range(300):
        b = buf.sample(20, step=buf.step)
        hits += int((b.ids < n // 2).sum())
        total += len(b)
        buf.release(b.ids)
    share = keep / (1 + keep)
    assert abs(hits / total - share) < 4 * math.sqrt(share * (1 - share) / total) + 0.005, (hits / total, share)


def test_greso_counts_only_the_latest_groups_in_a_row_and_never_skips_a_problem_without_a_trace():
    buf = greso(4, seed=2)
    serve(buf, [0, 1, 2], [8, 0, 8])
    serve(buf, [0, 1, 2], [8, 1, 4])  # 1/8 = 0.125 > 0.11: not hard; 4/8 breaks problem 2's run
    assert buf.sampler.easy.tolist() == [2, 0, 0, 0] and buf.sampler.hard.tolist() == [0, 0, 0, 0]
    for _ in range(200):  # problem 3 has no trace: never skipped
        b = buf.sample(1, step=buf.step)
        buf.release(b.ids)
    assert not buf.sampler.skips(np.array([3, 3, 3, 3, 3, 3, 3, 3])).any()


def test_greso_steers_p_easy_and_p_hard_by_the_steps_shares_once_the_pool_has_been_drawn():
    """Targets 0.25 / 3 easy, 0.25 x 2 / 3 hard. Each step with more easy groups than its target lowers
    p_easy by 0.01; a step with no hard groups raises p_hard by 0.01; not before the pool was drawn once."""
    n, b = 40, 10
    buf = greso(n, seed=3)
    for step in range(1, 9):
        got = buf.sample(b)
        buf.update(got.ids, rewards_for([8] * 5 + [4] * 5, 8))
    # Steps 1..4 drew the pool once; adjustments happen at the draws of steps 5..8 (using steps 4..7).
    assert buf.sampler.p.tolist() == pytest.approx([0.5 - 0.04, 0.5 + 0.04])
    for _ in range(200):
        got = buf.sample(b)
        buf.update(got.ids, rewards_for([8] * 5 + [4] * 5, 8))
    assert buf.sampler.p.tolist() == pytest.approx([0.05, 0.95])  # clamped to [min_p, max_p]


# ----------------------------------------------------------------------------------------- random_skip
def test_random_skip_passes_over_a_fixed_random_share_of_the_pool_until_nothing_else_is_left():
    n = 100
    buf = PriorityBuffer(BufferConfig(sampler="random_skip", random_skip=RandomSkipConfig(rate=0.3)), n, seed=4)
    skipped = np.flatnonzero(buf.sampler.skipped_ids)
    assert len(skipped) == 30
    for _ in range(50):
        b = buf.sample(20)
        assert not np.isin(b.ids, skipped).any()
        buf.update(b.ids, rewards_for([8] * len(b), 8))
    b = buf.sample(90)  # only 70 are not skipped: 20 skipped ones fill the batch
    assert len(b) == 90 and np.isin(b.ids, skipped).sum() == 20
    other = PriorityBuffer(BufferConfig(sampler="random_skip", random_skip=RandomSkipConfig(rate=0.3)), n, seed=5)
    assert not np.array_equal(np.flatnonzero(other.sampler.skipped_ids), skipped)  # the seed picks the subset
