"""The problem set every part of the run shares: templated prompts and reference answers, by id.

A problem's id is its index in the set. The buffer keeps ids and statistics only; rollout actors look
the text up here, so the set must stay plain and picklable (it travels through the Ray object store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["ProblemSet"]


@dataclass
class ProblemSet:
    """Problems of one split; ``prompts[i]`` and ``answers[i]`` are problem ``i``."""

    prompts: list[str]
    """Prompt text with ``data.template`` already applied (the chat template is not)."""
    answers: list[str]
    """Reference answers, as text."""
    levels: np.ndarray | None = None
    """Difficulty label per problem (int), synthetic task only. For reports, and for a sampler only as its
    cluster when ``buffer.prior.mode=cluster`` asks for one (``cluster_ids``)."""
    source: str = ""
    """Where the problems came from (file, hub name, or task), for messages."""
    groups: list[str] | None = None
    """A label per problem from the row field ``data.group_key`` (e.g. MATH's ``level`` or ``subject``),
    for evaluation broken down by it, and the cluster of ``buffer.prior.mode=cluster``."""

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.answers):
            raise ValueError(f"{self.source}: {len(self.prompts)} prompts but {len(self.answers)} answers")
        if self.groups is not None and len(self.groups) != len(self.prompts):
            raise ValueError(f"{self.source}: {len(self.groups)} group labels for {len(self.prompts)} problems")
        if self.levels is not None:
            self.levels = np.asarray(self.levels, dtype=np.int64)
            if self.levels.shape != (len(self.prompts),):
                raise ValueError(f"{self.source}: levels has shape {self.levels.shape}, "
                                 f"expected ({len(self.prompts)},)")

    def __len__(self) -> int:
        return len(self.prompts)

    def cluster_ids(self) -> np.ndarray | None:
        """An int cluster per problem for a cluster prior: the ``data.group_key`` labels numbered in order of
        first appearance, else the built-in task's levels; None when the set has neither."""
        if self.groups is not None:
            codes: dict[str, int] = {}
            return np.array([codes.setdefault(g, len(codes)) for g in self.groups], dtype=np.int64)
        return None if self.levels is None else self.levels.copy()

    def subset(self, ids: Sequence[int] | np.ndarray) -> ProblemSet:
        """The problems ``ids``, in that order, as a new set (ids are renumbered from 0)."""
        ids = [int(i) for i in ids]
        return ProblemSet(
            prompts=[self.prompts[i] for i in ids],
            answers=[self.answers[i] for i in ids],
            levels=None if self.levels is None else self.levels[np.asarray(ids, dtype=np.int64)],
            source=self.source,
            groups=None if self.groups is None else [self.groups[i] for i in ids],
        )
