"""Samplers: how the buffer chooses among the problems it may serve, selectable by name.

A sampler owns the index over the *available* problems: the ``heap`` pool for samplers that park
(withhold always-solved / always-failed problems until a retest), every problem not in flight for
those that do not. The buffer tells it which ids became available (``insert``) and asks it for a batch
(``pop``); the statistics it reads (priority, last visit, p̂) live in the buffer's arrays.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Callable

import numpy as np

from rlpp.buffer.structures import IdSet, SumTree, key_id, priority_keys, visit_key, visit_keys

if TYPE_CHECKING:
    from rlpp.buffer.buffer import PriorityBuffer

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

    def state_dict(self) -> dict:
        """State not derivable from the buffer's arrays (the default rebuild needs none)."""
        return {}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        """Rebuild from the buffer's restored arrays; ``available`` holds the ids to index, sorted."""
        self.insert(available)


@register_sampler("prioritized")
class PrioritizedSampler(Sampler):
    """Greedy top-B by priority from a max-heap (ties: oldest last visit, then lowest id)."""

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        self.heap: list[int] = []

    def __len__(self) -> int:
        return len(self.heap)

    def insert(self, ids: np.ndarray) -> None:
        b = self.buf
        keys = priority_keys(b.priority[ids], b.last_visit[ids], ids)
        if len(keys) > len(self.heap):
            self.heap.extend(keys)
            heapq.heapify(self.heap)
        else:
            for k in keys:
                heapq.heappush(self.heap, k)

    def members(self) -> np.ndarray:
        return np.array([key_id(k) for k in self.heap], dtype=np.int64)

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        heap = self.heap
        out = [key_id(heapq.heappop(heap)) for _ in range(min(n, len(heap)))]
        return np.asarray(out, dtype=np.int64), np.ones(len(out))


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

    def draw_size(self, batch_size: int) -> int:
        # The relative slack absorbs rounding (1.1 * 50 is 55.00000000000001 in floating point).
        return math.ceil(batch_size * self.buf.cfg.dapo_filter.oversample * (1 - 1e-12))


@register_sampler("per")
class PERSampler(Sampler):
    """Proportional prioritization: P(i) ∝ (ω_i + eps)^alpha over a sum-tree, with importance weights."""

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        self.tree = SumTree(buf.num_problems)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _mass(self, ids: np.ndarray) -> np.ndarray:
        c = self.buf.cfg.per
        return (self.buf.priority[ids] + c.eps) ** c.alpha

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """The probability that a single draw now picks each of ``ids``."""
        return self.tree.leaf(ids) / self.tree.total

    def members(self) -> np.ndarray:
        return np.flatnonzero(self.tree.leaf(np.arange(self.buf.num_problems)) > 0)

    def insert(self, ids: np.ndarray) -> None:
        self.tree.set(ids, self._mass(ids))
        self.size += len(ids)

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        m = min(n, self.size)
        if m == 0:
            return np.empty(0, dtype=np.int64), np.empty(0)
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
        out = np.concatenate(chosen)
        self.size -= m
        w = (n_avail * np.concatenate(probs)) ** (-self.buf.cfg.per.beta)
        return out, w / w.max()


@register_sampler("prompt_replay")
class PromptReplaySampler(Sampler):
    """Replays visited problems with pass rate near 0.5 (window, cooldown, reuse cap), mixed with
    uniform draws over everything else available."""

    parks = False

    def __init__(self, buf: "PriorityBuffer"):
        super().__init__(buf)
        self.ids = IdSet(buf.num_problems)
        self.reuse = np.zeros(buf.num_problems, dtype=np.int32)
        self.heap: list[tuple[float, int, int]] = []  # (|p - 0.5|, visit key, id); stale entries skipped

    def __len__(self) -> int:
        return len(self.ids)

    def _candidates(self, ids: np.ndarray) -> np.ndarray:
        b, c = self.buf, self.buf.cfg.prompt_replay
        dist = np.abs(b.p_hat[ids] - 0.5)
        return (b.visits[ids] > 0) & (dist <= c.window) & (self.reuse[ids] < c.max_reuse)

    def _push(self, ids: np.ndarray) -> None:
        b = self.buf
        ids = ids[self._candidates(ids)]
        dist = np.abs(b.p_hat[ids] - 0.5).tolist()
        vk = visit_keys(b.last_visit[ids], ids).tolist()
        for entry in zip(dist, vk, ids.tolist()):
            heapq.heappush(self.heap, entry)

    def insert(self, ids: np.ndarray) -> None:
        self.ids.insert(ids)
        self._push(ids)

    def members(self) -> np.ndarray:
        return self.ids.members()

    def pop(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        b, c = self.buf, self.buf.cfg.prompt_replay
        want = min(int(c.replay_fraction * n), len(self.ids))
        replay: list[int] = []
        cooling: list[tuple[float, int, int]] = []
        while len(replay) < want and self.heap:
            entry = heapq.heappop(self.heap)
            i = entry[2]
            current = (
                i in self.ids
                and entry[0] == abs(b.p_hat[i] - 0.5)
                and entry[1] == visit_key(int(b.last_visit[i]), i)
            )
            if not current or self.reuse[i] >= c.max_reuse:
                continue  # stale: the problem was served or revisited since this entry was pushed
            if b.step - b.last_visit[i] < c.cooldown_steps:
                cooling.append(entry)
                continue
            replay.append(i)
            # Out of the set at once: a release re-pushes an entry identical to one still in the heap,
            # and that duplicate, popped later in this loop, must read as stale, not serve i again.
            self.ids.remove(np.array([i], dtype=np.int64))
        for entry in cooling:
            heapq.heappush(self.heap, entry)
        replay_ids = np.asarray(replay, dtype=np.int64)
        self.reuse[replay_ids] += 1
        fresh = self.ids.draw(n - len(replay_ids), b.rng)
        out = np.concatenate([replay_ids, fresh])
        return out, np.ones(len(out))

    def state_dict(self) -> dict:
        return {"ids": self.ids.state_dict(), "reuse": self.reuse.copy()}

    def load_state_dict(self, state: dict, available: np.ndarray) -> None:
        self.ids.load_state_dict(state["ids"])
        self.reuse[:] = state["reuse"]
        self.heap = []
        self._push(np.sort(self.ids.members()))
