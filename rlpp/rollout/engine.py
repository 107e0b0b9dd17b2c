"""The engine protocol: token ids in, G completions per prompt with per-token log-probs out.

Engines work on token ids only. rlpp tokenizes prompts itself (with the tokenizer class the model was
saved with) and decodes completions itself, so vLLM runs with ``skip_tokenizer_init`` and both engines
see exactly the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import torch


@dataclass(frozen=True)
class Sampling:
    """How to sample one call's completions."""

    n: int  # completions per prompt (the GRPO group size G; 1 for evaluation)
    temperature: float  # 0 means greedy
    top_p: float
    max_new_tokens: int
    seed: int | None = None  # seeds this call's sampling, so a resumed run draws what the original did


@dataclass
class Completion:
    """One generated continuation of a prompt."""

    token_ids: list[int]  # generated tokens, ending with eos when the model stopped by itself
    logprobs: list[float]  # log-prob of each token under the sampling distribution softmax(logits / T)
    finished: bool  # True when the model emitted eos, False when max_new_tokens cut it


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        """For each prompt (token ids), ``sampling.n`` completions."""
        ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the model's weights (names as in the HF model's ``state_dict``)."""
        ...

    def sleep(self) -> None:
        """Colocated mode: give the device memory back while the learner trains (may do nothing)."""
        ...

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Undo ``sleep`` for ``tags`` (``weights``, ``kv_cache``; None: everything)."""
        ...


def cut_at_eos(token_ids: list[int], logprobs: list[float], eos_ids: set[int]) -> Completion:
    """Keep tokens up to and including the first eos (what follows is padding)."""
    for i, t in enumerate(token_ids):
        if t in eos_ids:
            return Completion(token_ids[: i + 1], logprobs[: i + 1], True)
    return Completion(list(token_ids), list(logprobs), False)


def stop_token_ids(config, generation_config=None) -> set[int]:
    """Every end-of-sequence id the model declares, in ``config.json`` and ``generation_config.json``
    (Qwen2.5 lists 151645 in one and adds 151643 in the other): vLLM stops on both, so both engines do
    and a completion ending in either counts as finished, not truncated."""
    ids: set[int] = set()
    for source in (config, generation_config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if eos is not None:
            ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    if not ids:
        raise ValueError("the model declares no eos_token_id in config.json or generation_config.json")
    return ids
