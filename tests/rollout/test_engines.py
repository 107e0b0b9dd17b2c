"""Rollout engines: group shapes, log-probs against a transformers recomputation, weight reload."""

from __future__ import annotations

import pytest
import torch

from rlpp.models.tiny import load_model
from rlpp.rollout.engine import Sampling, create_engine

PROMPTS = [[5, 6, 14, 11, 17], [7, 7, 15, 9, 17], [4, 16, 9, 17]]


def recompute_logprobs(model, prompt: list[int], tokens: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    if temperature > 0:
        logits = logits / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


def perturbed(model_dir: str, seed: int) -> dict[str, torch.Tensor]:
    model = load_model(model_dir)
    g = torch.Generator().manual_seed(seed)
    state = {k: v + 0.2 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["model.embed_tokens.weight"]  # tied
    return state


def check_groups(engine, model, n: int, temperature: float, atol: float) -> None:
    groups = engine.generate(PROMPTS, Sampling(n=n, temperature=temperature, top_p=1.0, max_new_tokens=6))
    assert len(groups) == len(PROMPTS) and all(len(g) == n for g in groups)
    for prompt, group in zip(PROMPTS, groups):
        for c in group:
            assert 1 <= len(c.token_ids) <= 6 and len(c.logprobs) == len(c.token_ids)
            assert c.finished == (c.token_ids[-1] == 1)
            assert 1 not in c.token_ids[:-1]  # cut at the first eos
            want = recompute_logprobs(model, prompt, c.token_ids, temperature)
            torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=atol, rtol=0)


def greedy_ids(engine) -> list[list[int]]:
    return [g[0].token_ids for g in engine.generate(PROMPTS, Sampling(1, 0.0, 1.0, 6))]


def hf_greedy(model) -> list[list[int]]:
    from rlpp.rollout.hf_engine import HFEngine

    return greedy_ids(HFEngine(model=model, seed=None))


def test_hf_engine_groups_and_logprobs(tiny_model_dir):
    engine = create_engine("hf", tiny_model_dir, seed=0)
    check_groups(engine, load_model(tiny_model_dir), n=4, temperature=1.0, atol=1e-4)
    check_groups(engine, load_model(tiny_model_dir), n=3, temperature=0.7, atol=1e-4)
    assert greedy_ids(engine) == greedy_ids(engine)


def test_hf_engine_load_weights(tiny_model_dir):
    engine = create_engine("hf", tiny_model_dir, seed=0)
    before = greedy_ids(engine)
    state = perturbed(tiny_model_dir, 1)
    engine.load_weights(state.items())
    model = load_model(tiny_model_dir)
    model.load_state_dict(state)
    assert greedy_ids(engine) == hf_greedy(model) != before
    with pytest.raises(ValueError, match="do not match"):
        engine.load_weights([("model.norm.weight", state["model.norm.weight"])])


@pytest.mark.slow
def test_vllm_engine_on_cpu(tiny_model_dir):
    pytest.importorskip("vllm")
    engine = create_engine("vllm", tiny_model_dir, seed=0, max_model_len=64)
    model = load_model(tiny_model_dir)
    check_groups(engine, model, n=4, temperature=1.0, atol=1e-3)
    assert greedy_ids(engine) == hf_greedy(model)
    # Weight reload: the engine then generates what transformers generates with the new weights.
    state = perturbed(tiny_model_dir, 2)
    engine.load_weights(state.items())
    model.load_state_dict(state)
    assert greedy_ids(engine) == hf_greedy(model)
    check_groups(engine, model, n=2, temperature=1.0, atol=1e-3)
