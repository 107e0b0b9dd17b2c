"""The buffer behind a Ray actor: same semantics, batch-level RPCs, many concurrent callers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rlpp.buffer import POOL_NAMES
from rlpp.config.schema import BufferConfig, RetestConfig
from rlpp.distributed.buffer_actor import create_buffer_actor


def test_actor_round_trip_and_errors(ray_local):
    ray = ray_local
    actor = create_buffer_actor(BufferConfig(), 64, seed=0, num_cpus=0)
    batch = ray.get(actor.sample.remote(16))
    assert len(batch.ids) == 16 and len(set(batch.ids.tolist())) == 16
    ray.get(actor.update.remote(batch.ids, np.ones((16, 4))))
    stats = ray.get(actor.stats.remote())
    assert stats["buffer/solved"] == 16 and stats["buffer/heap"] == 48
    # A bad call surfaces as the buffer's ValueError and leaves the actor's state untouched.
    before = ray.get(actor.state_dict.remote())
    with pytest.raises(ValueError, match="not in flight"):
        ray.get(actor.update.remote(batch.ids, np.ones((16, 4))))
    after = ray.get(actor.state_dict.remote())
    assert all(np.array_equal(before["arrays"][k], after["arrays"][k], equal_nan=True) for k in before["arrays"])
    ray.kill(actor)


@pytest.mark.parametrize("sampler", ["prioritized", "uniform", "per"])
def test_many_concurrent_callers_lose_nothing(ray_local, sampler):
    """8 threads sample, update and release concurrently; no problem is served to two callers at once
    and at the end every problem sits in exactly one pool."""
    ray = ray_local
    n, workers, rounds = 400, 8, 25
    cfg = BufferConfig(sampler=sampler, retest=RetestConfig(every_steps=3, per_round=4))
    actor = create_buffer_actor(cfg, n, seed=1, num_cpus=0)
    owner: dict[int, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    served = np.zeros(n, dtype=np.int64)

    def worker(w: int) -> None:
        rng = np.random.default_rng(w)
        try:
            for _ in range(rounds):
                ids = ray.get(actor.sample.remote(12)).ids
                with lock:
                    clash = [i for i in ids.tolist() if i in owner]
                    assert not clash, f"problems {clash} handed to two callers"
                    owner.update({i: w for i in ids.tolist()})
                    served[ids] += 1
                keep = rng.random(len(ids)) < 0.8
                with lock:
                    for i in ids.tolist():
                        del owner[i]
                rewards = (rng.random((int(keep.sum()), 4)) < 0.5).astype(float)
                ray.get([actor.update.remote(ids[keep], rewards), actor.release.remote(ids[~keep])])
        except BaseException as e:  # collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    ray.get(actor.check_invariants.remote())
    stats = ray.get(actor.stats.remote())
    assert stats["buffer/in_flight"] == 0
    assert sum(stats[f"buffer/{p}"] for p in POOL_NAMES) == n
    assert served.sum() == workers * rounds * 12
    ray.kill(actor)


@pytest.mark.slow
def test_soak_bounded(ray_local):
    """A short, bounded soak (the benchmark runs the long one): no loss, no double service."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from buffer_soak import soak

    out = soak(seconds=5, callers=8, problems=5000, batch=64, sampler="prioritized")
    assert len(out["latencies"]) > 20
    assert out["stats"]["buffer/updates"] > 0 and out["stats"]["buffer/released"] > 0
