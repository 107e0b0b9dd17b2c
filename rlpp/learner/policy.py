"""The module DeepSpeed trains: a causal LM that returns the log-probs of the tokens it is asked about.

``TokenLogprobs(model)(input_ids, attention_mask, loss_mask)`` runs the model's decoder once, keeps
the hidden states that predict completion tokens only, and scores them through the output head in
checkpointed chunks (``rlpp.algo.logprobs``), so no ``[N, T, V]`` tensor ever exists. Being the root
module handed to ``deepspeed.initialize``, its forward is the engine's forward, and ZeRO-3's
parameter hooks see every sub-module (the output head included) called through their modules.

The wrapped model is ``.policy``: its ``state_dict`` keys are the Hugging Face ones, which is what
checkpoints and weight sync use.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlpp.algo.logprobs import chunked_token_logprobs


class TokenLogprobs(nn.Module):
    def __init__(self, policy: nn.Module, *, temperature: float, chunk_tokens: int):
        super().__init__()
        self.policy = policy
        self.temperature = temperature
        self.chunk_tokens = chunk_tokens
        self.softcap = getattr(policy.config, "final_logit_softcapping", None)
        if getattr(policy.config, "logit_scale", None) not in (None, 1.0):
            raise ValueError(f"{type(policy).__name__} scales its logits (logit_scale); rlpp's learner does not support it")

    def forward(self, input_ids: Tensor, attention_mask: Tensor, loss_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``[N, L-1]`` log-probs of ``input_ids[:, 1:]`` where ``loss_mask[:, 1:]`` is set (0 elsewhere), and the
        entropy there (no gradient). Position t of the output scores token t + 1."""
        decoder = getattr(self.policy, self.policy.base_model_prefix)
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        where = loss_mask[:, 1:].bool()
        if not where.any():
            # An empty (placeholder) micro-batch still runs the head on one position, so every rank uses
            # every parameter in every micro-batch (ZeRO's gradient collectives must line up); the
            # value is masked out of the loss.
            where = torch.zeros_like(where)
            where[0, 0] = True
        logp, entropy = chunked_token_logprobs(
            self.policy.get_output_embeddings(), hidden[:, :-1][where], input_ids[:, 1:][where],
            temperature=self.temperature, chunk_tokens=self.chunk_tokens, softcap=self.softcap)
        out = hidden.new_zeros(where.shape, dtype=torch.float32)
        ent = torch.zeros_like(out)
        out[where] = logp
        ent[where] = entropy
        return out, ent
