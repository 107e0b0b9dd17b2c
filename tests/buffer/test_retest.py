"""Retest scheduling: the latency bound for parked problems, and the forgotten / unlocked counters.

The bound. With ``mode=periodic`` and one batch per step, every batch answered before the next is
drawn, rounds fall on steps R, 2R, 3R, ... (a round is due when step - last round >= R, counted from
step 0). Take a problem parked by the update of step t, when P problems are parked (itself included).
The parked queue serves oldest last visit first, then lowest id; everything parked later has a last
visit > t and queues behind it, and so does anything ahead of it that is retested and parked again.
So at most P - 1 problems are ever ahead of it, each round takes k of them (heap-dry fills only take
more), the first round after t comes at most R steps later and the j-th at most jR steps later:

    it is served again by step t + ceil(P / k) * R.

The bound is tight: a problem parked last of P on a round step waits exactly ceil(P / k) * R.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer_helpers import FAST, PARKING, buffer_with, make_cfg, rewards_for
from rlpp.buffer import HEAP, SOLVED, UNSOLVED


def run_and_check_latency(sampler, n, batch, every, per_round, seed, group_size=4):
    """Run a synchronous loop; assert every parking's wait against the bound; return (checked, worst
    wait / bound)."""
    buf = buffer_with(make_cfg(sampler, retest=dict(mode="periodic", every_steps=every, per_round=per_round)), n, seed)
    rng = np.random.default_rng(seed)
    # Mostly problems that are always solved or always failed, so parking is frequent; problem 0 is
    # always solved, so at least one parking happens early and is checked.
    true_p = rng.choice([0.0, 1.0, 0.0, 1.0, 0.5, 0.9], size=n)
    true_p[0] = 1.0
    horizon = math.ceil(n / batch) + 2 + math.ceil(n / per_round) * every
    pending: dict[int, tuple[int, int]] = {}  # id -> (step parked, bound)
    checked, tightest = 0, 0.0
    for t in range(1, horizon + 1):
        b = buf.sample(batch)
        assert b.step == t and len(b) == batch
        for i in b.ids.tolist():
            if i in pending:
                parked_at, bound = pending.pop(i)
                wait = t - parked_at
                assert wait <= bound, f"problem {i} parked at step {parked_at} waited {wait} > bound {bound}"
                checked += 1
                tightest = max(tightest, wait / bound)
        rewards = (rng.random((len(b), group_size)) < true_p[b.ids][:, None]).astype(float)
        buf.update(b.ids, rewards)
        pools = buf.pools()
        parked_now = int(((pools == SOLVED) | (pools == UNSOLVED)).sum())
        assert parked_now == buf.stats()["buffer/solved"] + buf.stats()["buffer/unsolved"]
        for i in b.ids[(pools[b.ids] == SOLVED) | (pools[b.ids] == UNSOLVED)].tolist():
            pending[i] = (t, math.ceil(parked_now / per_round) * every)
    for i, (parked_at, bound) in pending.items():
        assert parked_at + bound > horizon, f"problem {i} parked at {parked_at} never served within {bound}"
    buf.check_invariants()
    return checked, tightest


@pytest.mark.parametrize("sampler", PARKING)
@settings(max_examples=100, **FAST)
@given(data=st.data())
def test_parked_problem_is_retested_within_the_bound(sampler, data):
    n = data.draw(st.integers(2, 30), label="n")
    batch = data.draw(st.integers(1, min(n, 8)), label="batch")
    per_round = data.draw(st.integers(1, batch), label="per_round")
    every = data.draw(st.integers(1, 5), label="every_steps")
    checked, _ = run_and_check_latency(sampler, n, batch, every, per_round, data.draw(st.integers(0, 2**16), label="seed"))
    assert checked >= 1


def test_latency_bound_is_reached_exactly():
    """Problems 4..7 park together on round step 2 (P = 4, k = 2, R = 2): the last waits exactly
    ceil(4 / 2) * 2 = 4 steps, served in the round of step 6; 4 and 5 go in the round of step 4."""
    buf = buffer_with(make_cfg("prioritized", retest=dict(every_steps=2, per_round=2)), 8)
    partial = rewards_for([2] * 4, 4)
    b1 = buf.sample(4)  # unseen ties break by id: 0..3, kept partial so the heap never runs dry
    assert b1.ids.tolist() == [0, 1, 2, 3]
    buf.update(b1.ids, partial)
    b2 = buf.sample(4)  # a round is due but nothing is parked; unseen 4..7 outrank visited 0..3
    assert b2.ids.tolist() == [4, 5, 6, 7] and not b2.retest.any()
    buf.update(b2.ids, rewards_for([4] * 4, 4))
    assert buf.stats()["buffer/solved"] == 4
    served_at = {}
    for t in range(3, 8):
        b = buf.sample(4)
        for i in b.ids[b.retest].tolist():
            served_at.setdefault(i, t)
        ok = b.ids[~b.retest]
        buf.update(ok, partial[: len(ok)])
        buf.update(b.ids[b.retest], rewards_for([4] * int(b.retest.sum()), 4))
    assert served_at == {4: 4, 5: 4, 6: 6, 7: 6}
    assert served_at[7] - 2 == math.ceil(4 / 2) * 2


def test_retest_rounds_fall_every_r_steps_and_top_ups_never_start_one():
    buf = buffer_with(make_cfg("prioritized", retest=dict(every_steps=3, per_round=1)), 20)
    b = buf.sample(10)
    buf.update(b.ids, rewards_for([4] * 10, 4))  # ten parked
    rounds = []
    for t in range(2, 11):
        b = buf.sample(2)
        assert b.step == t
        if b.retest.any():
            rounds.append(t)
            assert b.retest.tolist() == [True, False]
        top = buf.sample(2, step=t)  # a top-up in the same step: never a round
        assert not top.retest.any() and top.step == t
        buf.release(top.ids)
        buf.update(b.ids, rewards_for([4 if r else 2 for r in b.retest], 4))  # the heap never runs dry
    assert rounds == [3, 6, 9]


def test_fraction_mode_carries_parked_problems_in_every_batch():
    buf = buffer_with(make_cfg("prioritized", retest=dict(mode="fraction", batch_fraction=0.25)), 20)
    b = buf.sample(8)
    buf.update(b.ids, rewards_for([0] * 8, 3))  # eight unsolved
    for _ in range(3):
        b = buf.sample(5)  # ceil(0.25 * 5) = 2 parked first
        assert b.retest.tolist() == [True, True, False, False, False]
        buf.update(b.ids, rewards_for([0, 0, 1, 1, 1], 3))


def test_off_mode_never_retests_while_the_heap_has_problems():
    buf = buffer_with(make_cfg("prioritized", retest=dict(mode="off")), 12)
    b = buf.sample(4)
    buf.update(b.ids, rewards_for([4] * 4, 4))
    for _ in range(12):
        b = buf.sample(4)
        assert not b.retest.any()
        buf.update(b.ids, rewards_for([2] * 4, 4))


# ------------------------------------------------------------------ forgotten / unlocked, by hand
@pytest.fixture
def parked_pair():
    """Problem 0 solved and problem 1 unsolved at step 1; 2..5 partial. Rounds every 2 steps, 1 each."""
    buf = buffer_with(make_cfg("prioritized", retest=dict(every_steps=2, per_round=1)), 6)
    b = buf.sample(6)
    assert b.ids.tolist() == list(range(6))
    out = buf.update(b.ids, rewards_for([4, 0, 2, 1, 3, 2], 4))
    assert out == {"forgotten": 0, "unlocked": 0, "solved": 1, "unsolved": 1}
    assert buf.pools().tolist() == [SOLVED, UNSOLVED, HEAP, HEAP, HEAP, HEAP]
    return buf


def retest_one(buf, successes, group_size=4):
    """Draw the next round's batch of 2 (one retest first) and answer the retest with ``successes``."""
    b = buf.sample(2)
    assert b.retest.tolist() == [True, False]
    i = int(b.ids[0])
    buf.release(b.ids[1:])
    return i, buf.update([i], rewards_for([successes], group_size))


def test_solved_problem_that_fails_counts_as_forgotten_and_returns_to_the_heap(parked_pair):
    buf = parked_pair
    i, out = retest_one(buf, 1)  # step 2 is a round; oldest parked ties at step 1, lowest id first
    assert i == 0 and out["forgotten"] == 1 and out["unlocked"] == 0
    assert buf.stats()["buffer/forgotten"] == 1 and buf.stats()["buffer/retested"] == 1
    assert buf.pools()[0] == HEAP and buf.priority[0] == 0.25 * 0.75
    assert 0 in buf.sampler.members()
    buf.check_invariants()


def test_solved_problem_that_fails_entirely_is_forgotten_into_unsolved(parked_pair):
    buf = parked_pair
    i, out = retest_one(buf, 0)
    assert i == 0 and out == {"forgotten": 1, "unlocked": 0, "solved": 0, "unsolved": 1}
    assert buf.pools()[0] == UNSOLVED


def test_solved_problem_that_stays_solved_is_parked_again_behind_the_others(parked_pair):
    buf = parked_pair
    i, out = retest_one(buf, 4)
    assert i == 0 and out == {"forgotten": 0, "unlocked": 0, "solved": 1, "unsolved": 0}
    assert buf.pools()[0] == SOLVED and buf.last_visit[0] == 2
    buf.sample(2, step=3)  # no round at step 3
    buf.release(buf.in_flight())
    i, _ = retest_one(buf, 0)  # step 4: problem 1 (last visit 1) is now older than problem 0
    assert i == 1


def test_unsolved_problem_with_partial_success_counts_as_unlocked(parked_pair):
    buf = parked_pair
    retest_one(buf, 4)  # step 2 retests problem 0, which stays solved
    buf.sample(2)  # step 3: no round
    buf.release(buf.in_flight())
    i, out = retest_one(buf, 3)  # step 4 retests problem 1
    assert i == 1 and out["unlocked"] == 1 and out["forgotten"] == 0
    assert buf.pools()[1] == HEAP and buf.p_hat[1] == 0.75
    assert buf.stats()["buffer/unlocked"] == 1
    buf.check_invariants()


def test_unsolved_problem_that_becomes_solved_counts_as_unlocked(parked_pair):
    buf = parked_pair
    retest_one(buf, 4)
    buf.sample(2)
    buf.release(buf.in_flight())
    i, out = retest_one(buf, 4)
    assert i == 1 and out == {"forgotten": 0, "unlocked": 1, "solved": 1, "unsolved": 0}


def test_released_retest_returns_to_its_parked_pool_uncounted(parked_pair):
    buf = parked_pair
    b = buf.sample(2)
    assert b.retest[0] and b.ids[0] == 0
    buf.release(b.ids)
    assert buf.pools()[0] == SOLVED and buf.last_visit[0] == 1
    s = buf.stats()
    assert s["buffer/forgotten"] == 0 and s["buffer/released"] == 2
    buf.check_invariants()


def test_decayed_stats_count_forgetting_on_the_decayed_rate():
    """With decayed statistics a solved problem that fails once has 0 < p̂ < 1: forgotten, back to heap."""
    buf = buffer_with(make_cfg("prioritized", stats="decayed", decay=0.5, retest=dict(every_steps=1, per_round=1)), 3)
    b = buf.sample(3)
    buf.update(b.ids, rewards_for([4, 2, 2], 4))
    b = buf.sample(1)
    assert b.retest.tolist() == [True] and b.ids.tolist() == [0]
    out = buf.update(b.ids, rewards_for([0], 4))
    assert out["forgotten"] == 1 and buf.pools()[0] == HEAP
    assert buf.p_hat[0] == pytest.approx((0.5 * 4 + 0) / (0.5 * 4 + 4))
