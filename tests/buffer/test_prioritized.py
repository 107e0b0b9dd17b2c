"""The ``prioritized`` sampler: top-B by priority, ties by oldest last visit then lowest id; in-flight
exclusion; parked problems fill the batch when the heap runs dry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer_helpers import FAST, buffer_with, make_cfg, rewards_for
from rlpp.buffer import HEAP, IN_FLIGHT, SAMPLERS, SOLVED, UNSOLVED

OFF = dict(mode="off")


def test_unseen_problems_are_served_first_in_id_order():
    buf = buffer_with(make_cfg(retest=OFF), 10)
    assert buf.sample(4).ids.tolist() == [0, 1, 2, 3]
    assert buf.sample(3).ids.tolist() == [4, 5, 6]


def test_top_b_by_priority_then_oldest_visit_then_lowest_id():
    buf = buffer_with(make_cfg(retest=OFF), 8)
    b = buf.sample(8)
    # p: .5 .25 .75 .5 1 0 .5 .25 -> priorities .25 .1875 .1875 .25 (solved) (unsolved) .25 .1875
    buf.update(b.ids, rewards_for([2, 1, 3, 2, 4, 0, 2, 1], 4))
    b = buf.sample(4)
    assert b.ids.tolist() == [0, 3, 6, 1]  # all visited at step 1: ties by id
    # 3, 0 -> p .5 at step 2; 1 -> .25 at step 2; 6 released (keeps last visit 1)
    buf.update([3, 0, 1], rewards_for([2, 2, 1], 4))
    buf.release([6])
    b = buf.sample(6)
    # ω .25: 6 (visited 1) before 0, 3 (visited 2); ω .1875: 2, 7 (visited 1) before 1 (visited 2)
    assert b.ids.tolist() == [6, 0, 3, 2, 7, 1]
    assert not b.retest.any()


def test_priority_beats_age_and_id():
    """A high-priority problem visited late and with a high id still comes first."""
    buf = buffer_with(make_cfg(retest=OFF), 5)
    buf.update(buf.sample(5).ids, rewards_for([1, 1, 1, 1, 1], 8))  # p 1/8: ω = 7/64 for all
    buf.update(buf.sample(4).ids, rewards_for([1, 1, 1, 1], 8))  # 0..3 again, now visited at step 2
    b = buf.sample(5)
    assert b.ids.tolist() == [4, 0, 1, 2, 3]  # equal priorities: 4 is the oldest visit
    buf.update(b.ids, rewards_for([1, 1, 1, 1, 4], 8))  # 3 at p .5 now has the top priority
    assert buf.sample(2).ids.tolist() == [3, 0]  # then equal ω and visits: lowest id


@settings(max_examples=60, **FAST)
@given(successes=st.lists(st.integers(1, 7), min_size=1, max_size=40), seed=st.integers(0, 2**16))
def test_heap_order_matches_a_full_sort(successes, seed):
    """Random priorities and visit steps: the served order equals sorting by (-ω, last visit, id)."""
    n = len(successes)
    buf = buffer_with(make_cfg(retest=OFF), n)
    rng = np.random.default_rng(seed)
    buf.update(buf.sample(n).ids, rewards_for(successes, 8))
    for _ in range(3):  # revisit random subsets at later steps so last visits differ
        b = buf.sample(int(rng.integers(1, n + 1)))
        buf.update(b.ids, rewards_for(rng.integers(1, 8, size=len(b)), 8))
    k = int(rng.integers(1, n + 1))
    order = sorted(range(n), key=lambda i: (-buf.priority[i], buf.last_visit[i], i))
    assert buf.sample(k).ids.tolist() == order[:k]


def test_outstanding_batches_never_share_a_problem():
    buf = buffer_with(make_cfg(retest=OFF), 10)
    a = buf.sample(4)
    b = buf.sample(4, step=a.step)  # a top-up for the same step
    c = buf.sample(4)  # and the next step while both are out
    assert not set(a.ids) & set(b.ids) and not set(a.ids) & set(c.ids) and not set(b.ids) & set(c.ids)
    assert len(c) == 2  # only two problems were not in flight
    assert len(buf.sample(3)) == 0
    assert sorted(buf.in_flight().tolist()) == list(range(10))
    buf.update(a.ids, rewards_for([2] * 4, 4))
    d = buf.sample(10)
    assert sorted(d.ids.tolist()) == sorted(a.ids.tolist())
    buf.check_invariants()


def test_released_problems_can_be_served_again():
    buf = buffer_with(make_cfg(retest=OFF), 3)
    a = buf.sample(3)
    assert buf.release(a.ids[:2]) == 2
    b = buf.sample(3)
    assert b.ids.tolist() == a.ids[:2].tolist()
    assert buf.stats()["buffer/released"] == 2 and buf.stats()["buffer/in_flight"] == 3


@pytest.mark.parametrize("sampler", ["prioritized", "per"])
def test_parked_problems_fill_the_batch_when_the_heap_runs_dry(sampler):
    buf = buffer_with(make_cfg(sampler, retest=OFF), 6)
    b = buf.sample(6)
    succ = {0: 4, 1: 4, 2: 0, 3: 0, 4: 2, 5: 2}
    buf.update(b.ids, rewards_for([succ[i] for i in b.ids.tolist()], 4))
    assert buf.pools().tolist() == [SOLVED, SOLVED, UNSOLVED, UNSOLVED, HEAP, HEAP]
    b = buf.sample(5)
    assert sorted(b.ids[:2].tolist()) == [4, 5] and not b.retest[:2].any()
    assert b.ids[2:].tolist() == [0, 1, 2] and b.retest[2:].all()  # oldest visit, then lowest id
    assert (b.weights[2:] == 1).all()
    assert buf.stats()["buffer/retested"] == 3
    assert len(buf.sample(5)) == 1  # only problem 3 was left
    buf.check_invariants()


def test_heap_dry_fill_prefers_the_oldest_visit_over_the_lowest_id():
    buf = buffer_with(make_cfg(retest=OFF), 4)
    buf.update(buf.sample(2).ids, rewards_for([4, 4], 4))  # 0, 1 solved at step 1
    buf.update(buf.sample(2).ids, rewards_for([0, 0], 4))  # 2, 3 unsolved at step 2
    b = buf.sample(4)
    assert b.ids.tolist() == [0, 1, 2, 3] and b.retest.all()
    buf.update(b.ids, rewards_for([4, 4, 0, 0], 4))  # all parked again at step 3
    buf.update(buf.sample(1).ids, rewards_for([4], 4))  # 0 again at step 4
    assert buf.sample(4).ids.tolist() == [1, 2, 3, 0]


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_problem_is_handed_out_exactly_once_when_all_are_drawn(sampler):
    n = 37
    buf = buffer_with(make_cfg(sampler, retest=OFF), n)
    ids = []
    while len(ids) < n:
        b = buf.sample(5)
        assert len(b) > 0
        ids += b.ids.tolist()
    assert sorted(ids) == list(range(n))
    assert (buf.pools() == IN_FLIGHT).all() and len(buf.sample(3)) == 0
