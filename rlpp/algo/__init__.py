"""GRPO math: group-relative advantages and the clipped policy loss (pure torch; no Ray)."""

from rlpp.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_advantages,
    group_advantages,
    register_advantage,
    zero_variance,
)
from rlpp.algo.loss import (
    LOSS_AGGREGATIONS,
    LossNorm,
    PolicyLossInput,
    PolicyLossOutput,
    policy_loss,
    register_aggregation,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS", "compute_advantages", "group_advantages", "register_advantage", "zero_variance",
    "LOSS_AGGREGATIONS", "LossNorm", "PolicyLossInput", "PolicyLossOutput", "policy_loss",
    "register_aggregation",
]
