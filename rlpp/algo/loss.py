"""The GRPO policy loss: PPO's clipped surrogate per token, an optional k3 KL penalty to a frozen
reference, and an aggregation over tokens chosen by name (``LOSS_AGGREGATIONS``).

Micro-batching contract: the learner splits one optimizer step's batch into micro-batches and sums
their gradients. Every aggregation therefore divides by step-wide constants (``total_sequences``,
``total_tokens``, ``max_len``) rather than by this input's own counts, which makes the loss additive:
the sum of ``policy_loss`` over the micro-batches equals ``policy_loss`` of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor


@dataclass(frozen=True)
class PolicyLossInput:
    """One (micro-)batch of N sequences padded to T tokens. Shapes are checked on construction."""

    logprobs: Tensor
    """[N, T] log pi_theta of the sampled tokens under the policy being trained (requires grad)."""
    old_logprobs: Tensor
    """[N, T] log-probs of the same tokens under the behaviour policy that sampled them (no grad)."""
    advantages: Tensor
    """[N] one advantage per sequence, shared by all its tokens."""
    mask: Tensor
    """[N, T] bool or 0/1 float: nonzero on completion tokens, zero on prompt and padding."""
    ref_logprobs: Tensor | None = None
    """[N, T] log-probs under the frozen reference policy; None: no KL term and no ``kl`` metric."""
    sequence_weights: Tensor | None = None
    """[N] per-sequence loss weights (a sampler's importance weights, e.g. ``per``); None: all 1."""
    token_weights: Tensor | None = None
    """[N, T] per-token loss weights (truncated importance sampling against the rollout engine's
    log-probs, see ``tis_weights``); None: all 1."""

    def __post_init__(self) -> None:
        if self.logprobs.dim() != 2:
            raise ValueError(f"logprobs must be [N, T], got shape {tuple(self.logprobs.shape)}")
        shape = tuple(self.logprobs.shape)
        for name in ("old_logprobs", "mask", "ref_logprobs", "token_weights"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {shape}, the shape of logprobs")
        if self.sequence_weights is not None and tuple(self.sequence_weights.shape) != shape[:1]:
            raise ValueError(f"sequence_weights has shape {tuple(self.sequence_weights.shape)}; expected ({shape[0]},)")
        if tuple(self.advantages.shape) != shape[:1]:
            raise ValueError(
                f"advantages has shape {tuple(self.advantages.shape)}; expected ({shape[0]},), one per sequence"
            )


@dataclass(frozen=True)
class PolicyLossOutput:
    loss: Tensor
    """Scalar to backpropagate: pg_loss + kl_coef * (aggregated KL)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """``loss`` and ``pg_loss`` use the step-wide normalisers, so they sum over micro-batches like
    ``loss``. ``clip_frac``, ``clip_frac_low``, ``clip_frac_high``, ``ratio_mean`` and ``kl`` (k3, only
    with a reference) are means over this input's masked tokens; weight them by ``tokens`` to combine
    micro-batches."""


@dataclass(frozen=True)
class LossNorm:
    """The step-wide normalisers an aggregation divides by (see the module's micro-batching contract)."""

    total_sequences: int
    """Sequences in the whole optimizer step."""
    total_tokens: int
    """Masked (completion) tokens in the whole optimizer step."""
    max_len: int | None
    """Generation budget in tokens (``dr_grpo``'s constant denominator)."""


Aggregation = Callable[[Tensor, Tensor, LossNorm], Tensor]
"""(per-token values [N, T], zero off the mask; mask bool [N, T]; norms) -> scalar."""

LOSS_AGGREGATIONS: dict[str, Aggregation] = {}
"""Token aggregations by name; add one with ``@register_aggregation(name)``. Each must be additive
over micro-batches (a sum of per-sequence or per-token terms divided by step-wide constants)."""


def register_aggregation(name: str) -> Callable[[Aggregation], Aggregation]:
    def wrap(fn: Aggregation) -> Aggregation:
        if name in LOSS_AGGREGATIONS:
            raise ValueError(f"loss aggregation {name!r} is already registered")
        LOSS_AGGREGATIONS[name] = fn
        return fn

    return wrap


@register_aggregation("grpo")
def _sequence_mean(values: Tensor, mask: Tensor, norm: LossNorm) -> Tensor:
    """Mean over each sequence's tokens, then mean over the step's sequences (GRPO paper)."""
    # An empty completion (no masked token) contributes 0 rather than 0 / 0.
    lengths = mask.sum(dim=1).clamp(min=1).to(values.dtype)
    return (values.sum(dim=1) / lengths).sum() / norm.total_sequences


@register_aggregation("dr_grpo")
def _budget_sum(values: Tensor, mask: Tensor, norm: LossNorm) -> Tensor:
    """Token sum over a constant generation budget, then mean over sequences (Dr. GRPO, Liu et al.
    2025): dividing by each sequence's own length biases updates to short right and long wrong answers."""
    if norm.max_len is None:
        raise ValueError("loss variant 'dr_grpo' needs max_len (the generation budget in tokens)")
    return values.sum() / (norm.max_len * norm.total_sequences)


@register_aggregation("dapo")
def _token_mean(values: Tensor, mask: Tensor, norm: LossNorm) -> Tensor:
    """Token-level mean over the whole step (DAPO): every token weighs the same, whatever its length."""
    return values.sum() / max(norm.total_tokens, 1)


def _step_total(name: str, given: int | None, local: int) -> int:
    if given is None:
        return local
    if given < local:
        raise ValueError(f"{name} = {given} is smaller than this input's own count, {local}")
    return given


def policy_loss(
    inp: PolicyLossInput,
    *,
    variant: str,
    clip_low: float,
    clip_high: float,
    kl_coef: float = 0.0,
    total_sequences: int | None = None,
    total_tokens: int | None = None,
    max_len: int | None = None,
) -> PolicyLossOutput:
    """Clipped surrogate -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) per token, r = exp(logp -
    old_logp), plus kl_coef * k3 KL to the reference, both aggregated by ``LOSS_AGGREGATIONS[variant]``.

    ``total_sequences`` / ``total_tokens`` are the whole step's counts (default: this input's own);
    ``max_len`` is required by ``dr_grpo``. The KL term needs ``ref_logprobs`` when ``kl_coef > 0``.
    """
    if variant not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss variant {variant!r}; known: {sorted(LOSS_AGGREGATIONS)}")
    if not 0.0 <= clip_low <= 1.0 or clip_high < 0.0:
        raise ValueError(f"need 0 <= clip_low <= 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    if kl_coef < 0.0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if kl_coef > 0.0 and inp.ref_logprobs is None:
        raise ValueError(f"kl_coef = {kl_coef} > 0 needs ref_logprobs")
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    aggregate = LOSS_AGGREGATIONS[variant]

    mask = inp.mask != 0
    n_tokens = int(mask.sum())
    norm = LossNorm(
        total_sequences=_step_total("total_sequences", total_sequences, mask.shape[0]),
        total_tokens=_step_total("total_tokens", total_tokens, n_tokens),
        max_len=max_len,
    )
    # bf16 log-probs lose the small ratio differences clipping decides on; compute in >= fp32.
    dtype = torch.promote_types(inp.logprobs.dtype, torch.float32)
    logp = inp.logprobs.to(dtype)
    adv = inp.advantages.detach().to(dtype).unsqueeze(1)  # [N, 1]

    # Off-mask log-ratios are zeroed *before* exp: padding may hold anything (even inf / NaN), and
    # exp(inf) * 0 would put NaN into the loss or its gradient; where() passes no gradient there.
    log_ratio = torch.where(mask, logp - inp.old_logprobs.detach().to(dtype), 0.0)
    ratio = log_ratio.exp()
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(-ratio * adv, -clipped * adv)
    if inp.token_weights is not None:
        per_token = per_token * inp.token_weights.detach().to(dtype)
    if inp.sequence_weights is not None:
        per_token = per_token * inp.sequence_weights.detach().to(dtype).unsqueeze(1)
    per_token = per_token.masked_fill(~mask, 0.0)
    pg_loss = aggregate(per_token, mask, norm)
    loss = pg_loss

    stats = {"loss": loss, "pg_loss": pg_loss}
    if inp.ref_logprobs is not None:
        # k3 = exp(d) - d - 1 with d = log(ref / pi): unbiased for KL(pi || ref) and never negative.
        d = torch.where(mask, inp.ref_logprobs.detach().to(dtype) - logp, 0.0)
        kl_token = d.exp() - d - 1.0  # exactly 0 off the mask, where d = 0
        if kl_coef > 0.0:
            loss = pg_loss + kl_coef * aggregate(kl_token, mask, norm)
            stats["loss"] = loss
        stats["kl"] = kl_token.sum() / max(n_tokens, 1)

    with torch.no_grad():
        # Clipping is active where it removes the gradient: r above 1 + clip_high on a positive
        # advantage, r below 1 - clip_low on a negative one.
        high = (ratio > 1.0 + clip_high) & (adv > 0) & mask
        low = (ratio < 1.0 - clip_low) & (adv < 0) & mask
        denom = max(n_tokens, 1)
        stats["clip_frac_high"] = high.sum() / denom
        stats["clip_frac_low"] = low.sum() / denom
        stats["clip_frac"] = (high | low).sum() / denom
        stats["ratio_mean"] = ratio.masked_fill(~mask, 0.0).sum() / denom
        names = list(stats)
        # One device-to-host copy for all metrics instead of one sync per .item().
        values = torch.stack([stats[k].detach().to(dtype) for k in names]).tolist()
    metrics = dict(zip(names, values))
    metrics["tokens"] = float(n_tokens)
    return PolicyLossOutput(loss=loss, metrics=metrics)


def tis_weights(old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor, cap: float) -> tuple[Tensor, dict]:
    """Truncated importance weights min(π_old / π_rollout, cap) per token (Yao et al., 2025, "Your efficient
    RL framework secretly brings you off-policy RL training"): the rollout engine samples from slightly
    different numbers than the learner computes (kernels, precision), and a stale engine from an older
    policy; weighting each token by the capped ratio corrects the gradient for that mismatch without
    letting a rare token's huge ratio dominate. Zero off the mask. Also returns ``tis_mean`` and
    ``tis_capped_frac`` over the masked tokens."""
    m = mask != 0
    w = torch.where(m, (old_logprobs.detach().float() - rollout_logprobs.detach().float()).exp(), 0.0)
    capped = (w > cap) & m
    w = w.clamp(max=cap)
    n = max(int(m.sum()), 1)
    return w, {"tis_mean": float(w.sum()) / n, "tis_capped_frac": float(capped.sum()) / n}
