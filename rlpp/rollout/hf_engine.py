"""Generation with transformers ``generate``: the engine of the tiny CPU default and a fallback anywhere."""

from __future__ import annotations

from typing import Iterable

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from rlpp.models.tiny import load_model
from rlpp.rollout.engine import Completion, Sampling, cut_at_eos, stop_token_ids


class ChosenTokenLogprobs(LogitsProcessor):
    """Records log softmax(logits / T) of each sampled token, one decode step at a time.

    ``generate(output_logits=True)`` would keep every step's full-vocabulary logits (rows x steps x V
    floats: ~80 GB for 64 rows of 2k tokens with a 152k vocabulary). This processor sees the raw logits
    of step t (custom processors run before temperature and top-p), keeps that step's log-probs until
    step t + 1 shows which token was drawn, and keeps only that token's value: one [rows, V] tensor at
    a time. ``finish(new_tokens)`` adds the last step and returns [rows, steps]."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.last: torch.Tensor | None = None
        self.chosen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.last is not None:
            self.chosen.append(self.last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        if self.last is not None and len(self.chosen) < new_tokens.shape[1]:
            self.chosen.append(self.last.gather(-1, new_tokens[:, len(self.chosen) : len(self.chosen) + 1]).squeeze(-1))
        self.last = None
        if not self.chosen:
            return torch.zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(self.chosen, dim=1)


class HFEngine:
    """Batched sampling with a transformers causal LM; log-probs from the raw logits divided by T."""

    def __init__(self, model_path: str | None = None, *, model: torch.nn.Module | None = None, dtype: str = "float32",
                 device: str = "cpu", seed: int | None = 0, trust_remote_code: bool = False, max_batch: int = 1024):
        """Load ``model_path``, or wrap an in-memory ``model`` (as the warm start does: it shares the
        module, so ``seed=None`` leaves torch's generator alone)."""
        self.device = torch.device(device)
        if model is None:
            model = load_model(model_path, dtype, trust_remote_code)
        self.model = model.to(self.device).eval()
        cfg = self.model.config
        self.eos_ids = stop_token_ids(cfg, self.model.generation_config)
        self.pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else min(self.eos_ids)
        self.max_batch = max_batch
        if seed is not None:
            torch.manual_seed(seed)  # transformers samples from torch's global generator

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: Sampling) -> list[list[Completion]]:
        rows = [p for p in prompts for _ in range(sampling.n)]
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)  # transformers samples from torch's global generator
        flat: list[Completion] = []
        for start in range(0, len(rows), self.max_batch):
            flat.extend(self._generate_rows(rows[start : start + self.max_batch], sampling))
        n = sampling.n
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _generate_rows(self, rows: list[list[int]], s: Sampling) -> list[Completion]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding keeps every row's next token at the same position
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        greedy = s.temperature == 0
        chosen = ChosenTokenLogprobs(1.0 if greedy else s.temperature)
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            do_sample=not greedy,
            temperature=None if greedy else s.temperature,
            top_p=None if greedy else s.top_p,
            # What a model's generation_config.json may set (chat models often set repetition_penalty and
            # top_k) would otherwise apply: the penalty before the recorder, the cuts to the draw. Both
            # must be log_softmax(logits / T) with top_p alone, as the learner and vLLM take them.
            top_k=None, min_p=None, typical_p=None, repetition_penalty=1.0,
            max_new_tokens=s.max_new_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            logits_processor=LogitsProcessorList([chosen]),
        )
        new = out[:, width:]
        logp = chosen.finish(new).cpu()
        return [cut_at_eos(t, lp, self.eos_ids) for t, lp in zip(new.cpu().tolist(), logp.tolist())]

    def sleep(self) -> None:
        """Free the device for the learner (colocated mode): the model moves to CPU memory."""
        if self.device.type == "cuda":
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Back on the device; ``tags`` as vLLM's (an HF model has only weights to bring back)."""
        if tags is None or "weights" in tags:
            self.model.to(self.device)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        state = {name: t for name, t in named_tensors}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        # Tied weights (lm_head = embeddings) may be sent once under either name.
        missing = [k for k in missing if k not in self.model._tied_weights_keys] if missing else missing
        if missing or unexpected:
            raise ValueError(f"weights do not match the rollout model: missing {missing[:5]}, unexpected {unexpected[:5]}")
