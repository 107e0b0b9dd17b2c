"""Chosen-token log-probs without [N, T, V] logits, and micro-batches by a token budget."""

from __future__ import annotations

import pytest
import torch

from rlpp.algo.batch import plan_micro_batches
from rlpp.algo.logprobs import chunked_token_logprobs, reference_token_logprobs
from rlpp.learner.policy import TokenLogprobs
from rlpp.models.tiny import load_model


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_chunked_logprobs_equal_the_full_computation_with_gradients(chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    logp, ent = chunked_token_logprobs(head, hidden, targets, temperature=0.7, chunk_tokens=chunk)
    (logp * torch.linspace(-1, 1, 37)).sum().backward()
    grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = head.weight.grad = None
    ref_logp, ref_ent = reference_token_logprobs(head(hidden), targets, 0.7)
    (ref_logp * torch.linspace(-1, 1, 37)).sum().backward()
    torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[0], hidden.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(grads[1], head.weight.grad, atol=1e-5, rtol=0)
    assert not ent.requires_grad


def test_chunks_are_recomputed_in_backward_not_kept(monkeypatch):
    """Each chunk's logits are built twice (forward, then backward's recomputation): nothing of size
    [chunk, V] is saved for backward."""
    head = torch.nn.Linear(8, 30, bias=False)
    calls = []
    monkeypatch.setattr(head, "forward", lambda x: (calls.append(x.shape[0]), torch.nn.functional.linear(x, head.weight))[1])
    hidden = torch.randn(10, 8, requires_grad=True)
    logp, _ = chunked_token_logprobs(head, hidden, torch.zeros(10, dtype=torch.long), chunk_tokens=4)
    assert calls == [4, 4, 2]
    logp.sum().backward()
    assert sorted(calls) == sorted([4, 4, 2] * 2)


def test_policy_wrapper_matches_the_model_logits(tiny_model_dir, grpo_batch):
    """The learner's module gives log softmax(logits / T) of each completion token, 0 elsewhere."""
    model = load_model(tiny_model_dir)
    wrapper = TokenLogprobs(model, temperature=0.8, chunk_tokens=3)
    batch = grpo_batch(2)
    logp, ent = wrapper(batch.input_ids, batch.attention_mask, batch.loss_mask)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    ref, ref_ent = reference_token_logprobs(logits, batch.input_ids[:, 1:], 0.8)
    mask = batch.loss_mask[:, 1:]
    torch.testing.assert_close(logp[mask], ref[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(ent[mask], ref_ent[mask], atol=1e-5, rtol=0)
    assert (logp[~mask] == 0).all()
    # A placeholder micro-batch (no completion token) still reaches every parameter through the graph.
    empty = torch.zeros_like(batch.loss_mask)
    logp, _ = wrapper(batch.input_ids, batch.attention_mask, empty)
    (logp.sum() * 0).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_micro_batches_by_token_budget():
    lengths = [5, 9, 3, 9, 2, 7, 7, 1, 30]
    plan = plan_micro_batches(lengths, world_size=2, max_rows=3, max_tokens=20)
    rows = sorted(i for rank in plan for mb in rank for i in mb)
    assert rows == list(range(len(lengths)))  # every row exactly once
    for rank in plan:
        for mb in rank:
            width = max(lengths[i] for i in mb)
            assert len(mb) <= 3 and (len(mb) * width <= 20 or len(mb) == 1)  # 30 > 20 goes alone
            assert [lengths[i] for i in mb] == sorted((lengths[i] for i in mb), reverse=True)
    loads = [sum(lengths[i] for mb in rank for i in mb) for rank in plan]
    assert max(loads) - min(loads) <= max(lengths)  # ranks balanced by tokens
    # Without a budget: micro_batch_size rows each, length-sorted.
    assert plan_micro_batches([1, 2, 3, 4], 1, 2, 0) == [[[3, 2], [1, 0]]]


def test_sorted_packing_pays_less_padding_than_group_order():
    """The point of sorting: groups mix long (truncated) and short completions."""
    import random

    random.seed(0)
    lengths = [random.choice([60, 2000]) if i % 8 == 0 else random.randint(50, 400) for i in range(64)]
    padded = lambda plan: sum(len(mb) * max(lengths[i] for i in mb) for rank in plan for mb in rank)
    in_order = [[list(range(k, min(k + 8, 64))) for k in range(0, 64, 8)]]
    assert padded(plan_micro_batches(lengths, 1, 8)) < 0.7 * padded(in_order)
