"""Soak test of the buffer actor: many concurrent samplers/updaters for a bounded time.

Checks that nothing is lost or served twice (every problem in exactly one pool at the end, no two
callers ever holding the same problem) and reports call latency per time window, so drift (a slow
leak, a growing structure) shows as rising percentiles. Bounded: ``--seconds`` of load, then stops.

Run: ``python benchmarks/buffer_soak.py [--seconds 60] [--callers 16] [--problems 100000] [--batch 256]``.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import ray

from rlpp.config.schema import BufferConfig
from rlpp.distributed.buffer_actor import create_buffer_actor


def soak(seconds: float, callers: int, problems: int, batch: int, sampler: str) -> dict:
    actor = create_buffer_actor(BufferConfig(sampler=sampler), problems, seed=0, num_cpus=0)
    holder = np.full(problems, -1, dtype=np.int64)
    lock = threading.Lock()
    latencies: list[tuple[float, float]] = []  # (time since start, seconds) per sample+update pair
    errors: list[BaseException] = []
    start = time.perf_counter()

    def worker(w: int) -> None:
        rng = np.random.default_rng(w)
        try:
            while time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                ids = ray.get(actor.sample.remote(batch)).ids
                with lock:
                    clash = ids[holder[ids] >= 0]
                    assert not len(clash), f"problems {clash[:5].tolist()} served to two callers at once"
                    holder[ids] = w
                keep = rng.random(len(ids)) < 0.9
                with lock:
                    holder[ids] = -1
                rewards = (rng.random((int(keep.sum()), 8)) < 0.5).astype(float)
                ray.get([actor.update.remote(ids[keep], rewards), actor.release.remote(ids[~keep])])
                latencies.append((t0 - start, time.perf_counter() - t0))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    ray.get(actor.check_invariants.remote())
    stats = ray.get(actor.stats.remote())
    ray.kill(actor)
    assert stats["buffer/in_flight"] == 0
    assert sum(stats[f"buffer/{p}"] for p in ("heap", "solved", "unsolved", "in_flight")) == problems
    return {"latencies": latencies, "stats": stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--problems", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--sampler", default="prioritized")
    args = ap.parse_args()
    from rlpp.distributed.local import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        out = soak(args.seconds, args.callers, args.problems, args.batch, args.sampler)
    finally:
        ray.shutdown()
    lat = np.array(out["latencies"])
    print(f"{args.callers} callers x {args.seconds:.0f} s, {args.problems} problems, batch {args.batch}, "
          f"sampler {args.sampler}: {len(lat)} sample+update rounds, "
          f"{len(lat) * args.batch / args.seconds:.0f} problems/s")
    print("window        rounds   p50 ms   p90 ms   p99 ms")
    edges = np.linspace(0, args.seconds, 5)
    for lo, hi in zip(edges[:-1], edges[1:]):
        w = lat[(lat[:, 0] >= lo) & (lat[:, 0] < hi), 1] * 1e3
        if len(w):
            print(f"{lo:5.0f}-{hi:<5.0f} s {len(w):8d} {np.percentile(w, 50):8.2f} {np.percentile(w, 90):8.2f} "
                  f"{np.percentile(w, 99):8.2f}")
    s = out["stats"]
    print(f"end state: heap {s['buffer/heap']} solved {s['buffer/solved']} unsolved {s['buffer/unsolved']} "
          f"in_flight {s['buffer/in_flight']} | updates {s['buffer/updates']} released {s['buffer/released']} "
          f"| invariants hold, nothing lost or served twice")


if __name__ == "__main__":
    main()
