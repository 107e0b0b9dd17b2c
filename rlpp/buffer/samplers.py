"""Samplers: how the buffer chooses among the problems it may serve, selectable by name.

A sampler owns the index over the *available* problems: the ``heap`` pool for samplers that park
(withhold always-solved / always-failed problems until a retest), every problem not in flight for
those that do not. The buffer tells it which ids became available (``insert``) and asks it for a batch
(``pop``); the statistics it reads (priority, last visit, p̂) live in the buffer's arrays.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from rlpp.buffer.structures import (HEAP, IdSet, LazyHeap, SumTree, float_order, float_order_one, key_id, packed_key,
                                    packed_keys, priority_key, priority_keys)

PriorityBuffer = Any
"""What a sampler is given: the ``PriorityBuffer`` it serves (its config, rng, step, counters and per-problem
arrays). Named by duck type, not imported: the buffer imports this module, never the other way round."""

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
    filters = False
    """Whether the trainer should drop this sampler's zero-variance groups and draw again for them
    (DAPO's dynamic sampling; the sampler over-draws to make room)."""

    def __init__(self, buf: "PriorityBuffer"):
        self.buf = buf

    def __len__(self) -> int:
        raise NotImplementedError

    def insert(self, ids: np.ndarray) -> None:
        """``ids`` (not currently available) became available."""
        raise NotImplementedError

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove and return up to n available ids and their importance weights."""
        raise NotImplementedError

    def members(self) -> np.ndarray:
        """Every id currently available (for invariant checks; a full scan)."""
        raise NotImplementedError

    def draw_size(self, batch_size: int) -> int:
        """How many problems a request for ``batch_size`` draws."""
        return batch_size

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        """A group of ``group_size`` came back for each of ``ids`` with ``successes`` successes (called
        by ``update`` after the buffer's own statistics, before the ids become available again)."""

    def state_dict(self) -> dict:
        """State not derivable from the buffer's arrays (the default rebuild needs none)."""
        return {}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        """Rebuild from the buffer's restored arrays; ``available`` holds the ids to index, sorted."""
        self.insert(available)


@register_sampler("prioritized")
class PrioritizedSampler(Sampler):
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

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        lazy = buf.variant.uniform_mix > 0
        self.heap = LazyHeap(self._keys, self._live if lazy else None, lambda: np.flatnonzero(buf.pool == HEAP),
                             self.__len__, self.HEAP_GROWTH, self.HEAP_SLACK)

    def __len__(self) -> int:
        return int(self.buf.counts[HEAP])

    def _score(self, priority, last_visit):
        """ω plus the age bonus, as a static key (arrays or scalars)."""
        c = self.buf.variant.age_bonus
        return priority - c * (last_visit + 1) if c else priority

    def _keys(self, ids: np.ndarray) -> list[int]:
        b = self.buf
        return priority_keys(self._score(b.priority[ids], b.last_visit[ids]), b.last_visit[ids], ids)

    def insert(self, ids: np.ndarray) -> None:
        self.heap.push(ids)

    def discard(self, ids: np.ndarray) -> None:
        """``ids`` left the heap pool without a pop: their entries are stale now (lazy mode only)."""

    def _live(self, key: int) -> bool:
        b, i = self.buf, key_id(key)
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
class PaperSampler(PrioritizedSampler):
    """The paper's method exactly: the buffer gives this sampler the ``PAPER`` settings (greedy, point
    priority, park after one zero-variance group, no uniform share, no age bonus) and periodic retest."""


@register_sampler("uniform")
class UniformSampler(Sampler):
    """Uniform draws without replacement over every problem not in flight; priorities are ignored."""

    parks = False

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        self.ids = IdSet(buf.num_problems)

    def __len__(self) -> int:
        return len(self.ids)

    def insert(self, ids: np.ndarray) -> None:
        self.ids.insert(ids)

    def members(self) -> np.ndarray:
        return self.ids.members()

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        out = self.ids.draw(n, self.buf.rng)
        return out, np.ones(len(out))

    def state_dict(self) -> dict:
        # The set's internal order decides which ids a seeded draw picks, so it is state.
        return {"ids": self.ids.state_dict()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        self.ids.load_state_dict(state["ids"])


@register_sampler("dapo_filter")
class DapoFilterSampler(UniformSampler):
    """Uniform draws, oversampled so that enough groups survive dropping the zero-variance ones."""

    filters = True

    def draw_size(self, batch_size: int) -> int:
        # The relative slack absorbs rounding (1.1 * 50 is 55.00000000000001 in floating point).
        return math.ceil(batch_size * self.buf.cfg.dapo_filter.oversample * (1 - 1e-12))


class TreeSampler(Sampler):
    """Draws without replacement with probability ∝ a per-problem mass, over a sum-tree."""

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        self.tree = SumTree(buf.num_problems)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """The probability that a single draw now picks each of ``ids``."""
        return self.tree.leaf(ids) / self.tree.total

    def members(self) -> np.ndarray:
        return np.flatnonzero(self.tree.leaf(np.arange(self.buf.num_problems)) > 0)

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
        rng, tree, total0, n_avail = self.buf.rng, self.tree, self.tree.total, self.size
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


class StochasticSampler(TreeSampler):
    """``prioritized`` with ``selection=proportional`` (mass (ω + eps)^alpha) or ``softmax`` (mass
    exp((ω - 0.25) / temperature)); no importance weights: the point is where the compute goes, not
    an unbiased estimate of the uniform gradient."""

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        v, w = self.buf.variant, self.buf.priority[ids]
        if v.selection == "softmax":
            return np.exp((np.minimum(w, 0.25) - 0.25) / v.temperature)
        return (w + v.eps) ** v.alpha

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        ids, _, _ = self.draw(n)
        return ids, np.ones(len(ids))


@register_sampler("per")
class PERSampler(TreeSampler):
    """Proportional prioritization: P(i) ∝ (ω_i + eps)^alpha over a sum-tree, with importance weights."""

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        c = self.buf.cfg.per
        return (self.buf.priority[ids] + c.eps) ** c.alpha

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        ids, probs, n_avail = self.draw(n)
        if len(ids) == 0:
            return ids, probs
        w = (n_avail * probs) ** (-self.buf.cfg.per.beta)
        return ids, w / w.max()


def make_sampler(buf: "PriorityBuffer") -> Sampler:
    """The sampler ``buf.cfg.sampler`` names, in the form its settings ask for."""
    if buf.cfg.sampler == "prioritized" and buf.variant.selection != "greedy":
        return StochasticSampler(buf)
    return SAMPLERS[buf.cfg.sampler](buf)


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

    parks = False
    HEAP_GROWTH = 4
    HEAP_SLACK = 1024

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        self.ids = IdSet(buf.num_problems)
        self.reuse = np.zeros(buf.num_problems, dtype=np.int32)
        self.heap = LazyHeap(self._keys, self._live, self.ids.members, self.__len__, self.HEAP_GROWTH, self.HEAP_SLACK)

    def __len__(self) -> int:
        return len(self.ids)

    def _candidates(self, ids: np.ndarray) -> np.ndarray:
        b, c = self.buf, self.buf.cfg.prompt_replay
        dist = np.abs(b.p_hat[ids] - 0.5)
        return (b.visits[ids] > 0) & (dist <= c.window) & (self.reuse[ids] < c.max_reuse)

    def _keys(self, ids: np.ndarray) -> list[int]:
        """Heap keys of the candidates among ``ids``: |p̂ - 0.5| is non-negative, so its float64 bits
        order like it."""
        b = self.buf
        ids = ids[self._candidates(ids)]
        return packed_keys(float_order(np.abs(b.p_hat[ids] - 0.5)), b.last_visit[ids], ids)

    def _live(self, key: int) -> bool:
        """Whether an entry still stands for a candidate: not served since it was pushed, replays left,
        and not revisited since (Python floats round |p̂ - 0.5| exactly as numpy did in ``_keys``)."""
        b, i = self.buf, key_id(key)
        if i not in self.ids or self.reuse[i] >= b.cfg.prompt_replay.max_reuse:
            return False
        return key == packed_key(float_order_one(abs(float(b.p_hat[i]) - 0.5)), int(b.last_visit[i]), i)

    def _cooling(self, key: int) -> bool:
        b = self.buf
        return b.step - int(b.last_visit[key_id(key)]) < b.cfg.prompt_replay.cooldown_steps

    def insert(self, ids: np.ndarray) -> None:
        self.ids.insert(ids)
        self.heap.push(ids)

    def members(self) -> np.ndarray:
        return self.ids.members()

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        b, c = self.buf, self.buf.cfg.prompt_replay
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


@register_sampler("thompson")
class ThompsonSampler(UniformSampler):
    """Thompson selection over a discounted Beta posterior of each problem's success rate.

    Each problem keeps Beta(prior_successes + s, prior_failures + f) over its discounted evidence: at
    every step the evidence gathered so far keeps ``discount`` of its weight, so what was true of an
    earlier policy fades (applied lazily, when a problem is read). A batch draws ``candidates`` x B
    problems uniformly from every problem not in flight (all of them with ``candidates=0``), samples
    p̃ ~ Beta for each and keeps the B with the highest score: ``signal`` = 1 − p̃^G − (1 − p̃)^G, the
    chance that a group of G carries signal, or ``variance`` = p̃(1 − p̃). The uniform candidate draw keeps
    uniform's spread over the pool; the posterior draw skips problems that are predictably zero-variance
    while a little luck in p̃ still brings them back now and then, so nothing starves. Nothing parks.
    """

    DEFAULT_GROUP = 8
    """G assumed for ``signal`` before the first group comes back (every problem is then unseen, so it only
    shapes random ties)."""

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        c = buf.cfg.thompson
        n = buf.num_problems
        self.evidence_s = np.zeros(n)  # discounted successes, as of step ``seen_step``
        self.evidence_f = np.zeros(n)
        self.seen_step = np.zeros(n, dtype=np.int64)
        self.group_size = self.DEFAULT_GROUP
        self.prior = (c.prior_successes, c.prior_failures)

    def _faded(self, ids: np.ndarray, step: int) -> np.ndarray:
        return self.buf.cfg.thompson.discount ** (step - self.seen_step[ids]).astype(np.float64)

    def posterior(self, ids: np.ndarray, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters (a, b) of ``ids`` at ``step`` (default: the buffer's current step)."""
        fade = self._faded(ids, self.buf.step if step is None else step)
        return self.prior[0] + fade * self.evidence_s[ids], self.prior[1] + fade * self.evidence_f[ids]

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        step = self.buf.step
        fade = self._faded(ids, step)
        self.evidence_s[ids] = fade * self.evidence_s[ids] + successes
        self.evidence_f[ids] = fade * self.evidence_f[ids] + (group_size - successes)
        self.seen_step[ids] = step
        self.group_size = int(group_size)

    def score(self, p: np.ndarray) -> np.ndarray:
        if self.buf.cfg.thompson.score == "variance":
            return p * (1.0 - p)
        g = self.group_size
        return 1.0 - p ** g - (1.0 - p) ** g

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        c, rng = self.buf.cfg.thompson, self.buf.rng
        m = len(self.ids) if c.candidates == 0 else min(len(self.ids), c.candidates * n)
        cand = self.ids.draw(m, rng)
        if len(cand) <= n:
            return cand, np.ones(len(cand))
        a, b = self.posterior(cand)
        score = self.score(rng.beta(a, b))
        order = np.argpartition(-score, n - 1)
        self.ids.insert(cand[order[n:]])  # the candidates not chosen stay available
        out = cand[order[:n]]
        return out, np.ones(n)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "evidence_s": self.evidence_s.copy(), "evidence_f": self.evidence_f.copy(),
                "seen_step": self.seen_step.copy(), "group_size": self.group_size}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        super().load_state_dict(state, available)
        self.evidence_s[:] = state["evidence_s"]
        self.evidence_f[:] = state["evidence_f"]
        self.seen_step[:] = state["seen_step"]
        self.group_size = int(state["group_size"])


@register_sampler("skip")
class SkipSampler(UniformSampler):
    """Uniform draws with a pre-rollout skip (after GRESO): a problem whose last ``after`` groups were all
    zero-variance is skipped, before any rollout is spent on it, with a probability that adapts to hold
    the zero-variance share of what is generated near ``target``.

    Two skip probabilities, one for problems whose recent groups were all solved and one for all failed,
    each move by ``adapt_rate`` x (its zero-variance share in the latest groups − target / 2) after every
    update, within [0, 1 − explore]: a predictably zero-variance problem is still tried with probability
    at least ``explore``, so nothing starves and forgetting (or a late success) is seen. Skipped problems
    stay available (they were never in flight) and are counted in ``buffer/skipped``; when too few are
    left, skipped ones fill the batch.
    """

    SOLVED_SIDE, FAILED_SIDE = 0, 1

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        self.skip_prob = np.full(2, buf.cfg.skip.initial)

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        c, rng, streak = self.buf.cfg.skip, self.buf.rng, self.buf.streak
        chosen: list[np.ndarray] = []
        skipped: list[np.ndarray] = []
        need = n
        while need > 0 and len(self.ids):
            cand = self.ids.draw(need, rng)
            u = rng.random(len(cand))
            s = streak[cand]
            skip = ((s >= c.after) & (u < self.skip_prob[self.SOLVED_SIDE])) | \
                   ((s <= -c.after) & (u < self.skip_prob[self.FAILED_SIDE]))
            chosen.append(cand[~skip])
            skipped.append(cand[skip])
            need -= int((~skip).sum())
        passed = np.concatenate(skipped) if skipped else np.empty(0, dtype=np.int64)
        if need > 0:  # everything left was skipped: fill with skipped ones rather than serve a short batch
            chosen.append(passed[:need])
            passed = passed[need:]
        self.ids.insert(passed)
        self.buf.counters["skipped"] = self.buf.counters.get("skipped", 0) + len(passed)
        out = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
        return out, np.ones(len(out))

    def observe(self, ids: np.ndarray, successes: np.ndarray, group_size: int) -> None:
        if len(ids) == 0:
            return
        c = self.buf.cfg.skip
        shares = np.array([(successes == group_size).mean(), (successes == 0).mean()])
        self.skip_prob = np.clip(self.skip_prob + c.adapt_rate * (shares - c.target / 2), 0.0, 1.0 - c.explore)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "skip_prob": self.skip_prob.copy()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        super().load_state_dict(state, available)
        self.skip_prob[:] = state["skip_prob"]
