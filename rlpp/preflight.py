"""The checks of a run's inputs that need no heavy import (seconds, before Ray or any actor starts)."""

from __future__ import annotations

from pathlib import Path


def check_inputs(cfg) -> Path | None:
    """A bad ``reward.name``, ``trainer.resume`` or GGUF ``model.path`` fails here as a one-line error naming
    the key; returns the checkpoint to resume from (None: a fresh run). The data and a hub or folder model
    are checked by the trainer, which needs them loaded anyway."""
    from rlpp import checkpoint
    from rlpp.models.gguf import is_gguf_path, resolve_gguf
    from rlpp.reward.registry import check_reward

    check_reward(cfg.reward.name)  # once here, not in every rollout actor
    resume_from = checkpoint.resolve(cfg.trainer.resume, cfg.trainer.output_dir)
    if cfg.model.source == "pretrained" and is_gguf_path(cfg.model.path):
        resolve_gguf(cfg.model.path)
    return resume_from
