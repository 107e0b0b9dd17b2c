"""Informed first draws: the cluster prior (``buffer.prior.mode=cluster``) for thompson, mopps, skip, greso
and prioritized (posterior), and the ``oracle`` sampler's selection by measured pass rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlpp.buffer import PriorityBuffer
from rlpp.buffer.prior import ClusterPrior, beta_moment
from rlpp.config.buffer import GresoConfig, OracleConfig, PrioritizedConfig, PriorConfig, SkipConfig
from rlpp.config.schema import BufferConfig
from tests.buffer.buffer_helpers import assert_state_equal, rewards_for
from tests.buffer.test_anchors import serve, z_ok


def clustered(sampler: str, clusters, seed: int = 0, strength: float = 4.0, discount: float = 1.0, **kw) -> PriorityBuffer:
    cfg = BufferConfig(sampler=sampler, prior=PriorConfig(mode="cluster", strength=strength, discount=discount), **kw)
    return PriorityBuffer(cfg, len(clusters), seed=seed, clusters=np.asarray(clusters))


def test_a_cluster_pools_the_faded_rollouts_of_its_problems_smoothed_by_the_flat_prior():
    prior = ClusterPrior(np.array([0, 0, 1, 1, 2]), successes=1.0, failures=1.0, strength=4.0, discount=0.9)
    prior.observe(np.array([0, 1, 2]), np.array([8, 6, 0]), 8, step=1)
    prior.observe(np.array([0]), np.array([2]), 8, step=3)
    # cluster 0 at step 5: (14 x 0.9^2 + 2) x 0.9^2 successes of (16 x 0.9^2 + 8) x 0.9^2 rollouts
    s0, n0 = (14 * 0.81 + 2) * 0.81, (16 * 0.81 + 8) * 0.81
    s1, n1 = 0.0, 8 * 0.9**4
    r = prior.rate(np.array([0, 1, 2, 3, 4]), step=5)
    np.testing.assert_allclose(r, [(s0 + 1) / (n0 + 2)] * 2 + [(s1 + 1) / (n1 + 2)] * 2 + [0.5])
    a, b = prior(np.array([0, 4]), step=5)
    np.testing.assert_allclose(a, 4 * r[[0, 4]])
    np.testing.assert_allclose(b, 4 * (1 - r[[0, 4]]))


@pytest.mark.parametrize("sampler", ["thompson", "mopps"])
def test_a_problem_never_drawn_starts_from_its_clusters_rate(sampler):
    buf = clustered(sampler, [0, 0, 0, 1, 1, 1], strength=6.0)
    serve(buf, [0, 1, 3], [8, 8, 0])  # cluster 0 solved everything, cluster 1 nothing
    a, b = buf.sampler.posterior(np.array([2, 5]))
    r0, r1 = (16 + 1) / (16 + 2), (0 + 1) / (8 + 2)
    np.testing.assert_allclose(a, [6 * r0, 6 * r1])
    np.testing.assert_allclose(b, [6 * (1 - r0), 6 * (1 - r1)])
    assert buf.sampler.predict(np.array([2]))[0] == pytest.approx(r0)


def test_mopps_with_a_cluster_prior_prefers_the_unseen_problems_of_a_mixed_cluster():
    """Cluster 0 is always solved, cluster 1 mixed: a batch of one among its candidates mostly serves
    cluster 1's unseen problems, which a flat prior could not tell apart."""
    clusters = [0] * 10 + [1] * 10
    buf = clustered("mopps", clusters, seed=3, strength=8.0)
    serve(buf, [0, 1, 10, 11], [8, 8, 4, 4])
    hits, trials = 0, 2000
    for _ in range(trials):
        got = buf.sample(1, step=buf.step)
        hits += int(got.ids[0] >= 10)
        buf.release(got.ids)
    assert hits / trials > 0.9
    flat = PriorityBuffer(BufferConfig(sampler="mopps"), 20, seed=3)
    serve(flat, [0, 1, 10, 11], [8, 8, 4, 4])
    unseen_hits = 0
    for _ in range(trials):
        got = flat.sample(1, step=flat.step)
        unseen_hits += int(got.ids[0] in set(range(2, 10)))
        flat.release(got.ids)
    assert unseen_hits / trials > 0.2  # a flat prior draws cluster 0's unseen problems as often as cluster 1's


@pytest.mark.parametrize("sampler", ["skip", "greso"])
def test_skip_and_greso_judge_a_problem_never_drawn_by_its_clusters_prior_predictive(sampler):
    """Cluster 0 always solved: its unseen problems get a virtual all-solved first group with probability
    E[p^G] under the cluster prior, and are then skipped as after one easy group."""
    n = 2000
    clusters = np.repeat([0, 1], n // 2)
    kw = {"skip": SkipConfig(initial=0.9, adapt_rate=1e-9, explore=0.05)} if sampler == "skip" else \
        {"greso": GresoConfig(p_easy=0.2, p_hard=0.2, adjust=0.0)}
    buf = clustered(sampler, clusters, seed=5, strength=8.0, **kw)
    seen = [0, 1, 2, 3, n // 2, n // 2 + 1, n // 2 + 2, n // 2 + 3]
    serve(buf, seen, [8, 8, 8, 8, 4, 4, 4, 4])
    a, b = buf.prior(np.array([4]), buf.step)
    virtual = beta_moment(a, b, 8)[0]  # chance that an unseen cluster-0 problem is judged easy
    skip = 0.9 if sampler == "skip" else 1 - 0.2
    keep = 1 - virtual * skip
    hits = total = 0
    for _ in range(300):
        got = buf.sample(20, step=buf.step)
        fresh = got.ids[~np.isin(got.ids, seen)]
        hits += int((fresh < n // 2).sum())
        total += len(fresh)
        buf.release(got.ids)
    share = keep / (1 + keep)
    assert virtual > 0.3
    assert abs(hits / total - share) < 4 * math.sqrt(share * (1 - share) / total) + 0.01, (hits / total, share)


def test_prioritized_posterior_scores_unseen_problems_by_their_cluster_and_refreshes_every_k_steps():
    clusters = np.repeat([0, 1, 2], 20)
    cfg = BufferConfig(sampler="prioritized", prioritized=PrioritizedConfig(priority="posterior", park_after=3),
                       prior=PriorConfig(mode="cluster", strength=4.0, discount=1.0, refresh_steps=2))
    buf = PriorityBuffer(cfg, 60, seed=6, clusters=clusters)
    assert np.allclose(buf.priority, 2 * 2 / (4 * 5))  # before any evidence: E[p(1-p)] under Beta(2, 2)
    serve(buf, [0, 1, 20, 21, 40, 41], [8, 8, 4, 4, 0, 0])  # step 1
    buf.check_invariants()
    before = buf.priority[[2, 22, 42]].copy()
    got = buf.sample(4)  # step 2: a refresh (2 steps since the last) re-scores every waiting problem
    buf.release(got.ids)
    buf.check_invariants()
    after = buf.priority[[2, 22, 42]]
    assert not np.allclose(before, after) and after[1] > after[0] and after[1] > after[2]
    a, b = buf.prior(np.array([22]), buf.last_refresh)
    assert after[1] == pytest.approx(a[0] * b[0] / ((a[0] + b[0]) * (a[0] + b[0] + 1)))
    got = buf.sample(3)  # the greedy heap serves the mixed cluster's unseen problems first
    assert set(got.ids.tolist()) <= set(range(20, 40))


@pytest.mark.parametrize("sampler", ["thompson", "mopps", "skip", "greso", "prioritized"])
def test_a_cluster_prior_resumes_exactly(sampler):
    clusters = np.arange(50) % 5
    kw = {"prioritized": PrioritizedConfig(priority="posterior", selection="proportional")} if sampler == "prioritized" else {}
    make = lambda: clustered(sampler, clusters, seed=7, discount=0.95, **kw)  # noqa: E731
    a, rng = make(), np.random.default_rng(0)
    for _ in range(12):
        b = a.sample(8)
        a.update(b.ids, rewards_for(rng.integers(0, 9, len(b)), 8))
    b = make()
    b.load_state_dict(a.state_dict())
    assert_state_equal(a.state_dict(), b.state_dict())
    for _ in range(6):
        x, y = a.sample(8), b.sample(8)
        assert np.array_equal(x.ids, y.ids)
        r = rewards_for(rng.integers(0, 9, len(x)), 8)
        a.update(x.ids, r)
        b.update(y.ids, r)
    a.check_invariants()
    assert_state_equal(a.state_dict(), b.state_dict())


def test_a_cluster_prior_without_labels_is_refused():
    cfg = BufferConfig(sampler="thompson", prior=PriorConfig(mode="cluster"))
    with pytest.raises(ValueError, match="data.group_key"):
        PriorityBuffer(cfg, 10)
    with pytest.raises(ValueError, match="clusters must be 10 ints"):
        PriorityBuffer(cfg, 10, clusters=np.zeros(9, dtype=int))


# ---------------------------------------------------------------------------------------------- oracle
def test_the_oracle_draws_in_proportion_to_the_measured_chance_of_a_signal_carrying_group():
    """Batch of one from four problems with measured rates 0.5, 0.1, 1.0, 0.0: weights 1 − p^8 − (1 − p)^8
    floored at 0.01."""
    buf = PriorityBuffer(BufferConfig(sampler="oracle", oracle=OracleConfig(floor=0.01)), 4, seed=8)
    assert buf.oracle_request() == (16, 25)
    rates = np.array([0.5, 0.1, 1.0, 0.0])
    buf.set_oracle_rates(np.arange(4), rates)
    w = np.maximum(1 - rates**8 - (1 - rates) ** 8, 0.01)
    expected = w / w.sum()
    counts, trials = np.zeros(4, dtype=int), 8000
    for _ in range(trials):
        got = buf.sample(1, step=1)
        counts[got.ids[0]] += 1
        buf.release(got.ids)
    for k in range(4):
        assert z_ok(counts[k], trials, expected[k]), (counts / trials, expected)
    assert buf.sampler.predict(np.arange(4)).tolist() == rates.tolist()


def test_oracle_rates_reach_problems_in_flight_when_they_return_and_bad_rates_are_refused():
    buf = PriorityBuffer(BufferConfig(sampler="oracle"), 6, seed=9)
    got = buf.sample(3)
    buf.set_oracle_rates(np.arange(6), np.array([1.0] * 6))
    buf.update(got.ids, rewards_for([4, 4, 4], 8))
    buf.check_invariants()
    assert np.allclose(buf.sampler.tree.leaf(np.arange(6)), 0.01)
    with pytest.raises(ValueError, match="rates must be in"):
        buf.set_oracle_rates(np.array([0]), np.array([1.5]))
    with pytest.raises(ValueError, match="takes no measured pass rates"):
        PriorityBuffer(BufferConfig(sampler="uniform"), 3).set_oracle_rates(np.array([0]), np.array([0.5]))
