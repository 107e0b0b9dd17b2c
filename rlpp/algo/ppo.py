"""PPO over one rollout batch: epochs x mini-batches of optimizer steps against the behaviour policy.

Pure torch; the optimizer step and the log-prob forward are passed in (the learner group runs them on
its ranks), so this file is the whole algorithm: which log-probs the ratio is taken against, how rows
are shuffled into mini-batches, and how the steps' metrics are averaged.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from rlpp.algo.batch import TrainBatch


def ppo_update(batch: TrainBatch, *, epochs: int, mini_batches: int, old_logprobs: str,
               step: Callable[[TrainBatch], dict[str, float]], logprobs: Callable[[TrainBatch], torch.Tensor],
               seed: int = 0) -> dict[str, float]:
    """``epochs`` passes over ``batch``, each split into ``mini_batches`` optimizer steps (rows shuffled with
    ``seed``). The ratio is taken against the behaviour policy: the rollout engine's log-probs
    (``old_logprobs="rollout"``), or the policy's own, computed once by ``logprobs`` before the first update
    (``"recompute"``; with a single optimizer step they equal the policy's own and are not computed).
    Metrics are means over the optimizer steps, times (``time/...``) sums; ``train/skipped`` is 1 if any step
    was skipped. ``time/logprob_recompute`` is the seconds spent recomputing old log-probs (0 when not)."""
    n_mini = min(mini_batches, len(batch))
    steps = epochs * n_mini
    recompute = 0.0
    if old_logprobs == "rollout":
        batch = replace(batch, old_logprobs=batch.rollout_logprobs)
    elif steps > 1:
        t0 = time.perf_counter()
        batch = replace(batch, old_logprobs=logprobs(batch))
        recompute = time.perf_counter() - t0
    if steps == 1:
        return {**step(batch), "train/optimizer_steps": 1.0, "time/logprob_recompute": recompute}
    gen = torch.Generator().manual_seed(seed)
    outs = []
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=gen)
        for part in torch.tensor_split(order, n_mini):
            outs.append(step(batch.select(part.tolist())))
    metrics = {k: float((np.sum if k.startswith("time/") else np.mean)([o[k] for o in outs])) for k in outs[0]}
    metrics["train/skipped"] = float(any(o["train/skipped"] for o in outs))
    return {**metrics, "train/optimizer_steps": float(steps), "time/logprob_recompute": recompute}
