"""Bad calls raise ValueError with a message that says what is wrong, and leave the buffer exactly as
it was (state compared array by array, RNG included); bad configs raise ConfigError naming the key."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from buffer_helpers import assert_state_equal, buffer_with, make_cfg, rewards_for
from rlpp.buffer import SAMPLERS, PriorityBuffer
from rlpp.config.schema import (BufferConfig, ConfigError, DapoFilterConfig, PERConfig, PromptReplayConfig,
                                RetestConfig, validate)

N = 20


@pytest.fixture(params=sorted(SAMPLERS))
def busy(request):
    """A buffer with history, two batches in flight (``a`` of 3 and ``b`` of 2) and some idle problems."""
    buf = buffer_with(make_cfg(request.param, retest=dict(every_steps=2, per_round=2)), N, seed=3)
    b0 = buf.sample(4)
    buf.update(b0.ids, rewards_for(([4, 0, 2, 1] * 2)[: len(b0)], 4))
    a = buf.sample(3, step=1)
    b = buf.sample(2, step=1)
    a, b = a.ids[:3], b.ids[:2]
    assert len(a) == 3 and len(b) == 2
    idle = np.flatnonzero(buf.pools() != 3)
    return buf, a, b, idle


def refuses(buf, call, match):
    before = buf.state_dict()
    with pytest.raises(ValueError, match=match):
        call()
    assert_state_equal(before, buf.state_dict())
    buf.check_invariants()


OK_REWARDS = lambda k: np.ones((k, 4))  # noqa: E731


@pytest.mark.parametrize("method", ["update", "release"])
@pytest.mark.parametrize("case, match", [
    ("unknown", rf"unknown problem ids \[{N}\]"),
    ("negative", r"unknown problem ids \[-1\]"),
    ("duplicate", "duplicate problem ids"),
    ("idle", "not in flight"),
    ("float ids", "ids must be a 1-D array of ints"),
    ("bool ids", "ids must be a 1-D array of ints"),
    ("2-D ids", "ids must be a 1-D array of ints"),
    ("scalar id", "ids must be a 1-D array of ints"),
])
def test_bad_ids_are_refused(busy, method, case, match):
    buf, a, b, idle = busy
    ids = {
        "unknown": np.r_[a, N],
        "negative": np.r_[a, -1],
        "duplicate": np.r_[a, a[0]],
        "idle": np.r_[a, idle[0]],
        "float ids": a.astype(float),
        "bool ids": np.ones(N, dtype=bool),
        "2-D ids": a[None, :],
        "scalar id": int(a[0]),
    }[case]
    k = np.size(ids)
    call = (lambda: buf.update(ids, OK_REWARDS(k))) if method == "update" else (lambda: buf.release(ids))
    refuses(buf, call, match)


@pytest.mark.parametrize("method", ["update", "release"])
def test_answering_a_problem_twice_is_refused(busy, method):
    buf, a, b, idle = busy
    buf.update(a, OK_REWARDS(3))
    call = (lambda: buf.update(a[:1], OK_REWARDS(1))) if method == "update" else (lambda: buf.release(a[:1]))
    refuses(buf, call, "not in flight")
    refuses(buf, lambda: buf.release(np.r_[b, a[0]]), "not in flight")  # b stays in flight too
    assert set(b.tolist()) <= set(buf.in_flight().tolist())


@pytest.mark.parametrize("rewards, match", [
    (np.ones(3), "shape"),  # 1-D
    (np.ones((2, 4)), "shape"),  # too few rows
    (np.ones((4, 4)), "shape"),  # too many rows
    (np.ones((3, 0)), "shape"),  # zero columns
    (np.ones((3, 2, 2)), "shape"),  # 3-D
    (np.ones(()), "shape"),  # scalar
    ([[1.0, np.nan], [1.0, 1.0], [0.0, 0.0]], "finite"),
    ([[1.0, 1.0], [np.inf, 1.0], [0.0, 0.0]], "finite"),
    ([[1.0, 1.0], [1.0, 1.0], [0.0, -np.inf]], "finite"),
    ([[1.0, None], [1.0, 1.0], [0.0, 0.0]], "numeric|finite"),
    ([["a", "b"], ["c", "d"], ["e", "f"]], "numeric"),
    ([["1.0", "0"], ["1", "1"], ["0", "0"]], "numeric"),  # numbers as text are not rewards
    ([[b"1", b"0"], [b"1", b"1"], [b"0", b"0"]], "numeric"),
    (np.ones((3, 2), dtype=complex), "numeric"),
    ([[1.0, 1.0], [1.0], [0.0, 0.0]], "numeric"),  # ragged
    ({"a": 1}, "numeric|shape"),
    (None, "numeric|shape"),
])
def test_bad_rewards_are_refused(busy, rewards, match):
    buf, a, b, idle = busy
    refuses(buf, lambda: buf.update(a, rewards), match)


def test_bad_rewards_name_the_offending_problem(busy):
    buf, a, b, idle = busy
    r = np.ones((3, 2))
    r[1, 0] = np.nan
    with pytest.raises(ValueError, match=rf"problem ids \[{a[1]}\]"):
        buf.update(a, r)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, False, "3", None, np.float64(2), np.bool_(True)])
def test_bad_batch_sizes_are_refused(busy, batch_size):
    buf, *_ = busy
    refuses(buf, lambda: buf.sample(batch_size), "batch_size must be an int >= 1")


def test_numpy_integer_batch_size_is_accepted(busy):
    buf, *_ = busy
    assert len(buf.sample(np.int64(2), step=1)) >= 2  # dapo_filter draws more


@pytest.mark.parametrize("step", [2.7, 2.0, np.float64(2), True, np.bool_(True), "2", [2]])
def test_non_integer_steps_are_refused(busy, step):
    buf, *_ = busy
    refuses(buf, lambda: buf.sample(1, step=step), "step must be an int")


def test_numpy_integer_step_is_accepted(busy):
    buf, *_ = busy
    assert buf.sample(2, step=np.int64(3)).step == 3


def test_step_going_back_is_refused(busy):
    buf, *_ = busy
    buf.sample(2, step=5)
    refuses(buf, lambda: buf.sample(1, step=4), "step must not go back: buffer is at step 5, got 4")
    assert buf.sample(1, step=5).step == 5  # the same step (a top-up) is fine


@pytest.mark.parametrize("sampler", ["prioritized", "per"])
def test_retest_round_larger_than_the_batch_is_refused_when_due(sampler):
    buf = buffer_with(make_cfg(sampler, retest=dict(every_steps=2, per_round=4)), N)
    b = buf.sample(4)  # step 1: no round due
    buf.update(b.ids, rewards_for([4] * 4, 4))
    refuses(buf, lambda: buf.sample(3), r"buffer.retest.per_round \(4\) exceeds the batch of 3")
    top = buf.sample(3, step=1)  # a top-up never starts a round, so a small one is fine
    assert not top.retest.any()
    b = buf.sample(4)  # step 2 with a batch big enough: the round happens
    assert b.retest.tolist() == [True] * 4


def test_samplers_that_never_park_ignore_the_retest_group():
    buf = buffer_with(make_cfg("uniform", retest=dict(every_steps=1, per_round=100)), N)
    assert len(buf.sample(2)) == 2


# ------------------------------------------------------------------ configuration
BAD_CONFIGS = [
    ("buffer.retest.every_steps", dict(retest=RetestConfig(every_steps=0))),
    ("buffer.retest.per_round", dict(retest=RetestConfig(per_round=0))),
    ("buffer.retest.mode", dict(retest=RetestConfig(mode="sometimes"))),
    ("buffer.retest.batch_fraction", dict(retest=RetestConfig(batch_fraction=0.0))),
    ("buffer.retest.batch_fraction", dict(retest=RetestConfig(batch_fraction=1.0))),
    ("buffer.sampler", dict(sampler="greedy")),
    ("buffer.stats", dict(stats="mean")),
    ("buffer.decay", dict(stats="decayed", decay=1.0)),
    ("buffer.decay", dict(decay=-0.1)),
    ("buffer.unseen_priority", dict(unseen_priority=0.0)),
    ("buffer.unseen_priority", dict(unseen_priority=0.3)),
    ("buffer.per.alpha", dict(per=PERConfig(alpha=1.5))),
    ("buffer.per.beta", dict(per=PERConfig(beta=-0.1))),
    ("buffer.per.eps", dict(per=PERConfig(eps=0.0))),
    ("buffer.prompt_replay.window", dict(prompt_replay=PromptReplayConfig(window=0.6))),
    ("buffer.prompt_replay.cooldown_steps", dict(prompt_replay=PromptReplayConfig(cooldown_steps=-1))),
    ("buffer.prompt_replay.max_reuse", dict(prompt_replay=PromptReplayConfig(max_reuse=0))),
    ("buffer.prompt_replay.replay_fraction", dict(prompt_replay=PromptReplayConfig(replay_fraction=1.5))),
    ("buffer.dapo_filter.oversample", dict(dapo_filter=DapoFilterConfig(oversample=0.5))),
]


@pytest.mark.parametrize("key, fields", BAD_CONFIGS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_CONFIGS)])
def test_invalid_config_names_the_key_path(key, fields):
    group = key.split(".")[1]
    if group in ("per", "prompt_replay", "dapo_filter"):  # a sampler's group is checked when that sampler is chosen
        fields = {**fields, "sampler": group}
    cfg = BufferConfig(**fields)
    with pytest.raises(ConfigError) as info:
        validate(cfg, "buffer.")
    assert str(info.value).startswith(key + " "), str(info.value)
    with pytest.raises(ConfigError) as info:
        PriorityBuffer(cfg, N)
    assert str(info.value).startswith(key + " ")
    assert isinstance(info.value, ValueError)


def test_every_invalid_value_is_listed():
    cfg = BufferConfig(sampler="greedy", retest=RetestConfig(every_steps=0, per_round=0))
    with pytest.raises(ConfigError) as info:
        validate(cfg, "buffer.")
    msg = str(info.value)
    for key in ("buffer.sampler", "buffer.retest.every_steps", "buffer.retest.per_round"):
        assert key in msg


def test_valid_configs_pass():
    validate(BufferConfig(), "buffer.")
    for name in SAMPLERS:
        validate(dataclasses.replace(BufferConfig(), sampler=name), "buffer.")


@pytest.mark.parametrize("n", [0, -1, 2**32])
def test_num_problems_out_of_range_is_refused(n):
    with pytest.raises(ValueError, match="num_problems"):
        PriorityBuffer(BufferConfig(), n)
