"""Index structures behind the samplers: packed heap keys, a random-access id set, a sum-tree.

Heap entries are single Python ints rather than tuples: a tuple ``(-priority, visit, id)`` costs about
150 bytes, a packed int about 48, which is what lets 10M problems fit in well under 2 GB. The packing is
exact, not quantised: a non-negative float64's bit pattern read as uint64 orders like the float itself.
"""

from __future__ import annotations

import heapq
import inspect
import struct
import weakref
from collections.abc import Callable, Iterable, Iterator

import numpy as np

HEAP, SOLVED, UNSOLVED, IN_FLIGHT = 0, 1, 2, 3
"""Pool codes of ``PriorityBuffer.pool`` (here so that samplers can name them without importing the buffer)."""
POOL_NAMES = ("heap", "solved", "unsolved", "in_flight")

ID_BITS = 32
MAX_PROBLEMS = 1 << ID_BITS
KEY_CHUNK = 1 << 16
"""Bulk key building goes this many ids at a time. The ``tolist`` copies behind the keys cost ~100 bytes
per id while they live, so building all 10M keys at once added ~1 GB to the peak. Chunks stay small
(~6 MB of temporaries) because glibc serves blocks up to the largest one freed from its heap and does
not hand them back: 2^20-id chunks kept ~100 MB more RSS at 10M after the build."""
_F64 = struct.Struct("<d")
_MASK64 = (1 << 64) - 1


def chunks(ids: np.ndarray) -> Iterator[np.ndarray]:
    """``ids`` in consecutive slices of at most ``KEY_CHUNK``."""
    for start in range(0, len(ids), KEY_CHUNK):
        yield ids[start : start + KEY_CHUNK]


def float_order(x: np.ndarray) -> np.ndarray:
    """uint64 bit patterns of non-negative floats; they order like the floats."""
    return np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)


def signed_float_order(x: np.ndarray) -> np.ndarray:
    """uint64 bit patterns of finite floats of either sign; they order like the floats (negative
    patterns are inverted, non-negative ones get the sign bit set)."""
    b = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    return np.where(b >> np.uint64(63) == 1, ~b, b | np.uint64(1 << 63))


def signed_float_order_one(x: float) -> int:
    """The scalar form of ``signed_float_order``."""
    b = int.from_bytes(_F64.pack(x), "little")
    return (~b & _MASK64) if b >> 63 else b | (1 << 63)


def float_order_one(x: float) -> int:
    """The scalar form of ``float_order``."""
    return int.from_bytes(_F64.pack(x), "little")


def visit_keys(last_visit: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """uint64 keys ordering by last visit (never visited = -1 first), then id."""
    return ((last_visit.astype(np.int64) + 1).astype(np.uint64) << np.uint64(ID_BITS)) | ids.astype(np.uint64)


def visit_key(last_visit: int, i: int) -> int:
    """The scalar form of ``visit_keys``."""
    return ((last_visit + 1) << ID_BITS) | i


def packed_keys(major: np.ndarray, last_visit: np.ndarray, ids: np.ndarray) -> list[int]:
    """Min-heap keys ordering by ``major`` (uint64), then oldest last visit, then lowest id; all three
    arrays are aligned with ``ids``. Callers with many ids go through ``chunks``."""
    return [(h << 64) | low for h, low in zip(major.tolist(), visit_keys(last_visit, ids).tolist())]


def packed_key(major: int, last_visit: int, i: int) -> int:
    """The scalar form of ``packed_keys``."""
    return (major << 64) | visit_key(last_visit, i)


def priority_keys(score: np.ndarray, last_visit: np.ndarray, ids: np.ndarray) -> list[int]:
    """Min-heap keys serving the highest score (any sign) first, ties by oldest last visit, then
    lowest id."""
    return packed_keys(~signed_float_order(score), last_visit, ids)


def priority_key(score: float, last_visit: int, i: int) -> int:
    """The scalar form of ``priority_keys``."""
    return packed_key(~signed_float_order_one(score) & _MASK64, last_visit, i)


def add_to_heap(heap: list[int], count: int, key_chunks: Iterable[list[int]]) -> None:
    """Add ``count`` keys (at most), given in chunks, to a min-heap: pushed one by one when few, or
    appended and re-heapified in O(len(heap)) when they outnumber the heap (construction, restore)."""
    if count > len(heap):
        for keys in key_chunks:
            heap.extend(keys)
        heapq.heapify(heap)
    else:
        for keys in key_chunks:
            for k in keys:
                heapq.heappush(heap, k)


def key_id(key: int) -> int:
    return key & (MAX_PROBLEMS - 1)


def pop_ids(heap: list[int], k: int, live: Callable[[int], bool] | None = None) -> np.ndarray:
    """Pop up to k ids off a min-heap of packed keys. With ``live``, entries it rejects are stale and
    skipped (lazy deletion), and a second copy of a key already taken reads as stale too."""
    if live is None:
        return np.asarray([key_id(heapq.heappop(heap)) for _ in range(min(k, len(heap)))], dtype=np.int64)
    out: list[int] = []
    taken: set[int] = set()
    while len(out) < k and heap:
        key = heapq.heappop(heap)
        i = key_id(key)
        if i not in taken and live(key):
            out.append(i)
            taken.add(i)
    return np.asarray(out, dtype=np.int64)


class _Callback:
    """A callable held for a ``LazyHeap``; a bound method is held by a weak reference to its object. The
    object owns the heap, so a strong one would close a cycle, and a sampler the buffer replaced (on
    restore) would keep its entries until the cyclic garbage collector ran: +50 MB held at 1M problems."""

    __slots__ = ("ref", "func", "fn")

    def __init__(self, fn: Callable):
        if inspect.ismethod(fn):
            self.ref, self.func, self.fn = weakref.ref(fn.__self__), fn.__func__, None
        else:
            self.ref, self.func, self.fn = None, None, fn

    def get(self) -> Callable:
        return self.fn if self.ref is None else self.func.__get__(self.ref())


class LazyHeap:
    """A min-heap of packed int keys with lazy deletion, the one home of the rule three indexes share
    (the prioritized samplers' heap, prompt replay's candidates, the buffer's parked queue).

    ``keys(ids)`` gives the entries of ``ids`` (it may leave out ids that do not belong). With ``live``
    (key -> bool), entries can go stale behind the heap's back: they are skipped when popped, and once
    the heap holds more than ``growth`` x ``size()`` + ``slack`` entries it is rebuilt from
    ``current()`` (the ids that belong now). Without ``live`` no entry ever goes stale: pops take the
    top entries as they are and the heap is never rebuilt. A rebuild serves the same order: every
    current id has its entry, and copies of one key serve it at most once per pop. Bound methods are held
    weakly (``_Callback``): the owner of the heap may pass its own methods.
    """

    def __init__(self, keys: Callable[[np.ndarray], list[int]], live: Callable[[int], bool] | None = None,
                 current: Callable[[], np.ndarray] | None = None, size: Callable[[], int] | None = None,
                 growth: float = 2, slack: int = 1024):
        if live is not None and (current is None or size is None):
            raise ValueError("a LazyHeap whose entries can go stale needs current() and size() to rebuild")
        self._keys, self._live = _Callback(keys), None if live is None else _Callback(live)
        self._current = None if current is None else _Callback(current)
        self._size = None if size is None else _Callback(size)
        self.growth, self.slack = growth, slack
        self.entries: list[int] = []

    def __len__(self) -> int:
        """Entries, stale ones included."""
        return len(self.entries)

    @property
    def lazy(self) -> bool:
        """Whether entries can go stale (a ``live`` predicate was given)."""
        return self._live is not None

    def push(self, ids: np.ndarray) -> None:
        add_to_heap(self.entries, len(ids), map(self._keys.get(), chunks(ids)))
        if self._live is not None and len(self.entries) > self.growth * self._size.get()() + self.slack:
            self.rebuild()

    def rebuild(self) -> None:
        """Entries for exactly the ids that belong now (``current()``), nothing stale; a no-op for a heap
        without ``current``."""
        if self._current is None:
            return
        self.entries = []
        ids = self._current.get()()
        add_to_heap(self.entries, len(ids), map(self._keys.get(), chunks(ids)))

    def clear(self) -> None:
        self.entries = []

    def pop(self, k: int, hold: Callable[[int], bool] | None = None) -> np.ndarray:
        """Up to k ids of live entries, in key order. A live entry that ``hold`` accepts is not served
        now and stays in the heap (e.g. a problem cooling down)."""
        live = None if self._live is None else self._live.get()
        if hold is None:
            return pop_ids(self.entries, k, live)
        held: list[int] = []

        def serve(key: int) -> bool:
            if live is not None and not live(key):
                return False
            if hold(key):
                held.append(key)
                return False
            return True

        try:
            return pop_ids(self.entries, k, serve)
        finally:
            for key in held:
                heapq.heappush(self.entries, key)

    def live_ids(self, unique: bool = True) -> np.ndarray:
        """Ids of the live entries (a full scan: for invariant checks). ``unique=False`` keeps the
        copies a problem released twice may have."""
        live = None if self._live is None else self._live.get()
        keys = self.entries if live is None else [k for k in self.entries if live(k)]
        ids = np.array([key_id(k) for k in keys], dtype=np.int64)
        return np.unique(ids) if unique else ids


class IdSet:
    """A set of ids in [0, n) with O(1) insert/remove and uniform draws without replacement.

    Members sit in ``items[:size]`` and ``pos`` maps each id to its slot (-1 when absent). That order
    decides which ids a seeded draw picks, so it is part of the state.
    """

    def __init__(self, n: int):
        self.items = np.empty(n, dtype=np.int64)
        self.pos = np.full(n, -1, dtype=np.int64)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __contains__(self, i: int) -> bool:
        return self.pos[i] >= 0

    def insert(self, ids: np.ndarray) -> None:
        """Add distinct non-members."""
        k = len(ids)
        self.items[self.size : self.size + k] = ids
        self.pos[ids] = np.arange(self.size, self.size + k)
        self.size += k

    def remove(self, ids: np.ndarray) -> None:
        """Remove distinct members in O(len(ids)): the members among the last len(ids) slots that
        stay fill the slots the removed ones leave below that tail."""
        items, pos = self.items, self.pos
        end = self.size - len(ids)
        holes = pos[ids]
        pos[ids] = -1
        holes = holes[holes < end]
        tail = items[end : self.size]
        movers = tail[pos[tail] >= 0]  # as many as there are holes
        items[holes] = movers
        pos[movers] = holes
        self.size = end

    def remove_one(self, i: int) -> None:
        """The scalar form of ``remove`` (same resulting order), for callers that remove as they go."""
        p = int(self.pos[i])
        self.size -= 1
        last = int(self.items[self.size])
        self.items[p] = last
        self.pos[last] = p
        self.pos[i] = -1

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
    """Binary sum-tree over n leaves; batched updates and batched prefix-sum descents in numpy.

    Every internal node is recomputed from its two children (never updated by deltas), so the sums
    do not drift and the tree depends only on its leaves.
    """

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
        if len(idx) == 0:
            return
        if self._rebuild_is_cheaper(len(idx)):
            self._rebuild()
        else:
            self._update_ancestors(idx)

    def _update_ancestors(self, idx: np.ndarray) -> None:
        """Recompute the ancestors of the nodes ``idx``, a level at a time. Parents of sorted distinct
        nodes come out sorted, so dropping adjacent repeats keeps each level distinct with one sort."""
        tree = self.tree
        idx = np.unique(idx)
        keep = np.ones(len(idx), dtype=bool)
        for _ in range(self.depth):
            idx >>= 1
            np.not_equal(idx[1:], idx[:-1], out=keep[1 : len(idx)])
            idx = idx[keep[: len(idx)]]
            left = idx << 1
            tree[idx] = tree[left] + tree[left + 1]

    def _rebuild_is_cheaper(self, k: int) -> bool:
        """Whether recomputing every internal node beats updating the ancestors of k leaves. Measured
        with numpy: a rebuild costs ~2 ns per leaf; an update ~10 µs per level plus ~16 ns per node."""
        return self.capacity < self.depth * (5_000 + 8 * k)

    def _rebuild(self) -> None:
        """Recompute every internal node, a level at a time from the level below (strided slices)."""
        tree, lo = self.tree, self.capacity >> 1
        while lo:
            np.add(tree[2 * lo : 4 * lo : 2], tree[2 * lo + 1 : 4 * lo : 2], out=tree[lo : 2 * lo])
            lo >>= 1

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
