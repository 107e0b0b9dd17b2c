"""Samplers: how the buffer chooses among the problems it may serve, selectable by name.

A sampler owns the index over the *available* problems: the ``heap`` pool for samplers that park
(withhold always-solved / always-failed problems until a retest), every problem not in flight for
those that do not. The buffer tells it which ids became available (``insert``) and asks it for a batch
(``pop``); the statistics it reads (priority, last visit, p̂) live in the buffer's arrays.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from rlpp.buffer.structures import (HEAP, IdSet, LazyHeap, SumTree, float_order, float_order_one, key_id, packed_key,
                                    packed_keys, priority_key, priority_keys)

from rlpp.buffer.view import ProblemStats
from rlpp.config.buffer import PAPER  # what a sampler is given, never the buffer itself

SAMPLERS: dict[str, type["Sampler"]] = {}


def register_sampler(name: str) -> Callable[[type["Sampler"]], type["Sampler"]]:
    def wrap(cls: type[Sampler]) -> type[Sampler]:
        cls.name = name
        SAMPLERS[name] = cls
        return cls

    return wrap


class Sampler:
    """One interface for every sampling strategy."""

    name = "base"
    parks = True
    """Whether solved/unsolved problems leave this sampler's index until retested."""
    @classmethod
    def reads_prior(cls, cfg) -> bool:
        """Whether this sampler, under these settings (``buffer``), reads the prior (``buffer.prior``)."""
        return False

    @classmethod
    def form(cls, cfg) -> type["Sampler"]:
        """The class that serves these settings (``buffer``): this one, unless its settings pick a variant."""
        return cls

    @classmethod
    def variant(cls, cfg):
        """How the buffer scores and parks problems for this sampler (a ``PrioritizedConfig``): the paper's
        rule unless the sampler has settings of its own."""
        return PAPER

    @classmethod
    def retest_mode(cls, cfg) -> str:
        """When parked problems are retested (``buffer.retest.mode`` unless the sampler fixes it)."""
        return cfg.retest.mode

    corrects_bias = False
    """Whether its draws carry importance weights for the loss (``per``)."""
    measures_pool = False
    """Whether it selects by pass rates the loop measures between steps (``oracle``: sync mode only)."""
    config_groups: tuple[str, ...] = ()
    """The ``buffer.*`` settings groups this sampler reads (only those are validated when it is chosen)."""

    serves_by_priority = False
    """Whether it serves by the buffer's ``priority`` array (re-scored when a cluster prior moves: ``refresh``)."""
    group_filter = "none"
    """The group filter (``rlpp.loop.filters``) a step applies to this sampler's draws when ``trainer.fill`` is
    off: ``dapo`` drops zero-variance groups and draws again (DAPO's dynamic sampling; the sampler over-draws
    to make room)."""

    def __init__(self, stats: "ProblemStats"):
        self.stats = stats

    def __len__(self) -> int:
        raise NotImplementedError

    def insert(self, ids: np.ndarray) -> None:
        """``ids`` (not currently available) became available."""
        raise NotImplementedError

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return up to n available ids and their importance weights."""
        raise NotImplementedError

    def take_skipped(self) -> int:
        """How many candidates the pops since the last call passed over before generation (the buffer
        counts them in ``buffer/skipped``); 0 for samplers that never skip."""
        return 0

    def members(self) -> np.ndarray:
        """Every id currently available (for invariant checks; a full scan)."""
        raise NotImplementedError

    def draw_size(self, batch_size: int) -> int:
        """How many problems a request for ``batch_size`` draws."""
        return batch_size

    def discard(self, ids: np.ndarray) -> None:
        """``ids`` left the index without a pop (the ``prioritized`` sampler's uniform share took them)."""

    @classmethod
    def flat_prior(cls, cfg) -> tuple[float, float]:
        """Pseudo-(successes, failures) of this sampler's flat Beta prior (``buffer.prior``)."""
        return 1.0, 1.0

    def predict(self, ids: np.ndarray) -> np.ndarray:
        """This sampler's prediction of each problem's pass rate now, for the report's prediction-quality
        diagnostics (NaN: no prediction). By default the latest group's p̂."""
        return self.stats.p_hat[ids]

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        """A group of ``group_size`` came back for each of ``ids`` with ``successes`` successes (called
        by ``update`` after the buffer's own statistics, before the ids become available again)."""

    def state_dict(self) -> dict:
        """State not derivable from the buffer's arrays (the default rebuild needs none)."""
        return {}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        """Rebuild from the buffer's restored arrays; ``available`` holds the ids to index, sorted."""
        self.insert(available)


class HeapSampler(Sampler):
    """Greedy top-B by score from a max-heap (ties: oldest last visit, then lowest id). The score is
    the priority, plus ``age_bonus`` per step since the last visit: ω + c·(step - t) orders like
    ω - c·t for every problem at once, so keys never need refreshing as steps pass.

    With a uniform share (``uniform_mix``) the buffer takes problems out of the heap pool behind the
    heap's back; their entries go stale and are skipped when popped (an entry is live while its
    problem sits in the heap pool under that very key), and the heap is rebuilt when stale entries
    outnumber live ones by ``HEAP_GROWTH``.
    """

    HEAP_GROWTH = 2
    HEAP_SLACK = 1024
    serves_by_priority = True

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        lazy = stats.variant.uniform_mix > 0
        self.heap = LazyHeap(self._keys, self._live if lazy else None, lambda: np.flatnonzero(stats.pool == HEAP),
                             self.__len__, self.HEAP_GROWTH, self.HEAP_SLACK)

    def __len__(self) -> int:
        return int(self.stats.counts[HEAP])

    def _score(self, priority, last_visit):
        """ω plus the age bonus, as a static key (arrays or scalars)."""
        c = self.stats.variant.age_bonus
        return priority - c * (last_visit + 1) if c else priority

    def _keys(self, ids: np.ndarray) -> list[int]:
        b = self.stats
        return priority_keys(self._score(b.priority[ids], b.last_visit[ids]), b.last_visit[ids], ids)

    def insert(self, ids: np.ndarray) -> None:
        self.heap.push(ids)

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return self.stats.posterior_mean(ids)

    def refresh(self) -> None:
        """Every waiting problem's priority changed (a cluster prior moved): re-key them all."""
        self.heap.clear()
        self.heap.rebuild()

    def _live(self, key: int) -> bool:
        b, i = self.stats, key_id(key)
        if b.pool[i] != HEAP:
            return False
        lv = int(b.last_visit[i])
        return priority_key(self._score(float(b.priority[i]), lv), lv, i) == key

    def members(self) -> np.ndarray:
        # lazy: a released problem may have two identical live entries; it is served once
        return self.heap.live_ids(unique=self.heap.lazy)

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        out = self.heap.pop(n)
        return out, np.ones(len(out))


@register_sampler("paper")
class PaperSampler(HeapSampler):
    """The paper's method exactly: greedy top-B by the latest group's p̂(1 − p̂) (the base ``PAPER``
    scoring: point priority, park after one zero-variance group, no uniform share, no age bonus) and a
    periodic retest, whatever ``buffer.retest.mode`` says."""

    @classmethod
    def retest_mode(cls, cfg) -> str:
        return "periodic"


class PrioritizedSettings:
    """What ``buffer.prioritized`` sets for the two forms of the ``prioritized`` sampler (greedy heap and
    stochastic tree): their scoring and parking rule, and their Beta prior."""

    config_groups = ("prioritized",)

    @classmethod
    def flat_prior(cls, cfg) -> tuple[float, float]:
        return cfg.prioritized.prior_successes, cfg.prioritized.prior_failures

    @classmethod
    def reads_prior(cls, cfg) -> bool:
        return cfg.prioritized.priority == "posterior"

    @classmethod
    def variant(cls, cfg):
        return cfg.prioritized


@register_sampler("prioritized")
class PrioritizedSampler(PrioritizedSettings, HeapSampler):
    """The paper's sampler with its settings open (``buffer.prioritized``: every default is the paper's);
    a stochastic ``selection`` serves from a sum-tree instead (``StochasticSampler``)."""

    @classmethod
    def form(cls, cfg) -> type["Sampler"]:
        return cls if cfg.prioritized.selection == "greedy" else StochasticSampler


@register_sampler("uniform")
class UniformSampler(Sampler):
    """Uniform draws without replacement over every problem not in flight; priorities are ignored."""

    parks = False

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        self.ids = IdSet(stats.num_problems)

    def __len__(self) -> int:
        return len(self.ids)

    def insert(self, ids: np.ndarray) -> None:
        self.ids.insert(ids)

    def members(self) -> np.ndarray:
        return self.ids.members()

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        out = self.ids.draw(n, self.stats.rng)
        return out, np.ones(len(out))

    def state_dict(self) -> dict:
        # The set's internal order decides which ids a seeded draw picks, so it is state.
        return {"ids": self.ids.state_dict()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        self.ids.load_state_dict(state["ids"])


@register_sampler("dapo_filter")
class DapoFilterSampler(UniformSampler):
    """Uniform draws, oversampled so that enough groups survive dropping the zero-variance ones."""

    config_groups = ("dapo_filter",)

    group_filter = "dapo"

    def draw_size(self, batch_size: int) -> int:
        # The relative slack absorbs rounding (1.1 * 50 is 55.00000000000001 in floating point).
        return math.ceil(batch_size * self.stats.cfg.dapo_filter.oversample * (1 - 1e-12))


class TreeSampler(Sampler):
    """Draws without replacement with probability ∝ a per-problem mass, over a sum-tree."""

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        self.tree = SumTree(stats.num_problems)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """The probability that a single draw now picks each of ``ids``."""
        return self.tree.leaf(ids) / self.tree.total

    def members(self) -> np.ndarray:
        return np.flatnonzero(self.tree.leaf(np.arange(self.stats.num_problems)) > 0)

    def insert(self, ids: np.ndarray) -> None:
        self.tree.set(ids, self._mass(ids))
        self.size += len(ids)

    def discard(self, ids: np.ndarray) -> None:
        self.tree.set(ids, np.zeros(len(ids)))
        self.size -= len(ids)

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Up to n distinct ids, each one's probability at the first draw, and how many were available."""
        m = min(n, self.size)
        if m == 0:
            return np.empty(0, dtype=np.int64), np.empty(0), self.size
        rng, tree, total0, n_avail = self.stats.rng, self.tree, self.tree.total, self.size
        chosen: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        need = m
        # Stratified draws (one per equal slice of the mass, as in Schaul et al.); a problem hit twice
        # is taken once and the rest are redrawn from what is left, so a batch never repeats a problem.
        while need > 0:
            total = tree.total
            u = (np.arange(need) + rng.random(need)) * (total / need)
            ids = np.unique(tree.find(np.minimum(u, np.nextafter(total, 0))))
            ids = ids[tree.leaf(ids) > 0][:need]
            probs.append(tree.leaf(ids) / total0)
            tree.set(ids, np.zeros(len(ids)))
            chosen.append(ids)
            need -= len(ids)
        self.size -= m
        return np.concatenate(chosen), np.concatenate(probs), n_avail


class StochasticSampler(PrioritizedSettings, TreeSampler):
    """``prioritized`` with ``selection=proportional`` (mass (ω + eps)^alpha) or ``softmax`` (mass
    exp((ω - 0.25) / temperature)); no importance weights: the point is where the compute goes, not
    an unbiased estimate of the uniform gradient."""

    serves_by_priority = True

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return self.stats.posterior_mean(ids)

    def refresh(self) -> None:
        """Every waiting problem's priority changed (a cluster prior moved): set all their masses again."""
        ids = self.members()
        self.tree.set(ids, self._mass(ids))

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        v, w = self.stats.variant, self.stats.priority[ids]
        if v.selection == "softmax":
            return np.exp((np.minimum(w, 0.25) - 0.25) / v.temperature)
        return (w + v.eps) ** v.alpha

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        ids, _, _ = self.draw(n)
        return ids, np.ones(len(ids))


@register_sampler("per")
class PERSampler(TreeSampler):
    """Proportional prioritization: P(i) ∝ (ω_i + eps)^alpha over a sum-tree, with importance weights."""

    config_groups = ("per",)
    corrects_bias = True

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        c = self.stats.cfg.per
        return (self.stats.priority[ids] + c.eps) ** c.alpha

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        ids, probs, n_avail = self.draw(n)
        if len(ids) == 0:
            return ids, probs
        w = (n_avail * probs) ** (-self.stats.cfg.per.beta)
        return ids, w / w.max()


def sampler_class(cfg) -> type[Sampler]:
    """The sampler class ``cfg.sampler`` (``buffer.sampler``) names, in the form its settings ask for."""
    return SAMPLERS[cfg.sampler].form(cfg)


@register_sampler("prompt_replay")
class PromptReplaySampler(Sampler):
    """Replays visited problems with pass rate near 0.5 (window, cooldown, reuse cap), mixed with
    uniform draws over everything else available.

    Candidates wait in a min-heap of packed keys (|p̂ - 0.5|, last visit, id). An entry goes stale when
    its problem is served or revisited; stale entries are skipped when popped, and the heap is rebuilt
    from the current candidates once it outgrows ``HEAP_GROWTH`` times the available problems plus
    ``HEAP_SLACK`` (entries far from 0.5 would otherwise pile up for good). A rebuild serves the same
    order: every current candidate has an entry, and copies of one key serve it at most once per
    batch, since a served problem leaves the set at once.
    """

    config_groups = ("prompt_replay",)

    parks = False
    HEAP_GROWTH = 4
    HEAP_SLACK = 1024

    def __init__(self, stats: "ProblemStats"):
        super().__init__(stats)
        self.ids = IdSet(stats.num_problems)
        self.reuse = np.zeros(stats.num_problems, dtype=np.int32)
        self.heap = LazyHeap(self._keys, self._live, self.ids.members, self.__len__, self.HEAP_GROWTH, self.HEAP_SLACK)

    def __len__(self) -> int:
        return len(self.ids)

    def _candidates(self, ids: np.ndarray) -> np.ndarray:
        b, c = self.stats, self.stats.cfg.prompt_replay
        dist = np.abs(b.p_hat[ids] - 0.5)
        return (b.visits[ids] > 0) & (dist <= c.window) & (self.reuse[ids] < c.max_reuse)

    def _keys(self, ids: np.ndarray) -> list[int]:
        """Heap keys of the candidates among ``ids``: |p̂ - 0.5| is non-negative, so its float64 bits
        order like it."""
        b = self.stats
        ids = ids[self._candidates(ids)]
        return packed_keys(float_order(np.abs(b.p_hat[ids] - 0.5)), b.last_visit[ids], ids)

    def _live(self, key: int) -> bool:
        """Whether an entry still stands for a candidate: not served since it was pushed, replays left,
        and not revisited since (Python floats round |p̂ - 0.5| exactly as numpy did in ``_keys``)."""
        b, i = self.stats, key_id(key)
        if i not in self.ids or self.reuse[i] >= b.cfg.prompt_replay.max_reuse:
            return False
        return key == packed_key(float_order_one(abs(float(b.p_hat[i]) - 0.5)), int(b.last_visit[i]), i)

    def _cooling(self, key: int) -> bool:
        b = self.stats
        return b.step - int(b.last_visit[key_id(key)]) < b.cfg.prompt_replay.cooldown_steps

    def insert(self, ids: np.ndarray) -> None:
        self.ids.insert(ids)
        self.heap.push(ids)

    def members(self) -> np.ndarray:
        return self.ids.members()

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        b, c = self.stats, self.stats.cfg.prompt_replay
        replay = self.heap.pop(min(int(c.replay_fraction * n), len(self.ids)), hold=self._cooling)
        for i in replay.tolist():
            self.ids.remove_one(i)
        self.reuse[replay] += 1
        fresh = self.ids.draw(n - len(replay), b.rng)
        out = np.concatenate([replay, fresh])
        return out, np.ones(len(out))

    def state_dict(self) -> dict:
        return {"ids": self.ids.state_dict(), "reuse": self.reuse.copy()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        self.ids.load_state_dict(state["ids"])
        self.reuse[:] = state["reuse"]
        self.heap.rebuild()
