"""Samplers that skip problems before any rollout is spent on them: uniform draws, each candidate passed
over with a probability of its own. ``skip`` (an adaptive rule after GRESO), ``greso`` (the published
GRESO rule) and ``random_skip`` (the control: a fixed random share of the pool, whatever its history).

A skipped problem was never in flight: it stays available and is counted in ``buffer/skipped``. When
too few problems are left unskipped, skipped ones fill the batch rather than serve it short.

With ``buffer.prior.mode=cluster``, ``skip`` and ``greso`` also judge a problem never drawn: it gets a
virtual first group from its cluster's prior predictive (all solved with probability E[p^G], all failed
with E[(1 − p)^G]), so a problem from a cluster that is always solved is a skip candidate at once.
"""

from __future__ import annotations

import numpy as np

from rlpp.buffer.prior import zero_variance_chance
from rlpp.buffer.view import ProblemStats
from rlpp.buffer.samplers import UniformSampler, register_sampler


class SkippingSampler(UniformSampler):
    """Uniform draws without replacement; ``skips(cand)`` decides which candidates are passed over."""

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        self.skipped = 0  # passed over since the buffer last asked

    def take_skipped(self) -> int:
        n, self.skipped = self.skipped, 0
        return n

    @classmethod
    def reads_prior(cls, cfg) -> bool:
        return True

    def skips(self, cand: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self.stats.rng
        chosen: list[np.ndarray] = []
        skipped: list[np.ndarray] = []
        need = n
        while need > 0 and len(self.ids):
            cand = self.ids.draw(need, rng)
            skip = self.skips(cand)
            chosen.append(cand[~skip])
            skipped.append(cand[skip])
            need -= int((~skip).sum())
        passed = np.concatenate(skipped) if skipped else np.empty(0, dtype=np.int64)
        if need > 0:  # everything left was skipped: fill with skipped ones rather than serve a short batch
            chosen.append(passed[:need])
            passed = passed[need:]
        self.ids.insert(passed)
        self.skipped += len(passed)
        out = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
        return out, np.ones(len(out))

    def virtual_streak(self, ids: np.ndarray) -> np.ndarray:
        """+1 / −1 / 0 per problem: a virtual first group drawn from its cluster's prior predictive (all solved,
        all failed, mixed), for problems never drawn under a cluster prior; 0 for every other problem."""
        out = np.zeros(len(ids), dtype=np.int64)
        if self.stats.cfg.prior.mode != "cluster":
            return out
        fresh = self.stats.visits[ids] == 0
        if not fresh.any():
            return out
        a, b = self.stats.prior(ids[fresh], self.stats.step)
        solved, failed = zero_variance_chance(a, b, self.stats.group_size)
        u = self.stats.rng.random(int(fresh.sum()))
        out[fresh] = np.where(u < solved, 1, np.where(u < solved + failed, -1, 0))
        return out


@register_sampler("skip")
class SkipSampler(SkippingSampler):
    """Uniform draws with a pre-rollout skip (after GRESO): a problem whose last ``after`` groups were all
    zero-variance is skipped, before any rollout is spent on it, with a probability that adapts to hold
    the zero-variance share of what is generated near ``target``.

    Two skip probabilities, one for problems whose recent groups were all solved and one for all failed,
    each move by ``adapt_rate`` x (its zero-variance share in the latest groups − target / 2) after every
    update, within [0, 1 − explore]: a predictably zero-variance problem is still tried with probability
    at least ``explore``, so nothing starves and forgetting (or a late success) is seen.
    """

    config_groups = ("skip",)

    SOLVED_SIDE, FAILED_SIDE = 0, 1

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        self.skip_prob = np.full(2, stats.cfg.skip.initial)

    def skips(self, cand: np.ndarray) -> np.ndarray:
        c = self.stats.cfg.skip
        s = self.stats.streak[cand] + self.virtual_streak(cand) * c.after
        u = self.stats.rng.random(len(cand))
        return ((s >= c.after) & (u < self.skip_prob[self.SOLVED_SIDE])) | \
               ((s <= -c.after) & (u < self.skip_prob[self.FAILED_SIDE]))

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        if len(ids) == 0:
            return
        c = self.stats.cfg.skip
        shares = np.array([(successes == group_size).mean(), (successes == 0).mean()])
        self.skip_prob = np.clip(self.skip_prob + c.adapt_rate * (shares - c.target / 2), 0.0, 1.0 - c.explore)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "skip_prob": self.skip_prob.copy()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        super().load_state_dict(state, available)
        self.skip_prob[:] = state["skip_prob"]


@register_sampler("greso")
class GresoSampler(SkippingSampler):
    """GRESO exactly (``buffer.greso``; ``Infini-AI-Lab/GRESO``'s ``all_probabilistic`` filter).

    Per problem, the number of its latest groups in a row that were easy (mean reward ≥ ``easy_threshold``)
    or hard (≤ ``hard_threshold``). A candidate with k such groups is skipped with probability
    1 − max(p^k, ``floor``), p being ``p_easy`` or ``p_hard``; one with no trace is never skipped. After each
    training step, once the pool's worth of problems has been drawn (the paper adjusts from its second
    epoch), each p moves by ``adjust``: down when its side's share of that step's generated groups is at or
    above its target (``target`` x ``easy_share`` for easy, the rest for hard), up otherwise, within
    [``min_p``, ``max_p``]. Success here is the buffer's success (reward ≥ ``buffer.success_threshold``).
    """

    config_groups = ("greso",)

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        c = stats.cfg.greso
        self.p = np.array([c.p_easy, c.p_hard])
        self.easy = np.zeros(stats.num_problems, dtype=np.int32)  # latest groups in a row that were easy
        self.hard = np.zeros(stats.num_problems, dtype=np.int32)
        self.drawn = 0  # problems served so far
        self.tally = np.zeros(3, dtype=np.int64)  # this step's groups: easy, hard, all
        self.tally_step = 0

    def skips(self, cand: np.ndarray) -> np.ndarray:
        c = self.stats.cfg.greso
        virtual = self.virtual_streak(cand)
        easy = np.where(virtual > 0, 1, self.easy[cand])
        hard = np.where(virtual < 0, 1, self.hard[cand])
        keep = np.where(easy > 0, np.maximum(self.p[0] ** easy, c.floor), 1.0)
        keep = np.where(hard > 0, np.maximum(self.p[1] ** hard, c.floor), keep)
        return self.stats.rng.random(len(cand)) >= keep

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.stats.step > self.tally_step:
            self._adjust()
        out, w = super().pop(n)
        self.drawn += len(out)
        return out, w

    def _adjust(self) -> None:
        """Steer p_easy and p_hard by the groups of the last step that had any (once per step)."""
        c = self.stats.cfg.greso
        easy, hard, total = self.tally
        if total and self.drawn >= self.stats.num_problems:
            targets = np.array([c.target * c.easy_share, c.target * (1.0 - c.easy_share)])
            shares = np.array([easy, hard]) / total
            self.p = np.clip(np.where(shares >= targets, self.p - c.adjust, self.p + c.adjust), c.min_p, c.max_p)
        self.tally[:] = 0
        self.tally_step = self.stats.step

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        c = self.stats.cfg.greso
        rate = successes / group_size
        easy, hard = rate >= c.easy_threshold, rate <= c.hard_threshold
        self.easy[ids] = np.where(easy, self.easy[ids] + 1, 0)
        self.hard[ids] = np.where(hard, self.hard[ids] + 1, 0)
        self.tally += [int(easy.sum()), int(hard.sum()), len(ids)]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "p": self.p.copy(), "easy": self.easy.copy(), "hard": self.hard.copy(),
                "drawn": self.drawn, "tally": self.tally.copy(), "tally_step": self.tally_step}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        super().load_state_dict(state, available)
        self.p[:], self.easy[:], self.hard[:] = state["p"], state["easy"], state["hard"]
        self.drawn, self.tally[:], self.tally_step = int(state["drawn"]), state["tally"], int(state["tally_step"])


@register_sampler("random_skip")
class RandomSkipSampler(SkippingSampler):
    """The control for the skipping arms (``buffer.random_skip.rate``): a random share of the pool, fixed at
    the start by the run's seed, is skipped at every draw whatever its history. Matched to the share a
    skipping arm skipped, it shows whether that arm gained from *which* problems it skipped or only from
    spending the budget on fewer problems, more often."""

    config_groups = ("random_skip",)

    @classmethod
    def reads_prior(cls, cfg) -> bool:
        return False

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        n = stats.num_problems
        self.skipped_ids = np.zeros(n, dtype=bool)
        self.skipped_ids[stats.rng.choice(n, size=int(round(stats.cfg.random_skip.rate * n)), replace=False)] = True

    def skips(self, cand: np.ndarray) -> np.ndarray:
        return self.skipped_ids[cand]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "skipped_ids": self.skipped_ids.copy()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        super().load_state_dict(state, available)
        self.skipped_ids[:] = state["skipped_ids"]
