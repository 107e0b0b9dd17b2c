"""Reward functions by name or ``package.module:function``, and the batch scorer that turns a failing
or hung call into a counted 0 (no Ray, no torch)."""

from rlpp.reward import builtin  # noqa: F401  (registers the built-in rewards)
from rlpp.reward.builtin import final_answer, last_boxed
from rlpp.reward.registry import REWARDS, RewardFn, is_inline, register_reward, resolve_reward
from rlpp.reward.scorer import RewardScorer

__all__ = ["REWARDS", "RewardFn", "RewardScorer", "final_answer", "is_inline", "last_boxed", "register_reward",
           "resolve_reward"]
