"""Group-relative advantages: each completion's reward measured against its siblings (same prompt).

Rewards arrive as a ``[P, G]`` tensor: P prompts (groups), G completions per prompt. Every estimator
returns a ``[P, G]`` tensor and gives exactly 0 to every completion of a group whose rewards are all
equal: such a group carries no learning signal, and exact zeros let the caller drop it safely.

Std choice: ``std_normalize`` divides by the *unbiased* (Bessel, ``G - 1``) group std, as TRL's
``GRPOTrainer`` and verl's GRPO estimator do (both call ``Tensor.std`` with its unbiased default; the
DeepSeekMath paper says only "std"). Matching them keeps advantage scales, and so effective learning
rates, comparable with runs and hyper-parameters reported with those frameworks. The choice only
scales every advantage by ``sqrt((G - 1) / G)`` relative to the biased std (0.87 at G = 4).
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor


class AdvantageEstimator(Protocol):
    def __call__(self, rewards: Tensor, *, eps: float) -> Tensor:
        """rewards [P, G] -> advantages [P, G]."""
        ...


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
"""Advantage estimators by name; add one with ``@register_advantage(name)``."""


def register_advantage(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Register ``fn(rewards [P, G], *, eps) -> advantages [P, G]`` under ``name``."""

    def wrap(fn: AdvantageEstimator) -> AdvantageEstimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return wrap


def _as_groups(rewards: Tensor) -> Tensor:
    if rewards.dim() != 2 or rewards.shape[1] < 1:
        raise ValueError(
            f"rewards must be [P, G] (prompts x completions per prompt, G >= 1), got shape {tuple(rewards.shape)}"
        )
    return rewards if rewards.is_floating_point() else rewards.to(torch.get_default_dtype())


def zero_variance(rewards: Tensor) -> Tensor:
    """BoolTensor [P]: True for groups whose G rewards are all exactly equal."""
    rewards = _as_groups(rewards)
    return (rewards == rewards[:, :1]).all(dim=1)


def group_advantages(rewards: Tensor, std_normalize: bool, eps: float = 1e-6) -> Tensor:
    """Reward minus its group's mean, divided by (unbiased group std + eps) when ``std_normalize``.

    rewards: [P, G]. Returns [P, G]; all-equal groups (and every group when G == 1) get exactly 0.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    rewards = _as_groups(rewards)
    flat = zero_variance(rewards).unsqueeze(1)  # [P, 1]
    if rewards.shape[1] == 1:
        # The unbiased std of one sample is undefined (NaN); a lone completion has nothing to beat.
        return torch.zeros_like(rewards)
    adv = rewards - rewards.mean(dim=1, keepdim=True)
    if std_normalize:
        std = rewards.std(dim=1, keepdim=True, unbiased=True)
        # Flat groups divide by 1 so that eps = 0 is allowed; they are zeroed just below anyway.
        adv = adv / torch.where(flat, torch.ones_like(std), std + eps)
    # Floating-point means can leave ~1e-17 residues in flat groups; the contract is exact zeros.
    return adv.masked_fill(flat, 0.0)


def compute_advantages(rewards: Tensor, estimator: str = "grpo", eps: float = 1e-6) -> Tensor:
    """Advantages [P, G] from rewards [P, G] by the registered estimator ``estimator``."""
    try:
        fn = ADVANTAGE_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {estimator!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}"
        ) from None
    return fn(rewards, eps=eps)


@register_advantage("grpo")
def _grpo(rewards: Tensor, *, eps: float) -> Tensor:
    return group_advantages(rewards, std_normalize=True, eps=eps)


@register_advantage("dr_grpo")
def _dr_grpo(rewards: Tensor, *, eps: float) -> Tensor:
    # Dr. GRPO (Liu et al. 2025): std scaling up-weights near-flat groups (too easy / too hard), a bias.
    return group_advantages(rewards, std_normalize=False, eps=eps)


@register_advantage("rloo")
def _rloo(rewards: Tensor, *, eps: float) -> Tensor:
    """Leave-one-out baseline: r_i - mean_{j != i} r_j, which equals G / (G - 1) * (r_i - mean)."""
    rewards = _as_groups(rewards)
    g = rewards.shape[1]
    if g < 2:
        raise ValueError(f"rloo needs at least 2 completions per prompt, got G = {g}")
    return group_advantages(rewards, std_normalize=False) * (g / (g - 1))
