"""From scored GRPO groups to the learner's padded tensors.

Each kept sample becomes one row: prompt tokens then completion tokens, right-padded. ``loss_mask``
marks the completion tokens (the ones the policy chose), so the learner predicts token t from t - 1
and scores only those.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from rlpp.algo.advantages import compute_advantages, zero_variance


@dataclass
class TrainBatch:
    input_ids: Tensor  # (N, L) long: prompt + completion, right-padded
    attention_mask: Tensor  # (N, L) long
    loss_mask: Tensor  # (N, L) bool: completion tokens
    advantages: Tensor  # (N,) float: one per sequence
    rollout_logprobs: Tensor  # (N, L) float: the engine's log-probs at completion tokens, 0 elsewhere
    weights: Tensor | None = None  # (N,) float: per-sequence loss weights (a sampler's importance weights)
    old_logprobs: Tensor | None = None  # (N, L) float: the ratio's denominator; None: the policy's own (on-policy)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.loss_mask.sum())

    def select(self, rows) -> "TrainBatch":
        """Rows ``rows`` (an index list/tensor), trimmed to their longest sequence."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        width = int(self.attention_mask[idx].sum(1).max()) if len(idx) else 1
        return TrainBatch(**{f.name: self._rows(getattr(self, f.name), idx, width) for f in fields(self)})

    @staticmethod
    def _rows(t: Tensor | None, idx: Tensor, width: int) -> Tensor | None:
        if t is None:
            return None
        t = t[idx]
        return t[:, :width] if t.dim() == 2 else t


def make_train_batch(
    prompts: list[list[int]],
    completions: list[list[tuple[list[int], list[float]]]],
    rewards: Tensor,
    *,
    estimator: str = "grpo",
    drop_zero_variance: bool,
    pad_id: int,
    weights=None,
) -> tuple[TrainBatch | None, dict[str, float]]:
    """Advantages per group, then rows for the learner.

    ``prompts[i]`` are prompt token ids of problem i, ``completions[i][j]`` its j-th (token ids, log-probs),
    ``rewards`` has shape (P, G); ``estimator`` names a registered advantage estimator; ``weights`` (P,) are per-problem loss weights every sample of the
    group carries (None: no weights). Returns None for the batch when every group was dropped.
    """
    rewards = rewards.to(torch.float64)
    adv = compute_advantages(rewards, estimator)
    flat = zero_variance(rewards)
    metrics = {
        "rollout/zero_variance_frac": float(flat.double().mean()),
        # Over every sample, dropped groups included: the learning signal per rollout generated.
        "rollout/mean_abs_adv": float(adv.abs().mean()),
        "rollout/reward_mean": float(rewards.mean()),
    }
    keep = [i for i in range(len(prompts)) if not (drop_zero_variance and flat[i])]
    rows = [(prompts[i], completions[i][j], float(adv[i, j])) for i in keep for j in range(rewards.shape[1])]
    metrics["train/sequences"] = len(rows)
    if not rows:
        return None, metrics
    width = max(len(p) + len(c[0]) for p, c, _ in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    loss_mask = torch.zeros((n, width), dtype=torch.bool)
    logprobs = torch.zeros((n, width), dtype=torch.float32)
    for r, (p, (ids, lps), _) in enumerate(rows):
        end = len(p) + len(ids)
        input_ids[r, : len(p)] = torch.tensor(p)
        input_ids[r, len(p) : end] = torch.tensor(ids, dtype=torch.long)
        attention[r, :end] = 1
        loss_mask[r, len(p) : end] = True
        logprobs[r, len(p) : end] = torch.tensor(lps, dtype=torch.float32)
    advantages = torch.tensor([a for _, _, a in rows], dtype=torch.float32)
    w = None
    if weights is not None:
        per_problem = torch.as_tensor(weights, dtype=torch.float32)
        if per_problem.shape != (len(prompts),):
            raise ValueError(f"weights must hold one value per problem ({len(prompts)}), got shape {tuple(per_problem.shape)}")
        w = per_problem[[i for i in keep for _ in range(rewards.shape[1])]]
    batch = TrainBatch(input_ids, attention, loss_mask, advantages, logprobs, weights=w)
    metrics["train/tokens"] = batch.num_tokens
    return batch, metrics


def plan_micro_batches(lengths, world_size: int, max_rows: int, max_tokens: int = 0) -> list[list[list[int]]]:
    """Which rows each rank trains on, as micro-batches: ``plan[rank][k]`` lists row indices.

    Rows go longest first to the rank with the fewest tokens so far (ranks finish together), and each
    rank's rows, still longest first, are cut into micro-batches of at most ``max_rows`` rows whose
    padded size (rows x the longest row) stays within ``max_tokens`` (0: no budget). Neighbours in
    length share a micro-batch, so padding costs little; a row longer than the budget goes alone.
    Ranks may get different numbers of micro-batches: the caller pads with empty ones.
    """
    lengths = [int(n) for n in lengths]
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    loads = [0] * world_size
    per_rank: list[list[int]] = [[] for _ in range(world_size)]
    for i in order:
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        per_rank[rank].append(i)
        loads[rank] += lengths[i]
    plan = []
    for rows in per_rank:
        micro: list[list[int]] = []
        for i in rows:
            current = micro[-1] if micro else None
            # Rows arrive longest first, so the first row of a micro-batch sets its padded width.
            fits = current is not None and len(current) < max_rows and (
                not max_tokens or (len(current) + 1) * lengths[current[0]] <= max_tokens)
            if fits:
                current.append(i)
            else:
                micro.append([i])
        plan.append(micro)
    return plan
