"""RewardScorer: failures and hangs score 0 and are counted; time limits hold off the main thread."""

from __future__ import annotations

import importlib.util
import logging
import statistics
import threading
import time

import pytest
import reward_plugins

from rlpp.config.schema import RewardConfig
from rlpp.reward import RewardScorer


def scorer(name: str = "reward_plugins:scripted", timeout_s: float = 10.0, **kwargs) -> RewardScorer:
    return RewardScorer(RewardConfig(name=name, timeout_s=timeout_s), **kwargs)


def in_thread(fn):
    """Run ``fn()`` on a fresh non-main thread; return its result or raise its exception."""
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.fixture
def release():
    """Calls on ``block`` hang until the test ends."""
    reward_plugins.RELEASE.clear()
    yield reward_plugins.RELEASE
    reward_plugins.RELEASE.set()


def test_arithmetic_batch_inline():
    threads = threading.active_count()
    s = scorer("arithmetic")
    scores, metrics = s.score(["19", "-3", "4 junk", "", "7"], ["19", "-3", "4", "1", "8"])
    assert scores == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert metrics == {"reward/mean": 0.4, "reward/errors": 0.0, "reward/timeouts": 0.0, "reward/skipped": 0.0,
                       "reward/stuck_threads": 0.0}
    assert s.inline and threading.active_count() == threads  # no worker thread for a cheap built-in


def test_arithmetic_128_is_fast():
    s = scorer("arithmetic")
    completions = [str(i - 64) for i in range(128)]
    answers = [str(i - 64 if i % 3 else i) for i in range(128)]
    times = []
    for _ in range(21):
        start = time.perf_counter()
        scores, _ = s.score(completions, answers)
        times.append(time.perf_counter() - start)
    assert len(scores) == 128
    assert statistics.median(times) < 0.010


def test_inline_error_is_counted_and_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="rlpp.reward.scorer"):
        scores, metrics = scorer("arithmetic").score(["19", "19"], ["19", "nineteen"])
    assert scores == [1.0, 0.0]
    assert metrics["reward/errors"] == 1.0 and metrics["reward/mean"] == 0.5
    assert "ValueError" in caplog.text and "nineteen" in caplog.text


def test_raising_reward_scores_zero_and_is_counted(caplog):
    with caplog.at_level(logging.WARNING, logger="rlpp.reward.scorer"):
        scores, metrics = scorer().score(["raise", "a", "raise", "b"], ["a", "a", "a", "a"])
    assert scores == [0.0, 1.0, 0.0, 0.0]
    assert metrics["reward/errors"] == 2.0 and metrics["reward/timeouts"] == 0.0
    assert metrics["reward/mean"] == 0.25
    assert "RuntimeError('scripted failure')" in caplog.text


@pytest.mark.parametrize("bad", ["nan", "inf", "text", "none"])
def test_non_finite_or_non_numeric_is_an_error(bad):
    scores, metrics = scorer().score([bad, "a"], ["a", "a"])
    assert scores == [0.0, 1.0]
    assert metrics["reward/errors"] == 1.0


@pytest.mark.parametrize("thread", ["main", "other"])
def test_hung_reward_times_out(thread):
    s = scorer(timeout_s=0.5)
    start = time.monotonic()
    call = lambda: s.score(["hang"], ["a"])  # noqa: E731
    scores, metrics = call() if thread == "main" else in_thread(call)
    assert time.monotonic() - start < 5.0
    assert scores == [0.0]
    assert metrics["reward/timeouts"] == 1.0 and metrics["reward/errors"] == 0.0
    assert metrics["reward/stuck_threads"] == 1.0


def test_mixed_batch_replaces_the_stuck_worker():
    s = scorer(timeout_s=0.3, workers=1)
    start = time.monotonic()
    scores, metrics = in_thread(lambda: s.score(["hang", "a", "raise", "a", "b"], ["a"] * 5))
    assert time.monotonic() - start < 5.0
    assert scores == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert metrics["reward/timeouts"] == 1.0 and metrics["reward/errors"] == 1.0
    assert metrics["reward/skipped"] == 0.0


def test_deadline_is_per_call():
    # Three 0.3 s calls in a row on one worker: 0.9 s in all, each well inside its 0.6 s limit.
    scores, metrics = scorer(timeout_s=0.6, workers=1).score(["sleep:0.3"] * 3, ["a"] * 3)
    assert scores == [1.0, 1.0, 1.0]
    assert metrics["reward/timeouts"] == 0.0


def test_stuck_cap_skips_then_recovers(release):
    s = scorer(timeout_s=0.2, workers=1, max_stuck=0)
    scores, metrics = s.score(["block", "a", "a"], ["a"] * 3)
    assert scores == [0.0, 0.0, 0.0]
    assert metrics["reward/timeouts"] == 1.0 and metrics["reward/skipped"] == 2.0
    assert metrics["reward/stuck_threads"] == 1.0
    release.set()  # the hung call returns, its thread exits, and a new worker may start
    deadline = time.monotonic() + 5
    while s._pool.stuck() and time.monotonic() < deadline:
        time.sleep(0.01)
    scores, metrics = s.score(["a"], ["a"])
    assert scores == [1.0] and metrics["reward/stuck_threads"] == 0.0


def test_repeated_hangs_keep_threads_bounded(release):
    threads = threading.active_count()
    s = scorer(timeout_s=0.05, workers=2, max_stuck=3)
    for _ in range(10):
        scores, metrics = s.score(["block"] * 8, ["a"] * 8)
        assert scores == [0.0] * 8
        assert metrics["reward/timeouts"] + metrics["reward/skipped"] == 8.0
    assert metrics["reward/stuck_threads"] == 5.0  # workers + max_stuck, then calls are skipped
    assert threading.active_count() - threads <= 2 + 3


def test_close_stops_idle_workers():
    s = scorer(workers=2)
    s.score(["a", "b"], ["a", "a"])
    workers = list(s._pool._idle)
    assert workers
    s.close()
    for w in workers:
        w.thread.join(timeout=5)
        assert not w.thread.is_alive()


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        scorer("arithmetic").score(["1", "2"], ["1"])


@pytest.mark.skipif(importlib.util.find_spec("math_verify") is None, reason="math-verify is not installed")
def test_math_verify_scorer_off_the_main_thread():
    s = scorer("math_verify")
    completions = ["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "\\boxed{3}", "", "\\boxed{-3}"]
    answers = ["0.5", "\\frac{1}{2}", "0.5", "0.5", "-3"]
    scores, metrics = in_thread(lambda: s.score(completions, answers))
    assert scores == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert metrics["reward/errors"] == 0.0 and metrics["reward/timeouts"] == 0.0
    s.close()
