"""The index structures on their own: ``IdSet`` against a Python set, ``SumTree`` against sums
recomputed from scratch, and chunked key building against building all keys at once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer_helpers import FAST, assert_batches_equal, buffer_with, make_cfg
from rlpp.buffer import structures
from rlpp.buffer.structures import IdSet, LazyHeap, SumTree, key_id, visit_keys

N = 40


def assert_same_set(s: IdSet, model: set[int]) -> None:
    members = s.members()
    assert len(s) == len(model) == len(members)
    assert set(members.tolist()) == model
    # ``pos`` is the inverse of ``items`` on the members and -1 everywhere else.
    assert np.array_equal(s.pos[members], np.arange(len(members)))
    absent = np.setdiff1d(np.arange(N), members)
    assert (s.pos[absent] == -1).all()
    assert all((i in s) == (i in model) for i in range(N))


# One operation: ("insert" | "remove" | "remove_one" | "draw", how many, where from, seed).
OPS = st.lists(st.tuples(st.sampled_from(["insert", "remove", "remove_one", "draw"]), st.integers(0, N),
                         st.sampled_from(["tail", "anywhere"]), st.integers(0, 2**16)), max_size=40)


@settings(max_examples=200, **FAST)
@given(ops=OPS)
def test_id_set_behaves_like_a_python_set(ops):
    s, model = IdSet(N), set()
    for op, k, where, seed in ops:
        rng = np.random.default_rng(seed)
        if op == "insert":
            absent = np.setdiff1d(np.arange(N), list(model))
            ids = rng.permutation(absent)[:k]
            s.insert(ids)
            model |= set(ids.tolist())
        elif op in ("remove", "remove_one"):
            # "tail": ids from the last slots, the ones a removal moves, mixed with some below.
            pool = s.members()[-k:] if where == "tail" else s.members()
            ids = rng.permutation(pool)[:k]
            if where == "tail" and len(model) > k > 1:
                ids[0] = s.members()[0]
            if op == "remove":
                s.remove(ids)
            else:
                for i in ids.tolist():
                    s.remove_one(i)
            model -= set(ids.tolist())
        else:
            drawn = s.draw(k, rng)
            assert len(drawn) == min(k, len(model))
            assert len(set(drawn.tolist())) == len(drawn) and set(drawn.tolist()) <= model
            model -= set(drawn.tolist())
        assert_same_set(s, model)


@settings(max_examples=100, **FAST)
@given(n=st.integers(1, N), seed=st.integers(0, 2**16), k=st.integers(0, N))
def test_remove_one_leaves_the_same_order_as_remove(n, seed, k):
    """The scalar removal is the one-id case of the vectorised one, so either keeps draws identical."""
    rng = np.random.default_rng(seed)
    a, b = IdSet(N), IdSet(N)
    ids = rng.permutation(N)[:n]
    a.insert(ids)
    b.insert(ids)
    for i in rng.permutation(ids)[:k].tolist():
        a.remove(np.array([i]))
        b.remove_one(i)
        assert np.array_equal(a.members(), b.members())


def reference_tree(capacity: int, leaves: np.ndarray) -> np.ndarray:
    """Every internal node summed from its children, one node at a time."""
    tree = np.zeros(2 * capacity)
    tree[capacity:] = leaves
    for node in range(capacity - 1, 0, -1):
        tree[node] = tree[2 * node] + tree[2 * node + 1]
    return tree


class UpdatingTree(SumTree):
    """Always takes the per-level ancestor update (a small tree would otherwise always rebuild)."""

    def _rebuild_is_cheaper(self, k: int) -> bool:
        return False


class RebuildingTree(SumTree):
    def _rebuild_is_cheaper(self, k: int) -> bool:
        return True


@pytest.mark.parametrize("tree_class", [UpdatingTree, RebuildingTree, SumTree])
def test_sum_tree_equals_sums_recomputed_from_scratch(tree_class):
    """Either update path leaves exactly the tree that summing the leaves from scratch gives, bit for
    bit, whatever the batch (repeated ids included)."""

    @settings(max_examples=100, **FAST)
    @given(n=st.integers(1, 70), seed=st.integers(0, 2**16),
           sizes=st.lists(st.integers(0, 80), min_size=1, max_size=12))
    def check(n, seed, sizes):
        rng = np.random.default_rng(seed)
        tree = tree_class(n)
        leaves = np.zeros(tree.capacity)
        for k in sizes:
            ids = rng.integers(0, n, size=k)
            values = rng.random(k) * rng.choice([1e-6, 1.0, 1e6], size=k)
            tree.set(ids, values)
            leaves[ids] = values
            assert np.array_equal(tree.tree, reference_tree(tree.capacity, leaves))
            assert np.array_equal(tree.leaf(np.arange(n)), leaves[:n])

    check()


def test_sum_tree_chooses_the_update_at_scale_and_matches_a_rebuild():
    """At 2^20 leaves a batch of 1024 updates ancestors (a rebuild would cost more) and a batch of
    2^16 rebuilds; each ends where a tree rebuilt from the same leaves ends."""
    n = 1 << 20
    tree = SumTree(n)
    assert not tree._rebuild_is_cheaper(1024) and tree._rebuild_is_cheaper(1 << 16)
    rng = np.random.default_rng(0)
    tree.set(np.arange(n), rng.random(n))
    for k in (1, 1024, 1 << 16):
        ids = rng.integers(0, n, size=k)
        tree.set(ids, rng.random(k))
        fresh = RebuildingTree(n)
        fresh.set(np.arange(n), tree.leaf(np.arange(n)))
        assert np.array_equal(tree.tree, fresh.tree)


@pytest.mark.parametrize("sampler", ["prioritized", "prompt_replay"])
def test_keys_built_in_small_chunks_serve_the_same_batches(monkeypatch, sampler):
    """Construction and restore build their heaps chunk by chunk; the chunk size changes nothing."""
    def run():
        buf = buffer_with(make_cfg(sampler, retest=dict(every_steps=2, per_round=1)), N, seed=5)
        rng, batches = np.random.default_rng(0), []
        for t in range(12):
            b = buf.sample(7)
            batches.append(b)
            buf.update(b.ids, (rng.random((len(b), 4)) < 0.5).astype(float))
            if t == 6:
                fresh = buffer_with(buf.cfg, N, seed=9)
                fresh.load_state_dict(buf.state_dict())
                buf = fresh
        return batches

    expected = run()
    monkeypatch.setattr(structures, "KEY_CHUNK", 3)
    for a, b in zip(expected, run(), strict=True):
        assert_batches_equal(a, b)


@settings(**FAST)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=64), min_size=1, max_size=50),
       st.integers(-1, 2**20), st.integers(0, 2**31))
def test_scalar_priority_keys_match_the_vector_ones_and_order_any_sign(scores, last_visit, i):
    from rlpp.buffer.structures import priority_key, priority_keys

    ids = np.arange(i, i + len(scores), dtype=np.int64) % (2**32)
    lv = np.full(len(scores), last_visit)
    keys = priority_keys(np.array(scores), lv, ids)
    assert keys == [priority_key(x, last_visit, int(j)) for x, j in zip(scores, ids)]
    # higher score first (a min-heap pops the smallest key), whatever the sign
    by_key = [scores[k] for k in np.argsort(np.array(keys, dtype=object), kind="stable")]
    assert by_key == sorted(scores, reverse=True)


class Model:
    """What a lazy heap stands for: a dict id -> version; an entry (version << 32 | id) is live while
    its id still has that version. Lower versions are served first."""

    def __init__(self):
        self.version: dict[int, int] = {}

    def keys(self, ids):
        return [(self.version[int(i)] << 32) | int(i) for i in ids]

    def live(self, key):
        return self.version.get(key_id(key)) == key >> 32

    def current(self):
        return np.array(sorted(self.version), dtype=np.int64)


@settings(max_examples=200, **FAST)
@given(st.lists(st.tuples(st.sampled_from(["push", "bump", "drop", "pop"]), st.integers(0, 7), st.integers(1, 5)),
                max_size=60), st.sampled_from([(2, 0), (1, 0), (2, 1024)]))
def test_lazy_heap_serves_like_a_sorted_dict_and_stays_bounded(ops, bound):
    m = Model()
    heap = LazyHeap(m.keys, m.live, m.current, lambda: len(m.version), growth=bound[0], slack=bound[1])
    for op, i, k in ops:
        if op == "push" and i not in m.version:
            m.version[i] = k
            heap.push(np.array([i]))
        elif op == "bump" and i in m.version:  # its old entry goes stale; the new one is pushed
            m.version[i] += k
            heap.push(np.array([i]))
        elif op == "drop":  # leaves behind the heap's back
            m.version.pop(i, None)
        elif op == "pop":
            want = sorted(m.version, key=lambda j: (m.version[j], j))[:k]
            assert heap.pop(k).tolist() == want
            for j in want:
                del m.version[j]
        if op in ("push", "bump"):  # a push leaves at most growth x live + slack entries (drops leave stale ones)
            assert len(heap) <= bound[0] * len(m.version) + bound[1]
        assert sorted(heap.live_ids().tolist()) == sorted(m.version)


def test_lazy_heap_serves_a_key_pushed_twice_once_and_holds_what_it_is_told():
    m = Model()
    m.version = {1: 1, 2: 2, 3: 3}
    heap = LazyHeap(m.keys, m.live, m.current, lambda: len(m.version))
    heap.push(np.array([1, 2, 3]))
    heap.push(np.array([1]))  # a release re-pushes an identical entry
    assert heap.pop(2, hold=lambda key: key_id(key) == 2).tolist() == [1, 3]
    assert len(heap) == 1 and heap.pop(5).tolist() == [2]  # the held entry stayed, the duplicate went


def test_lazy_heap_without_liveness_pops_what_it_holds_and_never_rebuilds():
    heap = LazyHeap(lambda ids: visit_keys(np.zeros(len(ids), dtype=np.int64), ids).tolist(), growth=1, slack=0)
    heap.push(np.array([5, 3, 9]))
    heap.rebuild()  # a heap without liveness has no stale entries to drop: a no-op
    assert len(heap) == 3 and heap.pop(2).tolist() == [3, 5] and heap.live_ids().tolist() == [9]
    with pytest.raises(ValueError, match="needs current"):
        LazyHeap(lambda ids: [], live=lambda key: True)


@pytest.mark.parametrize("sampler", ["prioritized", "paper", "prompt_replay", "uniform"])
def test_a_sampler_replaced_on_restore_is_freed_at_once(sampler):
    """A sampler's heap holds its methods weakly: no cycle, so the restore path's replaced sampler (and
    its entries, ~50 MB at 1M problems) goes when the buffer drops it, not at the next cyclic GC."""
    import gc
    import weakref

    buf = buffer_with(make_cfg(sampler), 200)
    buf.update(buf.sample(16).ids, np.ones((16, 4)))
    old = weakref.ref(buf.sampler)
    gc.disable()
    try:
        buf.load_state_dict(buf.state_dict())
        assert old() is None
    finally:
        gc.enable()
    buf.check_invariants()
