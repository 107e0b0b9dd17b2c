"""The skip sampler: uniform draws with an adaptive pre-rollout skip (statistical tests of what it draws)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlpp.buffer import PriorityBuffer
from rlpp.config.schema import BufferConfig, ConfigError, SkipConfig
from tests.buffer.buffer_helpers import rewards_for


def make(n: int, seed: int = 0, **kw) -> PriorityBuffer:
    return PriorityBuffer(BufferConfig(sampler="skip", skip=SkipConfig(**kw)), n, seed=seed)


def update_all(buf: PriorityBuffer, successes) -> None:
    """Give every problem one group: ``successes[i]`` of 8 for problem i."""
    b = buf.sample(buf.num_problems)
    buf.update(b.ids, rewards_for([successes[i] for i in b.ids.tolist()], 8))


def test_a_skip_candidate_is_served_with_one_minus_its_skip_probability():
    """Half the pool was all-solved last time. With skip probability q for them, a uniform draw
    accepts each with 1 - q, so their share of a batch is (1 - q) / (2 - q)."""
    n, q = 2000, 0.6
    buf = make(n, seed=1, initial=q, adapt_rate=1e-9)
    update_all(buf, [8] * (n // 2) + [4] * (n // 2))
    buf.sampler.skip_prob[:] = q  # the update above moved it by ~1e-9
    hits = total = 0
    for _ in range(300):
        b = buf.sample(40)
        hits += int((b.ids < n // 2).sum())
        total += len(b)
        buf.release(b.ids)
    share = (1 - q) / (2 - q)
    assert abs(hits / total - share) < 4 * math.sqrt(share * (1 - share) / total) + 0.01, hits / total
    assert buf.stats()["buffer/skipped"] > 0


def test_problems_with_signal_are_never_skipped():
    buf = make(100, seed=2, initial=0.9, explore=0.1)
    update_all(buf, [3] * 100)
    for _ in range(50):
        b = buf.sample(10)
        buf.release(b.ids)
    assert buf.stats()["buffer/skipped"] == 0


def test_the_skip_probability_tracks_the_target_and_never_passes_the_exploration_ceiling():
    buf = make(200, seed=3, initial=0.0, adapt_rate=0.1, target=0.2, explore=0.05)
    for _ in range(40):  # every group all-solved: the solved side's probability climbs to its ceiling
        b = buf.sample(20)
        buf.update(b.ids, rewards_for([8] * len(b), 8))
    assert buf.sampler.skip_prob[0] == pytest.approx(0.95) and buf.sampler.skip_prob[1] == 0.0
    for _ in range(40):  # now every group has signal: both sides come down by 0.1 x 0.1 per update, to 0
        b = buf.sample(20)
        buf.update(b.ids, rewards_for([4] * len(b), 8))
    assert buf.sampler.skip_prob[0] == pytest.approx(0.95 - 40 * 0.01)
    for _ in range(60):
        b = buf.sample(20)
        buf.update(b.ids, rewards_for([4] * len(b), 8))
    assert list(buf.sampler.skip_prob) == [0.0, 0.0]


def test_exploration_keeps_trying_skip_candidates_and_batches_stay_full():
    """All problems failed last time and the skip probability sits at its ceiling 1 - explore: each
    draw still tries a candidate with probability >= explore, and when everything left is a candidate
    the skipped ones fill the batch."""
    buf = make(10, seed=4, initial=0.8, explore=0.2)
    update_all(buf, [0] * 10)
    sizes = []
    for _ in range(200):
        b = buf.sample(6)
        sizes.append(len(b))
        buf.release(b.ids)
    assert sizes == [6] * 200
    buf.check_invariants()


def test_skip_state_resumes_exactly():
    buf = make(300, seed=5)
    for _ in range(10):
        b = buf.sample(32)
        buf.update(b.ids, rewards_for(np.arange(len(b)) % 9, 8))
    other = make(300, seed=99)
    other.load_state_dict(buf.state_dict())
    for _ in range(5):
        x, y = buf.sample(32), other.sample(32)
        assert x.ids.tolist() == y.ids.tolist()
        r = rewards_for(x.ids % 9, 8)
        buf.update(x.ids, r)
        other.update(y.ids, r)
    assert buf.sampler.skip_prob.tolist() == other.sampler.skip_prob.tolist()


@pytest.mark.parametrize("key, value", [("after", 0), ("target", 1.5), ("adapt_rate", 0.0), ("explore", 0.0),
                                        ("initial", 0.99)])
def test_bad_settings_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"buffer.skip.{key}"):
        PriorityBuffer(BufferConfig(sampler="skip", skip=SkipConfig(**{key: value})), 10)
