"""Per-token log-probs and entropy of chosen tokens without materialising ``[N, T, V]`` logits.

With a real vocabulary (Qwen2.5: 151,936) the logits of one micro-batch dwarf everything else: 8
sequences of 2.2k tokens are 10.7 GB in fp32, and the textbook ``log_softmax(logits).gather`` keeps
several such tensors alive for backward. Here the language-model head runs over chunks of at most
``chunk_tokens`` *completion* tokens (prompt and padding positions are never scored), each chunk
computes ``logit[target] - logsumexp(logits)`` in fp32, and each chunk is checkpointed: backward
recomputes that chunk's logits instead of keeping them. Peak memory for the head is then one chunk's
``[chunk_tokens, V]`` (a few copies of it), independent of T.

``reference_token_logprobs`` is the straightforward version, kept for tests and the memory benchmark.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def _chunk_logprobs(head: Callable[[Tensor], Tensor], hidden: Tensor, targets: Tensor, temperature: float,
                    softcap: float | None) -> tuple[Tensor, Tensor]:
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    with torch.no_grad():  # entropy is a metric: no graph, and in place to hold one copy
        probs = torch.softmax(logits.detach(), dim=-1)
        entropy = lse.detach() - (probs.mul_(logits.detach())).sum(-1)
    return logp, entropy


def chunked_token_logprobs(head: Callable[[Tensor], Tensor], hidden: Tensor, targets: Tensor, *,
                           temperature: float = 1.0, chunk_tokens: int = 1024, softcap: float | None = None,
                           checkpointed: bool = True) -> tuple[Tensor, Tensor]:
    """log p(targets[i] | hidden[i]) and the entropy at each of N positions.

    ``head`` maps ``[n, H]`` hidden states to ``[n, V]`` logits (the model's output embedding module);
    ``hidden`` is ``[N, H]``, ``targets`` ``[N]``. The log-probs carry gradients to ``hidden`` and the
    head's weights; the entropy carries none."""
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, empty
    logps, entropies = [], []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        if checkpointed and torch.is_grad_enabled():
            lp, ent = checkpoint(_chunk_logprobs, head, h, t, temperature, softcap, use_reentrant=False)
        else:
            lp, ent = _chunk_logprobs(head, h, t, temperature, softcap)
        logps.append(lp)
        entropies.append(ent.detach())
    return torch.cat(logps), torch.cat(entropies)


def reference_token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """The same quantities from full ``[..., V]`` logits (what the learner did before chunking)."""
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
