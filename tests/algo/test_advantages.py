"""Group-relative advantages against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlpp.algo import ADVANTAGE_ESTIMATORS, compute_advantages, group_advantages, register_advantage, zero_variance


def test_std_normalized_hand_values():
    # [1, 0, 0, 0]: mean 0.25, deviations (0.75, -0.25, -0.25, -0.25), sum of squares 0.75,
    # unbiased variance 0.75 / 3 = 0.25, std 0.5 -> (1.5, -0.5, -0.5, -0.5).
    # [1, 0, 0, 1]: mean 0.5, deviations +-0.5, sum of squares 1, variance 1/3, std 1/sqrt(3)
    # -> +-0.5 * sqrt(3) = +-0.8660254.
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    adv = group_advantages(rewards, std_normalize=True, eps=0.0)
    h = math.sqrt(3) / 2
    expected = torch.tensor([[1.5, -0.5, -0.5, -0.5], [h, -h, -h, h]], dtype=torch.float64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)


def test_eps_is_added_to_the_std():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64), True, eps=0.5)
    # std 0.5 + eps 0.5 = 1 -> the centred rewards themselves.
    torch.testing.assert_close(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25]], dtype=torch.float64))


def test_unnormalized_is_centred_reward():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 1.0, 2.0, 2.0]]), std_normalize=False)
    torch.testing.assert_close(adv, torch.tensor([[0.75, -0.25, -0.25, -0.25], [1.0, -1.0, 0.0, 0.0]]))


def test_all_equal_groups_are_exactly_zero():
    # 0.1 and 0.7 are not exact in binary: a computed mean leaves residues unless zeroed explicitly.
    rewards = torch.tensor([[0.1, 0.1, 0.1], [0.7, 0.7, 0.7], [1.0, 0.0, 1.0]])
    for std_normalize in (True, False):
        adv = group_advantages(rewards, std_normalize=std_normalize, eps=0.0)
        assert torch.equal(adv[:2], torch.zeros(2, 3))
        assert adv[2].abs().min() > 0
    assert torch.equal(compute_advantages(rewards[:2], "rloo"), torch.zeros(2, 3))


def test_zero_variance():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5000001]])
    assert zero_variance(rewards).tolist() == [True, False, True, False]


def test_single_completion_groups_get_zero():
    rewards = torch.tensor([[1.0], [0.0]])
    assert torch.equal(group_advantages(rewards, True), torch.zeros(2, 1))
    assert zero_variance(rewards).tolist() == [True, True]


def test_integer_rewards_and_group_sums():
    adv = group_advantages(torch.tensor([[1, 0, 0, 0], [2, 5, 5, 0]]), std_normalize=True)
    assert adv.dtype == torch.get_default_dtype()
    torch.testing.assert_close(adv.sum(dim=1), torch.zeros(2), atol=1e-6, rtol=0)


def test_registry_estimators_by_name():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert {"grpo", "dr_grpo", "rloo"} <= set(ADVANTAGE_ESTIMATORS)
    torch.testing.assert_close(compute_advantages(rewards, "grpo", eps=0.0), rewards.new_tensor([[1.5, -0.5, -0.5, -0.5]]))
    torch.testing.assert_close(compute_advantages(rewards, "dr_grpo"), rewards.new_tensor([[0.75, -0.25, -0.25, -0.25]]))
    # Leave-one-out: 1 - mean(0, 0, 0) = 1; 0 - mean(1, 0, 0) = -1/3.
    torch.testing.assert_close(compute_advantages(rewards, "rloo"), rewards.new_tensor([[1.0, -1 / 3, -1 / 3, -1 / 3]]))


def test_register_custom_estimator_and_errors():
    @register_advantage("test_sign")
    def _sign(rewards, *, eps):
        return torch.sign(group_advantages(rewards, std_normalize=False))

    try:
        assert compute_advantages(torch.tensor([[2.0, 0.0]]), "test_sign").tolist() == [[1.0, -1.0]]
        with pytest.raises(ValueError, match="already registered"):
            register_advantage("test_sign")(_sign)
    finally:
        del ADVANTAGE_ESTIMATORS["test_sign"]
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'nope'; known: \['dr_grpo', 'grpo', 'rloo'\]"):
        compute_advantages(torch.zeros(1, 2), "nope")


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"rewards must be \[P, G\].*\(4,\)"):
        group_advantages(torch.zeros(4), True)
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(1, 4), True, eps=-1.0)
    with pytest.raises(ValueError, match="rloo needs at least 2"):
        compute_advantages(torch.zeros(3, 1), "rloo")
