"""Benchmark of ``rlpp.buffer.PriorityBuffer``: latency of one training step's buffer work, and memory.

What is measured, for each problem count (default 10k, 100k, 1M, 10M):

* **step latency** - wall time of one ``sample(1024)`` plus the matching ``update(ids, rewards)`` with
  rewards of shape (1024, 8), reported as median and p90 over ``--reps`` repetitions after
  ``--warmup`` untimed ones. Rewards are Bernoulli draws from a fixed latent pass rate per problem
  (Beta(0.4, 0.4): U-shaped, so many problems come back all-solved or all-failed), which moves
  problems between the heap, solved and unsolved pools as real training does. Drawing the rewards is
  the trainer's work, not the buffer's, so it sits outside the timed region. Python's garbage
  collector stays enabled, as in a real run.
* **construction time** of ``PriorityBuffer(cfg, n)``.
* **memory** - each (size, sampler) runs in a fresh subprocess, so sizes do not pollute one another.
  The peak RSS is reset (``/proc/self/clear_refs``) just before the buffer is built; "peak" is the
  high-water RSS over building, restoring and stepping the buffer, minus the RSS before it, and
  "held" is the RSS still in use at the end minus that same base. Both include the CPython/numpy
  allocator overhead that a real process pays. 1 MB = 10**6 bytes throughout.
* a **sort-based baseline** (``SortBaseline`` below), measured the same way: the same per-problem
  arrays, but every sample fully sorts the eligible problems. It gives the speedup of the heap.

By default the buffer is first brought to a mid-training state ("aged"): every problem has been
visited once, at a random earlier step, with a group of 8 rewards drawn from its latent pass rate, so
the pools are mixed and every statistics array is resident. That state is installed with the
buffer's public ``load_state_dict`` (its restore path, which rebuilds the sampler's index), written
straight into the buffer's own arrays so no extra copy inflates the memory figures. ``--fresh``
skips it and times the very start of training, when every problem is still unseen.

Run from the repository root::

    python benchmarks/buffer_bench.py                     # all four sizes, prioritized + baseline
    python benchmarks/buffer_bench.py --quick             # 10k and 100k only (CI smoke test)
    python benchmarks/buffer_bench.py --sizes 1e6 --samplers prioritized,per,uniform --json out.json

The default run takes well under a minute on a 2-core machine (about 35 s, most of it building and
aging the 10M buffer and the baseline's 10M sorts) and needs about 1.5 GB of free memory (the 10M
buffer's peak, about 1.2 GB, reached while it is aged). Figures for samplers other than ``prioritized`` have no baseline column:
the baseline reproduces the prioritized sampler's order only.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # so ``python benchmarks/buffer_bench.py`` works without PYTHONPATH

from rlpp.buffer import HEAP, IN_FLIGHT, SOLVED, UNSOLVED, PriorityBuffer  # noqa: E402
from rlpp.buffer.buffer import STATE_VERSION  # noqa: E402
from rlpp.config import BufferConfig, PrioritizedConfig, RetestConfig  # noqa: E402
from rlpp.config.buffer import PriorConfig  # noqa: E402

DEFAULT_SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (10_000, 100_000)
SAMPLER_NAMES = ("prioritized", "paper", "uniform", "per", "prompt_replay", "dapo_filter", "soft", "mix", "prop",
                 "thompson", "skip", "mopps", "greso", "random_skip", "hier")
"""Every sampler but ``oracle``, whose cost is the uncharged rollouts it measures pools with, not the
buffer's; ``hier`` is the replay study's candidate (mopps with the cluster prior, CLUSTERS clusters)."""
CLUSTERS = 64
VARIANTS = {  # the prioritized variants of the sampler study (configs/ablate/tiny-lr.yaml), scaled retest
    "soft": dict(selection="softmax", temperature=0.05, priority="posterior", park_after=2),
    "mix": dict(uniform_mix=0.3, priority="posterior", park_after=2),
    "prop": dict(selection="proportional", priority="posterior", park_after=2),
}


def make_buffer(system: str, n: int, seed: int) -> PriorityBuffer:
    if system == "hier":
        cfg = BufferConfig(sampler="mopps", prior=PriorConfig(mode="cluster"))
        return PriorityBuffer(cfg, n, seed, clusters=np.arange(n) % CLUSTERS)
    return PriorityBuffer(buffer_config(system), n, seed)


def buffer_config(system: str) -> BufferConfig:
    if system in VARIANTS:
        return BufferConfig(sampler="prioritized", prioritized=PrioritizedConfig(**VARIANTS[system]),
                            retest=RetestConfig(mode="scaled"))
    return BufferConfig(sampler=system)
BASELINE = "sort_baseline"
LATENT_BETA = 0.4  # Beta(a, a) shape of the latent pass rates
TARGET_MS_AT_1M = 5.0
TARGET_BYTES_AT_10M = 2e9
MB = 1e6


# ---------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    return 1024 * kib if kib is not None else peak_rss_bytes()


def peak_rss_bytes() -> int:
    kib = _status_kib("VmHWM")
    if kib is not None:
        return 1024 * kib
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS so the peak covers only what follows (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------- workload
def latent_pass_rates(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 1]).beta(LATENT_BETA, LATENT_BETA, size=n)


def draw_rewards(latent: np.ndarray, ids: np.ndarray, group: int, rng: np.random.Generator) -> np.ndarray:
    return (rng.random((len(ids), group)) < latent[ids, None]).astype(np.float64)


def synthetic_history(n: int, latent: np.ndarray, group: int, batch: int, seed: int,
                      write: Callable[[slice, np.ndarray, np.ndarray], None]) -> int:
    """Pretend one epoch has passed: each problem visited once at a random step with ``group``
    Bernoulli rewards. Calls ``write(slice, successes, last_visit)`` chunk by chunk (chunks keep the
    temporaries small, so they barely show in the memory peak) and returns the step reached.
    Seeded on its own, so the buffer and the baseline get the same history."""
    rng = np.random.default_rng([seed, 2])
    steps = max(1, math.ceil(n / batch))
    chunk = 1 << 18
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        successes = rng.binomial(group, latent[sl])
        last_visit = rng.integers(1, steps + 1, size=len(successes))
        write(sl, successes, last_visit)
    return steps


def pools_for(p: np.ndarray) -> np.ndarray:
    """Pool of a returned problem with pass rate p, as the buffer assigns it."""
    return np.where(p >= 1.0, SOLVED, np.where(p <= 0.0, UNSOLVED, HEAP)).astype(np.int8)


def age_buffer(buf: PriorityBuffer, latent: np.ndarray, group: int, batch: int, seed: int) -> None:
    """Install ``synthetic_history`` in ``buf`` through its restore path (``load_state_dict``)."""

    def write(sl: slice, s: np.ndarray, lv: np.ndarray) -> None:
        p = s / group
        buf.attempts[sl] = group
        buf.successes[sl] = s
        if buf.w_attempts.size:  # stats=decayed keeps weighted evidence too
            buf.w_attempts[sl] = group
            buf.w_successes[sl] = s
        buf.p_hat[sl] = p
        buf.streak[sl] = np.where(s == group, 1, np.where(s == 0, -1, 0))
        buf.visits[sl] = 1
        buf.last_visit[sl] = lv
        buf.sample_step[sl] = lv
        ids = np.arange(sl.start, sl.stop)
        # The buffer's own formulas, so every variant (posterior priority, park_after) ages consistently.
        buf.priority[sl] = buf._priority(ids)
        buf.pool[sl] = buf._pools(ids)
        buf.origin[sl] = buf.pool[sl]

    step = synthetic_history(buf.num_problems, latent, group, batch, seed, write)
    buf.counts[:] = np.bincount(buf.pool, minlength=4)
    counters = dict(buf.counters, seen=buf.num_problems, updates=buf.num_problems)
    # This mirrors ``PriorityBuffer.state_dict()`` (same keys, its ``_ARRAYS`` list), built by hand so
    # nothing is copied; load_state_dict validates it, so a format change fails loudly here.
    # The arrays are handed over by reference (restoring them onto themselves is a no-op copy), so
    # the restore costs only what the buffer itself allocates while rebuilding its index.
    state = {
        "version": STATE_VERSION,
        "num_problems": buf.num_problems,
        "sampler": buf.cfg.sampler,
        "stats": buf.cfg.stats,
        "arrays": {k: getattr(buf, k) for k in buf._ARRAYS},
        "step": step,
        "last_round": step,
        "counters": counters,
        "rng": buf.rng.bit_generator.state,
        "sampler_state": buf.sampler.state_dict(),
        "available": buf.available.state_dict(),  # uniform share's index: nothing is in flight yet
    }
    buf.load_state_dict(state)
    if hasattr(buf.sampler, "evidence_s"):  # thompson keeps its own (discounted) evidence: the same history
        buf.sampler.evidence_s[:] = buf.successes
        buf.sampler.evidence_f[:] = buf.attempts - buf.successes
        buf.sampler.seen_step[:] = buf.last_visit


class SortBaseline:
    """The naive reference: per-problem numpy arrays, and a full sort of the eligible problems on
    every draw.

    It serves the same order as the ``prioritized`` sampler - highest priority first, then oldest
    last visit, then lowest id - but leaves out retests (which only makes it cheaper). Memory is the
    arrays below, 25 bytes per problem, plus the sort's temporaries while sampling.
    """

    def __init__(self, n: int, unseen_priority: float = 0.25):
        self.priority = np.full(n, unseen_priority)
        self.p_hat = np.full(n, np.nan)
        self.last_visit = np.full(n, -1, dtype=np.int64)
        self.pool = np.full(n, HEAP, dtype=np.int8)
        self.step = 0

    def age(self, latent: np.ndarray, group: int, batch: int, seed: int) -> None:
        def write(sl: slice, s: np.ndarray, lv: np.ndarray) -> None:
            p = s / group
            self.p_hat[sl] = p
            self.priority[sl] = p * (1.0 - p)
            self.last_visit[sl] = lv
            self.pool[sl] = pools_for(p)

        self.step = synthetic_history(len(self.pool), latent, group, batch, seed, write)

    def sample(self, k: int) -> np.ndarray:
        self.step += 1
        eligible = np.flatnonzero(self.pool == HEAP)
        # lexsort is stable and ``eligible`` is ascending, so equal (priority, visit) keys keep
        # id order without a third key.
        order = np.lexsort((self.last_visit[eligible], -self.priority[eligible]))
        ids = eligible[order[:k]]
        self.pool[ids] = IN_FLIGHT
        return ids

    def update(self, ids: np.ndarray, rewards: np.ndarray) -> None:
        p = (rewards >= 0.5).sum(axis=1) / rewards.shape[1]
        self.p_hat[ids] = p
        self.priority[ids] = p * (1.0 - p)
        self.last_visit[ids] = self.step
        self.pool[ids] = pools_for(p)


# ---------------------------------------------------------------------------------------- timing
def time_steps(sample: Callable[[int], np.ndarray], update: Callable[[np.ndarray, np.ndarray], None],
               latent: np.ndarray, batch: int, group: int, warmup: int, reps: int, budget_s: float,
               seed: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of sample + update per step. CPU time is kept beside wall time
    because on a shared machine the wall clock also counts time spent waiting for a core. After the
    first timed step, the number of repetitions is cut to fit ``budget_s`` (at least 3), which only
    bites for the slow baseline."""
    rng = np.random.default_rng([seed, 3])
    wall: list[float] = []
    cpu: list[float] = []
    i = 0
    while len(wall) < reps:
        t0, c0 = time.perf_counter(), time.process_time()
        ids = sample(batch)
        t1, c1 = time.perf_counter(), time.process_time()
        rewards = draw_rewards(latent, ids, group, rng)  # the trainer's work: not timed
        t2, c2 = time.perf_counter(), time.process_time()
        update(ids, rewards)
        t3, c3 = time.perf_counter(), time.process_time()
        i += 1
        if i > warmup:
            wall.append(1e3 * ((t1 - t0) + (t3 - t2)))
            cpu.append(1e3 * ((c1 - c0) + (c3 - c2)))
            if len(wall) == 1:
                reps = min(reps, max(3, int(budget_s * 1e3 / max(wall[0], 1e-6))))
    return wall, cpu


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one buffer (or the baseline) of one size, age it, time it; runs in a fresh process."""
    n, system, seed = spec["size"], spec["system"], spec["seed"]
    batch, group = spec["batch"], spec["group"]
    latent = latent_pass_rates(n, seed)  # the simulated environment, not the buffer: before the base
    gc.collect()
    peak_reset = reset_peak_rss()
    base = rss_bytes()

    t0 = time.perf_counter()
    if system == BASELINE:
        impl: Any = SortBaseline(n)
    else:
        impl = make_buffer(system, n, seed)
    build_s = time.perf_counter() - t0
    build_peak = peak_rss_bytes() - base

    t0 = time.perf_counter()
    if not spec["fresh"]:
        if system == BASELINE:
            impl.age(latent, group, batch, seed)
        else:
            age_buffer(impl, latent, group, batch, seed)
    age_s = time.perf_counter() - t0
    if system != BASELINE and n <= 100_000:
        impl.check_invariants()  # cheap at small sizes; proves the synthetic state is consistent

    if system == BASELINE:
        sample, update = impl.sample, impl.update
    else:
        def sample(k: int) -> np.ndarray:
            return impl.sample(k).ids
        update = impl.update
    times, cpu_times = time_steps(sample, update, latent, batch, group, spec["warmup"], spec["reps"],
                                  spec["budget_s"], seed)

    peak = peak_rss_bytes() - base
    held = rss_bytes() - base
    result: dict[str, Any] = {
        "size": n, "system": system, "fresh": spec["fresh"], "build_s": build_s, "age_s": age_s,
        "reps": len(times), "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
        "min_ms": float(np.min(times)), "mean_ms": float(np.mean(times)),
        "cpu_median_ms": float(np.median(cpu_times)), "cpu_p90_ms": float(np.percentile(cpu_times, 90)),
        "peak_bytes": peak, "build_peak_bytes": build_peak, "held_bytes": held,
        "peak_bytes_per_problem": peak / n, "held_bytes_per_problem": held / n,
        "base_rss_bytes": base, "peak_rss_reset": peak_reset,
    }
    if system != BASELINE:
        result["pools"] = {k.removeprefix("buffer/"): v for k, v in impl.stats().items()
                           if k in ("buffer/heap", "buffer/solved", "buffer/unsolved", "buffer/in_flight")}
    return result


def spawn_worker(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cross_check(n: int = 20_000, steps: int = 30, seed: int = 0) -> bool:
    """The baseline must serve exactly the batches the prioritized sampler serves (retests off, since
    the baseline has none); otherwise its timings compare different work."""
    latent = latent_pass_rates(n, seed)
    cfg = BufferConfig(sampler="prioritized", retest=RetestConfig(mode="off"))
    buf, ref = PriorityBuffer(cfg, n, seed), SortBaseline(n)
    age_buffer(buf, latent, 8, 1024, seed)
    ref.age(latent, 8, 1024, seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        a, b = buf.sample(1024).ids, ref.sample(1024)
        if not np.array_equal(a, b):
            return False
        r = draw_rewards(latent, a, 8, rng)
        buf.update(a, r)
        ref.update(b, r)
    return True


# ---------------------------------------------------------------------------------------- report
def fmt_size(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return str(n)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def print_table(results: list[dict[str, Any]], sizes: list[int], samplers: list[str]) -> None:
    by = {(r["size"], r["system"]): r for r in results}
    header = ["size", "sampler", "sample+update ms med (p90)", "cpu ms med", "baseline ms med", "speedup",
              "MB peak", "B/problem peak", "MB held", "B/problem held", "baseline MB peak", "build s"]
    rows = []
    for n in sizes:
        base = by.get((n, BASELINE))
        for s in samplers:
            r = by[(n, s)]
            base_ms = speedup = base_mb = "-"
            if base is not None and s == "prioritized":
                base_ms = f"{base['median_ms']:.1f}"
                if base["reps"] < r["reps"]:
                    base_ms += f" [{base['reps']} reps]"  # the time budget cut the slow baseline short
                ratio = base["median_ms"] / r["median_ms"]
                speedup = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"
                base_mb = f"{base['peak_bytes'] / MB:.0f}"
            rows.append([
                fmt_size(n), s, f"{r['median_ms']:.2f} ({r['p90_ms']:.2f})", f"{r['cpu_median_ms']:.2f}",
                base_ms, speedup,
                f"{r['peak_bytes'] / MB:.0f}", f"{r['peak_bytes_per_problem']:.0f}",
                f"{r['held_bytes'] / MB:.0f}", f"{r['held_bytes_per_problem']:.0f}", base_mb, f"{r['build_s']:.2f}",
            ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))


def check_targets(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per sampler run (the sort baseline is not one): the latency target at 1M and the memory target at
    10M, each None where that size was not run for it."""
    by = {(r["size"], r["system"]): r for r in results}
    out: dict[str, dict[str, Any]] = {}
    for system in dict.fromkeys(r["system"] for r in results if r["system"] != BASELINE):
        r1, r10 = by.get((1_000_000, system)), by.get((10_000_000, system))
        out[system] = {
            "latency_1M": None if r1 is None else {
                "target_ms": TARGET_MS_AT_1M, "median_ms": r1["median_ms"], "p90_ms": r1["p90_ms"],
                "cpu_median_ms": r1["cpu_median_ms"], "holds": r1["median_ms"] < TARGET_MS_AT_1M},
            "memory_10M": None if r10 is None else {
                "target_bytes": TARGET_BYTES_AT_10M, "peak_bytes": r10["peak_bytes"], "held_bytes": r10["held_bytes"],
                "holds_peak": r10["peak_bytes"] < TARGET_BYTES_AT_10M,
                "holds_held": r10["held_bytes"] < TARGET_BYTES_AT_10M},
        }
    return out


def print_targets(targets: dict[str, dict[str, Any]]) -> None:
    def verdict(ok: bool) -> str:
        return "HOLDS" if ok else "MISSED"

    for system, t in targets.items():
        lat = t["latency_1M"]
        label = f"target  {system}: < {TARGET_MS_AT_1M:g} ms per sample+update of 1024 at 1M:"
        if lat is None:
            print(f"{label} not measured (1M not run)")
        else:
            print(f"{label} {verdict(lat['holds'])} (median {lat['median_ms']:.2f} ms, p90 {lat['p90_ms']:.2f} ms; "
                  f"CPU median {lat['cpu_median_ms']:.2f} ms)")
        mem = t["memory_10M"]
        if mem is None:
            print(f"target  {system}: 10M problems < 2 GB: not measured (10M not run)")
        else:
            print(f"target  {system}: 10M problems < 2 GB, peak RSS incl. construction: {verdict(mem['holds_peak'])} "
                  f"({mem['peak_bytes'] / 1e9:.2f} GB); held in steady state: {verdict(mem['holds_held'])} "
                  f"({mem['held_bytes'] / 1e9:.2f} GB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",") if x.strip()],
                    help="comma-separated problem counts (10000, 1e6, 10M); default 10k,100k,1M,10M")
    ap.add_argument("--quick", action="store_true", help="only 10k and 100k (CI smoke test)")
    ap.add_argument("--samplers", default="prioritized",
                    help=f"comma-separated subset of {','.join(SAMPLER_NAMES)}, or 'all'")
    ap.add_argument("--no-baseline", action="store_true", help="skip the sort-based baseline")
    ap.add_argument("--fresh", action="store_true", help="time a fresh buffer (all unseen), not an aged one")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--group", type=int, default=8, help="rewards per problem (group size)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds of timed steps per (size, sampler); caps the slow baseline's reps (min 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write all figures as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    sizes = list(QUICK_SIZES) if args.quick else (args.sizes or list(DEFAULT_SIZES))
    samplers = list(SAMPLER_NAMES) if args.samplers == "all" else [s.strip() for s in args.samplers.split(",")]
    unknown = [s for s in samplers if s not in SAMPLER_NAMES]
    if unknown:
        ap.error(f"unknown sampler(s) {unknown}; choose from {list(SAMPLER_NAMES)}")
    # The baseline reproduces the prioritized order only, so it runs only beside that sampler.
    with_baseline = not args.no_baseline and "prioritized" in samplers
    systems = samplers + ([BASELINE] if with_baseline else [])

    started = time.perf_counter()
    agrees = cross_check(seed=args.seed) if with_baseline else None
    if agrees is False:
        print("WARNING: the sort baseline does not serve the same batches as the prioritized sampler")
    print(f"PriorityBuffer benchmark: batch {args.batch}, group {args.group}, "
          f"{'fresh' if args.fresh else 'aged'} buffer, {args.reps} reps after {args.warmup} warm-up "
          f"(baseline capped to ~{args.budget:g} s per size), Python {platform.python_version()}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs", flush=True)

    results = []
    for n in sizes:
        for system in systems:
            spec = dict(size=n, system=system, seed=args.seed, batch=args.batch, group=args.group,
                        reps=args.reps, warmup=args.warmup if system != BASELINE else 1,
                        budget_s=args.budget, fresh=args.fresh)
            t0 = time.perf_counter()
            r = spawn_worker(spec)
            results.append(r)
            print(f"  {fmt_size(n):>4} {system:<14} median {r['median_ms']:9.2f} ms (cpu {r['cpu_median_ms']:8.2f})  "
                  f"peak {r['peak_bytes'] / MB:7.0f} MB  ({time.perf_counter() - t0:.1f} s)", flush=True)
    total_s = time.perf_counter() - started

    print()
    print_table(results, sizes, samplers)
    print("(MB = 10^6 bytes; peak and held are RSS above the process's RSS before the build, so at small"
          " sizes bytes/problem is mostly fixed allocator overhead)")
    print()
    targets = check_targets(results)
    print_targets(targets)
    if agrees is not None:
        print(f"baseline serves the same batches as rlpp prioritized (retests off): {'yes' if agrees else 'NO'}")
    busy = [r for r in results if r["median_ms"] > 1.25 * r["cpu_median_ms"]]
    if busy:
        # Wall time well above CPU time means the process waited for a core: other load on the machine.
        print(f"NOTE: wall time exceeds CPU time by >25% for {len(busy)} of {len(results)} runs; the machine was "
              "busy, so wall-clock figures are inflated - rerun on an idle machine or read the cpu column")
    print(f"total time {total_s:.1f} s")

    if args.json:
        payload = {
            "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "json")} | {"sizes": sizes},
            "machine": {"python": platform.python_version(), "numpy": np.__version__,
                        "cpus": os.cpu_count(), "platform": platform.platform()},
            "results": results, "targets": targets, "baseline_agrees": agrees, "total_s": total_s,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
