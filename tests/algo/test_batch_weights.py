"""A sampler's importance weights reach the training batch, one per sample of each kept group."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlpp.algo.batch import make_train_batch
from rlpp.rollout.worker import RolloutResult


def test_each_sample_carries_its_problems_weight_and_dropped_groups_take_theirs_along():
    prompts = [[1, 2], [3], [4, 5]]
    completions = [[([7], [-0.1]), ([8, 9], [-0.2, -0.3])] for _ in prompts]
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # problem 1: zero variance, dropped
    batch, _ = make_train_batch(prompts, completions, rewards, estimator="grpo", drop_zero_variance=True,
                                pad_id=0, weights=np.array([0.5, 0.9, 1.0]))
    assert batch.weights.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert batch.select([3, 0]).weights.tolist() == [1.0, 0.5]
    unweighted, _ = make_train_batch(prompts, completions, rewards, estimator="grpo", drop_zero_variance=True, pad_id=0)
    assert unweighted.weights is None and unweighted.select([1]).weights is None
    with pytest.raises(ValueError, match="one value per problem"):
        make_train_batch(prompts, completions, rewards, estimator="grpo", drop_zero_variance=True, pad_id=0,
                         weights=np.ones(2))


def test_concatenated_rounds_keep_weights_and_fill_unweighted_ones():
    def part(ids, w):
        return RolloutResult(np.array(ids), [[1]] * len(ids), [[]] * len(ids), np.zeros((len(ids), 2)),
                             {}, None if w is None else np.array(w))

    merged = RolloutResult.concat([part([1, 2], [0.3, 1.0]), part([5], None)])
    assert merged.weights.tolist() == [0.3, 1.0, 1.0]
    assert RolloutResult.concat([part([1], None), part([2], None)]).weights is None
