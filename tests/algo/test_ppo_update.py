"""ppo_update's bookkeeping with stand-in step/log-prob functions: how many optimizer steps run, which
log-probs the ratio is taken against, and how the steps' metrics combine (means; times add up)."""

from __future__ import annotations

import pytest
import torch

from rlpp.algo.ppo import ppo_update


def _recorder(calls):
    def step(batch):
        calls.append(batch)
        return {"train/loss": float(len(calls)), "train/skipped": 0.0, "time/learner_forward": 0.5}
    return step


def test_one_step_is_on_policy_and_recomputes_nothing(grpo_batch):
    calls = []
    m = ppo_update(grpo_batch(4), epochs=1, mini_batches=1, old_logprobs="recompute", step=_recorder(calls),
                   logprobs=lambda b: pytest.fail("a single on-policy step needs no recompute"))
    assert len(calls) == 1 and calls[0].old_logprobs is None
    assert m["train/optimizer_steps"] == 1 and m["time/logprob_recompute"] == 0 and m["time/learner_forward"] == 0.5


def test_several_steps_average_metrics_and_add_times(grpo_batch):
    calls, recomputed = [], []

    def logprobs(batch):
        recomputed.append(len(batch))
        return torch.full(batch.input_ids.shape, -0.5)

    m = ppo_update(grpo_batch(4), epochs=2, mini_batches=2, old_logprobs="recompute", step=_recorder(calls),
                   logprobs=logprobs, seed=1)
    assert recomputed == [8] and len(calls) == 4  # 4 groups x 2 rows; recomputed once, before the first step
    assert all(bool((c.old_logprobs == -0.5).all()) for c in calls)
    assert m["train/loss"] == pytest.approx(2.5)  # the mean of 1, 2, 3, 4
    assert m["time/learner_forward"] == pytest.approx(2.0)  # 4 x 0.5: seconds add up over the steps
    assert m["time/logprob_recompute"] >= 0 and m["train/optimizer_steps"] == 4
