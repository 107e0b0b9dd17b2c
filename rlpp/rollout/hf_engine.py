"""Generation with transformers ``generate``: the engine of the tiny CPU default and a fallback anywhere."""

from __future__ import annotations

from typing import Iterable

import torch

from rlpp.models.tiny import load_model
from rlpp.rollout.engine import Completion, Sampling, cut_at_eos


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
        eos = self.model.generation_config.eos_token_id or cfg.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
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
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            do_sample=not greedy,
            temperature=None if greedy else s.temperature,
            top_p=None if greedy else s.top_p,
            top_k=None,
            max_new_tokens=s.max_new_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new = out.sequences[:, width:].cpu()
        logits = torch.stack(out.logits, dim=1).float().cpu()
        if not greedy:
            logits = logits / s.temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        return [cut_at_eos(t, lp, self.eos_ids) for t, lp in zip(new.tolist(), logp.tolist())]

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        state = {name: t for name, t in named_tensors}
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        # Tied weights (lm_head = embeddings) may be sent once under either name.
        missing = [k for k in missing if k not in self.model._tied_weights_keys] if missing else missing
        if missing or unexpected:
            raise ValueError(f"weights do not match the rollout model: missing {missing[:5]}, unexpected {unexpected[:5]}")
