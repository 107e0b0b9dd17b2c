"""Index structures behind the samplers: packed heap keys, a random-access id set, a sum-tree.

Heap entries are single Python ints rather than tuples: a tuple ``(-priority, visit, id)`` costs about
150 bytes, a packed int about 48, which is what lets 10M problems fit in well under 2 GB. The packing is
exact, not quantised: a non-negative float64's bit pattern read as uint64 orders like the float itself.
"""

from __future__ import annotations

import numpy as np

ID_BITS = 32
MAX_PROBLEMS = 1 << ID_BITS
_LOW_MASK = (1 << 64) - 1


def visit_keys(last_visit: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """uint64 keys ordering by last visit (never visited = -1 first), then id."""
    return ((last_visit.astype(np.int64) + 1).astype(np.uint64) << np.uint64(ID_BITS)) | ids.astype(np.uint64)


def visit_key(last_visit: int, i: int) -> int:
    """The scalar form of ``visit_keys``."""
    return ((last_visit + 1) << ID_BITS) | i


def priority_keys(priority: np.ndarray, last_visit: np.ndarray, ids: np.ndarray) -> list[int]:
    """Min-heap keys serving the highest priority first, ties by oldest last visit, then lowest id."""
    hi = ~np.ascontiguousarray(priority, dtype=np.float64).view(np.uint64)
    lo = visit_keys(last_visit, ids)
    return [(h << 64) | l for h, l in zip(hi.tolist(), lo.tolist())]


def key_id(key: int) -> int:
    return key & (MAX_PROBLEMS - 1)


def key_low(key: int) -> int:
    """The (visit, id) part of a priority key, or the whole of a visit key."""
    return key & _LOW_MASK


class IdSet:
    """A set of ids in [0, n) with O(1) insert/remove and uniform draws without replacement."""

    def __init__(self, n: int):
        self.items = np.empty(n, dtype=np.int64)
        self.pos = np.full(n, -1, dtype=np.int64)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __contains__(self, i: int) -> bool:
        return self.pos[i] >= 0

    def insert(self, ids: np.ndarray) -> None:
        k = len(ids)
        self.items[self.size : self.size + k] = ids
        self.pos[ids] = np.arange(self.size, self.size + k)
        self.size += k

    def remove(self, ids: np.ndarray) -> None:
        items, pos = self.items, self.pos
        for i in ids.tolist():
            p = pos[i]
            last = items[self.size - 1]
            items[p] = last
            pos[last] = p
            pos[i] = -1
            self.size -= 1

    def draw(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """Remove and return k ids drawn uniformly without replacement."""
        k = min(k, self.size)
        ids = self.items[rng.choice(self.size, size=k, replace=False)]
        self.remove(ids)
        return ids

    def members(self) -> np.ndarray:
        return self.items[: self.size].copy()

    def state_dict(self) -> dict:
        return {"items": self.members()}

    def load_state_dict(self, state: dict) -> None:
        self.pos[:] = -1
        self.size = 0
        self.insert(np.asarray(state["items"], dtype=np.int64))


class SumTree:
    """Binary sum-tree over n leaves; batched updates and batched prefix-sum descents in numpy."""

    def __init__(self, n: int):
        self.capacity = 1 << max(0, int(n - 1).bit_length())
        self.depth = self.capacity.bit_length() - 1
        self.tree = np.zeros(2 * self.capacity, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def leaf(self, ids: np.ndarray) -> np.ndarray:
        return self.tree[ids + self.capacity]

    def set(self, ids: np.ndarray, values: np.ndarray) -> None:
        tree = self.tree
        idx = np.asarray(ids, dtype=np.int64) + self.capacity
        tree[idx] = values
        # Recompute ancestors from their children (never add deltas) so sums do not drift.
        for _ in range(self.depth):
            idx = np.unique(idx >> 1)
            tree[idx] = tree[2 * idx] + tree[2 * idx + 1]

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf ids whose cumulative-mass interval contains each value of ``mass`` (in [0, total))."""
        tree = self.tree
        idx = np.ones(len(mass), dtype=np.int64)
        u = mass.astype(np.float64, copy=True)
        for _ in range(self.depth):
            left = 2 * idx
            lv = tree[left]
            right = u >= lv
            u = np.where(right, u - lv, u)
            idx = np.where(right, left + 1, left)
        return idx - self.capacity
