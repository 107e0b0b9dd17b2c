"""The ``prioritized`` sampler's variants (``buffer.prioritized``) and the ``paper`` preset.

Each variant gets a test of what it promises; a state machine then runs random mixtures of them
against a model that tracks pools and streaks independently, with invariants checked at every step.
"""

from __future__ import annotations

import math
import pickle
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from buffer_helpers import FAST, assert_batches_equal, assert_state_equal, buffer_with, chi2_critical, make_cfg, pearson, rewards_for
from rlpp.buffer import HEAP, IN_FLIGHT, SOLVED, UNSOLVED, PriorityBuffer
from rlpp.config.schema import BufferConfig, ConfigError, PrioritizedConfig, RetestConfig

SUCCESSES = [1, 2, 3, 4, 5, 6, 7, 4, 1, 2]  # of 8: all in the heap, ω from 7/64 to 1/4


def variant(sampler="prioritized", retest=None, stats="latest", **kw) -> BufferConfig:
    return make_cfg(sampler, retest=retest or dict(mode="off"), stats=stats, prioritized=PrioritizedConfig(**kw))


def visited(cfg: BufferConfig, successes=SUCCESSES, group=8, seed=0) -> PriorityBuffer:
    n = len(successes)
    buf = buffer_with(cfg, n, seed)
    b = buf.sample(n)
    assert sorted(b.ids.tolist()) == list(range(n))
    buf.update(np.arange(n), rewards_for(successes, group))
    buf.check_invariants()
    return buf


def first_draw_counts(buf: PriorityBuffer, draws: int) -> np.ndarray:
    """Batches of one, each released, so the distribution stays fixed."""
    counts = np.zeros(buf.num_problems)
    step = buf.step
    for _ in range(draws):
        step += 1
        b = buf.sample(1, step=step)
        counts[b.ids] += 1
        buf.release(b.ids)
    return counts


# ------------------------------------------------------------------ stochastic selection
@pytest.mark.parametrize("selection, kw", [("proportional", dict(alpha=1.0, eps=1e-3)),
                                           ("proportional", dict(alpha=0.5, eps=0.05)),
                                           ("softmax", dict(temperature=0.05)),
                                           ("softmax", dict(temperature=0.02))])
def test_stochastic_selection_draws_follow_the_target(selection, kw):
    buf = visited(variant(selection=selection, **kw))
    p = buf.p_hat
    w = p * (1 - p)  # the test's own priorities
    mass = (w + kw.get("eps", 0)) ** kw.get("alpha", 1) if selection == "proportional" else np.exp(w / kw["temperature"])
    target = mass / mass.sum()
    np.testing.assert_allclose(buf.sampler.probabilities(np.arange(10)), target, rtol=1e-9)
    draws = 4000
    counts = first_draw_counts(buf, draws)
    # Pearson's chi-square at alpha = 1e-4: a false alarm about once in 10,000 seeds.
    assert pearson(counts, draws * target) < chi2_critical(9, 1e-4)
    buf.check_invariants()


def test_stochastic_selection_serves_more_than_the_top_but_prefers_it():
    """Greedy serves the same top-3 every time; softmax spreads batches while favouring high ω."""
    greedy, soft = visited(variant()), visited(variant(selection="softmax", temperature=0.05))
    top = set(np.argsort(-greedy.priority, kind="stable")[:3].tolist())
    assert set(first_draw_counts(greedy, 50).nonzero()[0].tolist()) == {int(np.argmax(greedy.priority))}
    counts = first_draw_counts(soft, 3000)
    assert (counts > 0).sum() == 10
    assert counts[sorted(top)].sum() / 3 > counts.mean()


# ------------------------------------------------------------------ uniform share
def test_uniform_share_holds_on_average_and_reaches_parked_problems():
    """With retest off, parked problems return only through the uniform share; its share of
    batches is uniform_mix on average, and each of its draws is uniform over what is not in flight."""
    n, batch, mix = 40, 8, 0.25
    buf = buffer_with(variant(uniform_mix=mix), n, seed=3)
    b = buf.sample(n)
    succ = np.where(b.ids < 20, 8, 4)  # 0..19 all solved -> parked; the rest p = 0.5
    buf.update(b.ids, rewards_for(succ, 8))
    assert buf.stats()["buffer/solved"] == 20
    from_parked, steps = 0, 2000
    for _ in range(steps):
        b = buf.sample(batch)
        from_parked += int(b.retest.sum())
        assert (b.retest == (b.ids < 20)).all()  # flagged exactly when it came from a parked pool
        buf.release(b.ids)
    # Expected parked draws per batch: mix * batch * 20/40 (uniform over the 40 available).
    expect = steps * mix * batch * 0.5
    assert abs(from_parked - expect) < 5 * math.sqrt(expect)
    buf.check_invariants()


def test_uniform_share_is_stochastically_rounded():
    buf = visited(variant(uniform_mix=0.3))
    sizes = []
    for _ in range(3000):
        ids = buf._pop_uniform(5)  # the share of a batch of 5: 1 or 2, 1.5 on average
        sizes.append(len(ids))
        buf.available.insert(ids)  # put back: they never left their pools
    assert set(sizes) <= {1, 2}
    assert abs(np.mean(sizes) - 1.5) < 0.05


def test_uniform_share_and_retest_and_greedy_never_serve_a_problem_twice():
    n = 30
    buf = buffer_with(variant(uniform_mix=0.5, retest=dict(mode="fraction", batch_fraction=0.5)), n, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(300):
        b = buf.sample(int(rng.integers(1, 12)))
        assert len(np.unique(b.ids)) == len(b.ids)
        keep = rng.random(len(b.ids)) < 0.5
        buf.update(b.ids[keep], rewards_for(rng.choice([0, 8, 3], size=keep.sum()), 8))
        buf.release(b.ids[~keep])
        buf.check_invariants()
    # Stale entries are pruned: neither queue grows without bound.
    assert len(buf.parked) <= 2 * n + 1024 and len(buf.sampler.heap) <= 2 * n + 1024


# ------------------------------------------------------------------ posterior priority
def beta_priority(s, f, a0=1.0, b0=1.0):
    a, b = Fraction(a0) + s, Fraction(b0) + f
    return float(a * b / ((a + b) * (a + b + 1)))


def test_posterior_priority_uses_every_visit_and_never_hits_zero():
    buf = buffer_with(variant(priority="posterior", prior_successes=1.0, prior_failures=2.0, park_after=3), 2)
    hist = [(0, 8), (2, 8), (0, 8)]
    s = f = 0
    for succ, g in hist:
        b = buf.sample(2)
        assert sorted(b.ids.tolist()) == [0, 1]
        buf.update(b.ids, rewards_for(np.where(b.ids == 0, succ, g), g))  # problem 1 always solved
        s, f = s + succ, f + g - succ
        assert buf.priority[0] == pytest.approx(beta_priority(s, f, 1, 2), rel=1e-12)
        assert buf.priority[0] > 0
    # 24/24 successes: still positive, and smaller than a problem seen to fail sometimes.
    assert buf.priority[1] == pytest.approx(beta_priority(24, 0, 1, 2), rel=1e-12)
    assert 0 < buf.priority[1] < buf.priority[0]


def test_posterior_priority_decays_old_evidence():
    buf = buffer_with(variant(priority="posterior", stats="decayed", park_after=5), 1)
    s = f = Fraction(0)
    for succ in (8, 8, 0, 4):
        b = buf.sample(1)
        buf.update(b.ids, rewards_for([succ], 8))
        s, f = s / 2 + succ, f / 2 + (8 - succ)
    assert buf.priority[0] == pytest.approx(beta_priority(s, f), rel=1e-12)


def test_posterior_ranks_a_rare_success_above_a_long_run_of_passes():
    buf = visited(variant(priority="posterior", park_after=2), successes=[0, 8, 4])
    assert buf.priority[2] > buf.priority[0] > 0 and buf.priority[1] > 0
    assert (buf.pools() == HEAP).all()  # one zero-variance group parks nothing with park_after=2


# ------------------------------------------------------------------ parking after k groups
def test_park_after_k_consecutive_groups_and_a_mixed_group_resets():
    buf = buffer_with(variant(park_after=3), 1)

    def visit(successes):
        b = buf.sample(1)
        buf.update(b.ids, rewards_for([successes], 8))
        return buf.pools()[0]

    assert [visit(0), visit(0)] == [HEAP, HEAP]
    assert buf.priority[0] == 0.0  # point priority of an all-fail group: served last
    assert visit(3) == HEAP and buf.streak[0] == 0  # a mixed group resets the count
    assert [visit(8), visit(8), visit(0)] == [HEAP, HEAP, HEAP]  # direction changed: starts over
    assert buf.streak[0] == -1
    assert [visit(0), visit(0)] == [HEAP, UNSOLVED]
    buf.check_invariants()


def test_point_priority_with_park_after_serves_zero_variance_problems_last():
    buf = visited(variant(park_after=2), successes=[0, 8, 4, 2])
    b = buf.sample(2)
    assert sorted(b.ids.tolist()) == [2, 3]
    assert set(buf.sample(2).ids.tolist()) == {0, 1}


# ------------------------------------------------------------------ scaled retest
@pytest.mark.parametrize("scale, cap", [(1.0, 0.5), (2.0, 0.5), (0.5, 1.0), (4.0, 0.25)])
def test_scaled_retest_takes_a_share_proportional_to_the_parked_pools(scale, cap):
    n, batch = 40, 16
    buf = buffer_with(variant(retest=dict(mode="scaled", scale=scale, max_fraction=cap)), n)
    b = buf.sample(n)
    parked = 10
    buf.update(b.ids, rewards_for(np.where(b.ids < parked, 0, 4), 8))
    quota = math.ceil(min(cap, scale * parked / n) * batch)
    b = buf.sample(batch)
    assert int(b.retest.sum()) == min(quota, parked)
    assert (b.ids[b.retest] < parked).all()


def test_scaled_retest_reaches_every_parked_problem_faster_as_the_pool_grows():
    """Parked share 3/4 retests about 3/4 of each batch: 300 parked, batch 40, all back in 10 steps."""
    n = 400
    buf = buffer_with(variant(retest=dict(mode="scaled", scale=1.0, max_fraction=1.0)), n)
    b = buf.sample(n)
    buf.update(b.ids, rewards_for(np.where(b.ids < 300, 8, 4), 8))
    seen = set()
    for _ in range(10):
        b = buf.sample(40)
        assert b.retest.sum() == 30
        seen |= set(b.ids[b.retest].tolist())
        buf.update(b.ids, rewards_for(np.where(b.ids < 300, 8, 4), 8))  # solved again: back of the queue
    assert len(seen) == 300


# ------------------------------------------------------------------ age bonus
def starved_wait(age_bonus: float, steps: int = 200) -> int | None:
    """One low-priority problem (id 0, ω = 7/64) against a stream of p = 0.5 problems that always
    return at ω = 1/4; the step at which problem 0 is served again, or None."""
    n, batch = 12, 4
    buf = buffer_with(variant(age_bonus=age_bonus), n)
    b = buf.sample(n)
    buf.update(b.ids, rewards_for(np.where(b.ids == 0, 1, 4), 8))
    for step in range(steps):
        b = buf.sample(batch)
        if 0 in b.ids:
            return step
        buf.update(b.ids, rewards_for([4] * len(b.ids), 8))
    return None


def test_age_bonus_bounds_the_wait_that_greedy_leaves_unbounded():
    assert starved_wait(0.0) is None  # greedy alone starves it for good
    for c in (0.01, 0.002):
        wait = starved_wait(c, steps=1000)
        # It must beat problems that came back ω gap / c steps after it, and 11 compete for 4 slots.
        assert wait is not None and wait <= (0.25 - 7 / 64) / c + 11 / 4 + 1


def test_age_bonus_only_with_greedy_selection():
    with pytest.raises(ConfigError, match="age_bonus"):
        from rlpp.config.base import validate

        validate(BufferConfig(sampler="prioritized", prioritized=PrioritizedConfig(selection="softmax", age_bonus=0.01)), "buffer.")


# ------------------------------------------------------------------ the paper preset
def drive(buf: PriorityBuffer, steps=40, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        b = buf.sample(5)
        out.append(b)
        buf.update(b.ids, rewards_for(rng.choice([0, 8, 2, 5], size=len(b.ids)), 8))
    return out


def test_paper_ignores_the_variant_settings_and_the_retest_mode():
    periodic = dict(mode="periodic", every_steps=3, per_round=2)
    ref = drive(buffer_with(make_cfg("prioritized", retest=periodic), 30))
    odd = PrioritizedConfig(selection="softmax", uniform_mix=0.5, priority="posterior", park_after=3)
    paper = drive(buffer_with(make_cfg("paper", retest=dict(periodic, mode="off"), prioritized=odd), 30))
    for x, y in zip(ref, paper):
        assert_batches_equal(x, y)


def test_variant_defaults_and_paper_differ_only_where_configured():
    assert PrioritizedConfig(park_after=1).park_after == 1
    buf = buffer_with(make_cfg("paper", prioritized=PrioritizedConfig(priority="posterior")), 3)
    assert buf.variant.priority == "point" and buf.retest_mode == "periodic"


# ------------------------------------------------------------------ state machine over variants
VARIANTS = st.builds(
    PrioritizedConfig,
    selection=st.sampled_from(["greedy", "proportional", "softmax"]),
    uniform_mix=st.sampled_from([0.0, 0.3, 0.9]),
    priority=st.sampled_from(["point", "posterior"]),
    park_after=st.integers(1, 3),
    temperature=st.sampled_from([0.05, 1.0]),
    alpha=st.sampled_from([1.0, 0.0]),
)


class VariantMachine(RuleBasedStateMachine):
    """Random variants; the model tracks pools through its own streak count and checks every batch."""

    @initialize(data=st.data())
    def setup(self, data):
        d = data.draw
        v = d(VARIANTS, label="variant")
        if v.selection == "greedy" and d(st.booleans(), label="age"):
            v = PrioritizedConfig(**{**v.__dict__, "age_bonus": 0.01})
        mode = d(st.sampled_from(["periodic", "fraction", "scaled", "off"]), label="retest")
        self.cfg = make_cfg("prioritized", prioritized=v, stats=d(st.sampled_from(["latest", "decayed"]), label="stats"),
                            retest=RetestConfig(mode=mode, every_steps=2, per_round=1, batch_fraction=0.3,
                                                scale=d(st.sampled_from([0.5, 2.0]), label="scale")))
        self.n = n = d(st.integers(1, 14), label="n")
        self.buf = PriorityBuffer(self.cfg, n, seed=d(st.integers(0, 99), label="seed"))
        self.pool = np.full(n, HEAP, dtype=np.int8)
        self.origin = np.full(n, HEAP, dtype=np.int8)
        self.streak = np.zeros(n, dtype=int)
        self.outstanding: list[list[int]] = []

    @rule(data=st.data())
    def sample(self, data):
        batch = data.draw(st.integers(1, self.n + 1), label="batch")
        topup = data.draw(st.booleans(), label="topup")
        avail = np.flatnonzero(self.pool != IN_FLIGHT)
        b = self.buf.sample(batch, step=self.buf.step if topup else None)
        ids = b.ids.tolist()
        assert len(ids) == min(batch, len(avail)) and len(set(ids)) == len(ids)
        assert all(self.pool[i] != IN_FLIGHT for i in ids)
        assert (b.weights == 1).all()
        for i, r in zip(ids, b.retest.tolist()):
            assert r == (self.pool[i] in (SOLVED, UNSOLVED)), "retest flag must mean 'came from a parked pool'"
            self.origin[i], self.pool[i] = self.pool[i], IN_FLIGHT
        if ids:
            self.outstanding.append(ids)

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data())
    def answer(self, data):
        ids = self.outstanding.pop(data.draw(st.integers(0, len(self.outstanding) - 1), label="batch index"))
        if data.draw(st.booleans(), label="release"):
            self.buf.release(np.array(ids))
            self.pool[ids] = self.origin[ids]
            return
        succ = data.draw(st.lists(st.sampled_from([0, 4, 1, 4, 4]), min_size=len(ids), max_size=len(ids)), label="successes")
        self.buf.update(np.array(ids), rewards_for(succ, 4))
        k = self.cfg.prioritized.park_after
        for i, s in zip(ids, succ):
            self.streak[i] = max(self.streak[i], 0) + 1 if s == 4 else min(self.streak[i], 0) - 1 if s == 0 else 0
            p = self.buf.p_hat[i]
            self.pool[i] = SOLVED if p >= 1 and self.streak[i] >= k else UNSOLVED if p <= 0 and self.streak[i] <= -k else HEAP

    @precondition(lambda self: hasattr(self, "buf"))
    @rule(seed=st.integers(0, 99))
    def reload(self, seed):
        state = pickle.loads(pickle.dumps(self.buf.state_dict()))
        fresh = PriorityBuffer(self.cfg, self.n, seed=seed)
        fresh.load_state_dict(state)
        assert_state_equal(self.buf.state_dict(), fresh.state_dict())
        a, b = self.buf.sample(1, step=self.buf.step), fresh.sample(1, step=fresh.step)  # same RNG: same draw
        assert_batches_equal(a, b)
        self.buf.release(a.ids)
        fresh.release(b.ids)
        self.buf = fresh

    @invariant()
    def consistent(self):
        if hasattr(self, "buf"):
            self.buf.check_invariants()
            assert np.array_equal(self.buf.pools(), self.pool)
            assert np.array_equal(self.buf.streak, self.streak)
            assert (self.buf.priority[self.buf.visits > 0] >= 0).all()
            if self.cfg.prioritized.priority == "posterior":
                assert (self.buf.priority[self.buf.visits > 0] > 0).all()


def test_any_variant_and_interleaving_keeps_the_buffer_consistent():
    run_state_machine_as_test(VariantMachine, settings=settings(
        max_examples=150, stateful_step_count=25, suppress_health_check=[HealthCheck.too_slow], **FAST))
