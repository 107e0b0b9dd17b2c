"""The thompson sampler: its discounted Beta posterior, and what it draws (statistical tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlpp.buffer import PriorityBuffer
from rlpp.config.schema import BufferConfig, ConfigError, ThompsonConfig
from tests.buffer.buffer_helpers import rewards_for


def make(n: int, seed: int = 0, **kw) -> PriorityBuffer:
    return PriorityBuffer(BufferConfig(sampler="thompson", thompson=ThompsonConfig(**kw)), n, seed=seed)


def visit(buf: PriorityBuffer, ids, successes, g: int = 8, step: int | None = None) -> None:
    """Serve exactly ``ids`` (draw until they are in flight, handing the rest back) and update them."""
    ids = list(ids)
    while True:
        b = buf.sample(buf.num_problems, step)
        keep = np.isin(b.ids, ids)
        buf.release(b.ids[~keep])
        if keep.all() or set(b.ids[keep].tolist()) == set(ids):
            break
    order = {i: k for k, i in enumerate(ids)}
    got = b.ids[keep]
    buf.update(got, rewards_for([successes[order[i]] for i in got.tolist()], g))


def z_ok(hits: int, trials: int, p: float, z: float = 4.0) -> bool:
    """Whether ``hits`` of ``trials`` is within z standard errors of a binomial(p) count."""
    return abs(hits - trials * p) <= z * math.sqrt(trials * p * (1 - p)) + 1


def test_the_posterior_holds_the_discounted_evidence_of_every_visit():
    buf = make(3, discount=0.9, prior_successes=1.0, prior_failures=2.0)
    visit(buf, [0, 1], [6, 0], step=1)
    visit(buf, [0], [2], step=4)
    a, b = buf.sampler.posterior(np.array([0, 1, 2]), step=10)
    # problem 0: 6/8 at step 1 faded by 0.9^3 by step 4, then 2/8; both fade 0.9^6 more by step 10
    s0, f0 = (6 * 0.9**3 + 2) * 0.9**6, (2 * 0.9**3 + 6) * 0.9**6
    np.testing.assert_allclose(a, [1 + s0, 1 + 0, 1])
    np.testing.assert_allclose(b, [2 + f0, 2 + 8 * 0.9**9, 2])


def test_old_evidence_fades_back_to_the_prior():
    buf = make(2, discount=0.99)
    visit(buf, [0], [0], step=1)
    a, b = buf.sampler.posterior(np.array([0]), step=2000)
    assert a[0] == pytest.approx(1.0) and b[0] == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("score", ["signal", "variance"])
def test_exact_thompson_picks_each_problem_with_its_chance_of_the_best_draw(score):
    """candidates=0 scores every problem: with a batch of one, a problem is served exactly when its
    posterior draw scores highest. The frequencies must match that chance, computed independently."""
    buf = make(3, seed=1, candidates=0, discount=1.0, score=score)
    visit(buf, [0, 1, 2], [4, 7, 1], step=1)
    visit(buf, [0, 1, 2], [3, 8, 0], step=2)
    a, b = buf.sampler.posterior(np.arange(3))
    rng = np.random.default_rng(123)
    p = rng.beta(a, b, size=(400_000, 3))
    s = 1 - p**8 - (1 - p) ** 8 if score == "signal" else p * (1 - p)
    expected = np.bincount(s.argmax(axis=1), minlength=3) / len(s)
    trials = 6000
    counts = np.zeros(3, dtype=int)
    for _ in range(trials):
        got = buf.sample(1, step=2)
        counts[got.ids[0]] += 1
        buf.release(got.ids)
    assert expected[0] > 0.5 and expected[1] < 0.2  # the 7/8-then-8/8 problem is predictably uninformative
    for k in range(3):
        assert z_ok(counts[k], trials, expected[k]), (counts, expected)


def test_the_candidate_draw_keeps_uniform_spread_over_the_pool():
    """With candidates=3 and a batch of one, an informative problem among nine predictably zero-variance
    ones is served exactly when it is one of the 3 uniform candidates: probability 3/10."""
    buf = make(10, seed=2, candidates=3, discount=1.0)
    visit(buf, range(1, 10), [8] * 9, g=8, step=1)
    for step in range(2, 60):  # 9 x 400 successes: p̃ ≈ 1, signal ≈ 0
        visit(buf, range(1, 10), [8] * 9, g=8, step=step)
    trials, hits = 5000, 0
    for _ in range(trials):
        got = buf.sample(1, step=60)
        hits += int(got.ids[0] == 0)
        buf.release(got.ids)
    assert z_ok(hits, trials, 0.3), hits


def test_a_failed_problem_is_not_parked_and_still_comes_back():
    buf = make(20, seed=3, candidates=4)
    visit(buf, [5], [0], step=1)  # one 0/8 group: under the paper's rule it would park
    seen = 0
    for _ in range(2000):
        got = buf.sample(4, step=2)  # one step, so its evidence does not fade meanwhile
        seen += int(5 in got.ids)
        buf.release(got.ids)
    assert 0 < seen < 2000 * 4 / 20  # drawn, less often than uniform would
    buf.check_invariants()


def test_batches_never_repeat_a_problem_and_run_dry_only_when_all_are_in_flight():
    buf = make(50, seed=4, candidates=4)
    first = buf.sample(30)
    second = buf.sample(30)
    assert len(first) == 30 and len(second) == 20
    assert not set(first.ids.tolist()) & set(second.ids.tolist())
    buf.update(first.ids, rewards_for([3] * 30, 8))
    buf.check_invariants()


@pytest.mark.parametrize("key, value", [("score", "entropy"), ("candidates", 1), ("candidates", -2),
                                        ("discount", 0.0), ("discount", 1.5), ("prior_failures", 0.0)])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"buffer.thompson.{key}"):
        PriorityBuffer(BufferConfig(sampler="thompson", thompson=ThompsonConfig(**{key: value})), 10)
