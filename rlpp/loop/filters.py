"""Group filters: how a step turns the problems it draws into the groups it trains on.

Chosen by name (``GROUP_FILTERS``): ``trainer.fill`` names one, else the sampler does (``dapo_filter`` names
``dapo``). A filter gets the step's first batch, already generated, and may draw and generate more
through the scheduler (``FilterContext``); it records every group in the buffer and every rollout is
charged, kept or not. Filters that draw more than once need ``max_staleness`` 0 (sync mode): their
extra draws are made after the first batch is back.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

if TYPE_CHECKING:  # config validation imports this module: it stays free of torch and the engines
    from rlpp.rollout.engine import Sampling
    from rlpp.rollout.worker import RolloutResult


class FilterContext(Protocol):
    """What a filter may ask of the scheduler within one step."""

    sampling: Sampling

    def draw(self, step: int, want: int, round_: int, sampling: Sampling) -> RolloutResult:
        """Draw ``want`` more problems for ``step`` and generate them (charged; not yet recorded)."""

    def complete(self, partial: RolloutResult, step: int, round_: int, n: int) -> RolloutResult:
        """Generate ``n`` more rollouts for each of ``partial``'s problems (still in flight) and join them
        to their groups (charged; not yet recorded)."""

    def record(self, result: RolloutResult) -> None:
        """Give the buffer these groups' rewards (the problems leave flight)."""


GROUP_FILTERS: dict[str, type["GroupFilter"]] = {}


def register_filter(name: str) -> Callable[[type["GroupFilter"]], type["GroupFilter"]]:
    def wrap(cls: type[GroupFilter]) -> type[GroupFilter]:
        if name in GROUP_FILTERS:
            raise ValueError(f"group filter {name!r} is already registered")
        cls.name = name
        GROUP_FILTERS[name] = cls
        return cls

    return wrap


@register_filter("none")
class GroupFilter:
    """Every drawn group is trained on, one draw per step."""

    name = "none"
    extra_draws = False
    """Whether the filter may draw again within a step (then it needs max_staleness 0)."""

    def __init__(self, cfg):
        self.batch_size = cfg.trainer.batch_size
        self.tc = cfg.trainer
        self.group_size = cfg.rollout.group_size

    def sampling(self, base: Sampling) -> Sampling:
        """What each draw generates."""
        return base

    def finish(self, step: int, first: RolloutResult, ctx: FilterContext) -> RolloutResult:
        """The step's training groups, from its first generated batch (and any more it draws)."""
        ctx.record(first)
        return first


@register_filter("signal")
class SignalFill(GroupFilter):
    """``trainer.fill=signal``, dynamic filling: each step trains on up to B groups that carry signal. The
    first draw is B problems; while fewer than B signal groups are in hand, draw the shortfall over the signal
    rate seen so far this step (at least 1/4, so one unlucky round does not draw the pool), up to
    ``trainer.fill_rounds`` draws. Surplus signal groups and zero-variance ones are recorded, not trained on."""

    extra_draws = True

    @property
    def rounds(self) -> int:
        return self.tc.fill_rounds

    def next_draw(self, need: int, drawn: int, signal: int) -> int:
        return min(4 * need, math.ceil(need / max(signal / drawn, 0.25)))

    def keep(self, result: RolloutResult, need: int, step: int, round_: int, ctx: FilterContext) -> RolloutResult:
        """The groups of one round the step may train on (every group of the round recorded)."""
        ctx.record(result)
        return result.rows(result.with_signal())

    def finish(self, step: int, first: RolloutResult, ctx: FilterContext) -> RolloutResult:
        kept: list[RolloutResult] = []
        drawn = signal = round_ = 0
        result = first
        while True:
            signal += len(result.with_signal())
            drawn += len(result)
            kept.append(self.keep(result, self.batch_size - sum(len(k) for k in kept), step, round_, ctx))
            have = sum(len(k) for k in kept)
            if have >= self.batch_size or len(result) == 0 or round_ + 1 >= self.rounds:
                break
            round_ += 1
            result = ctx.draw(step, self.next_draw(self.batch_size - have, drawn, signal), round_,
                              self.sampling(ctx.sampling))
        merged = type(first).concat(kept)
        out = merged.rows(range(min(self.batch_size, len(merged))))
        out.metrics.update({"rollout/fill_rounds": float(round_ + 1), "rollout/groups_generated": float(drawn),
                            "rollout/signal_groups": float(len(out))})
        return out


@register_filter("dapo")
class DapoFilter(SignalFill):
    """``buffer.sampler=dapo_filter`` (DAPO's dynamic sampling): every draw asks for B problems, which the
    sampler over-draws (``buffer.dapo_filter.oversample``); signal groups are kept up to B, for at most
    ``DAPO_ROUNDS`` draws."""

    DAPO_ROUNDS = 3
    """DAPO generates again while a batch is short (verl's recipe allows up to ``max_num_gen_batches``, 10 by
    default); with the default 2x over-draw three draws fill a batch unless under a sixth of the groups carry
    signal, and a step never spends more than 6 B groups."""

    @property
    def rounds(self) -> int:
        return self.DAPO_ROUNDS

    def next_draw(self, need: int, drawn: int, signal: int) -> int:
        return self.batch_size


@register_filter("screen")
class Screen(SignalFill):
    """``trainer.fill=screen``, in-step screening (after SPEED-RL): every drawn problem first gets
    ``trainer.screen_rollouts`` rollouts; only one whose screen holds both a success and a failure is
    completed to G (its screen is part of the group), the others are recorded with their screen alone.
    Rounds draw again for the shortfall as ``signal`` does. Every screened and completed rollout counts."""

    def sampling(self, base: Sampling) -> Sampling:
        return replace(base, n=self.tc.screen_rollouts)

    def keep(self, result: RolloutResult, need: int, step: int, round_: int, ctx: FilterContext) -> RolloutResult:
        chosen = result.with_signal()[:need]
        ctx.record(result.rows(np.setdiff1d(np.arange(len(result)), chosen)))  # the screen is all these get
        full = ctx.complete(result.rows(chosen), step, round_, self.group_size - self.tc.screen_rollouts)
        ctx.record(full)
        return full

    def finish(self, step: int, first: RolloutResult, ctx: FilterContext) -> RolloutResult:
        out = super().finish(step, first, ctx)
        out.metrics["rollout/screened"] = out.metrics["rollout/groups_generated"]
        return out


def make_filter(cfg, sampler_filter: str) -> GroupFilter:
    """The filter ``trainer.fill`` names (``signal``, ``screen``), else the one the sampler names."""
    name = cfg.trainer.fill if cfg.trainer.fill != "off" else sampler_filter
    return GROUP_FILTERS[name](cfg)
