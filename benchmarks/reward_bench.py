"""Benchmark of reward scoring: ``rlpp.reward.RewardScorer`` (worker processes) against the thread-based
scorer it replaced (``ThreadScorer`` below: ``rlpp/reward/scorer.py`` of commit 8816af8, copied as it
was), on the tiny task's workload.

Workload: one step of the tiny default, ``trainer.batch_size`` 16 problems x ``rollout.group_size`` 8
completions = 128 calls, from the synthetic arithmetic task (``rlpp.data.synthetic``). Completions are
drawn like a model at ~30% accuracy: the answer (~30%), a wrong integer, the answer followed by junk
(a model that did not stop), or junk. Rewards, each with its default settings:

* ``arithmetic`` - the tiny task's reward. Both scorers run it inline (in the calling thread): the
  figure that must not drop by more than 10%.
* ``math_verify`` - sympy-based: threads (4, sharing the GIL) against worker processes
  (``reward.num_workers``, default 2).
* ``arithmetic`` sent to the worker processes (``RewardScorer(cfg, inline=False)``), for the price of
  isolating a 1 us reward; not what rlpp does.

Both scorers are built and warmed up (workers started, imports done) before timing. Then ``--rounds``
rounds each time ``--steps`` consecutive steps of each scorer, the order alternating between rounds;
the figure is the median over rounds of calls per second. The ratio is new / old throughput (> 1:
the new scorer is faster).

Run from the repository root::

    python benchmarks/reward_bench.py                  # all three rows
    python benchmarks/reward_bench.py --rounds 5 --rewards arithmetic --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import queue
import random
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlpp.config.schema import RewardConfig  # noqa: E402
from rlpp.data.synthetic import make_arithmetic  # noqa: E402
from rlpp.reward import RewardScorer  # noqa: E402
from rlpp.reward.registry import RewardFn, is_inline, resolve_reward  # noqa: E402

PROBLEMS, GROUP = 16, 8  # configs/tiny.yaml: trainer.batch_size, rollout.group_size


# --- the baseline: the thread-based scorer of commit 8816af8, its code as it was ---------------------

logger = logging.getLogger("rlpp.reward.scorer.old")
OK, ERROR, TIMEOUT, SKIPPED = "ok", "error", "timeout", "skipped"


class _Outcome(NamedTuple):
    kind: str
    value: float = 0.0
    error: BaseException | None = None


class ThreadScorer:
    """Scores completions against reference answers with the reward named by ``cfg.name``.

    ``score`` returns one float per completion and metrics: ``reward/mean`` (failed calls count as
    0), ``reward/errors`` (raised, or returned something other than a finite real number),
    ``reward/timeouts``, ``reward/skipped`` (not run: every worker is stuck in an earlier call) and
    ``reward/stuck_threads`` (abandoned calls still running). Call ``close`` when done.
    """

    def __init__(self, cfg: RewardConfig, *, workers: int = 4, max_stuck: int = 32):
        if workers < 1 or max_stuck < 0:
            raise ValueError(f"workers must be >= 1 and max_stuck >= 0, got {workers}, {max_stuck}")
        self.cfg = cfg
        self.fn = resolve_reward(cfg.name)
        self.inline = is_inline(self.fn)
        self._workers = workers
        self._max_stuck = max_stuck
        self._pool: _WorkerPool | None = None  # started on first pooled batch; inline rewards never need it
        self._lock = threading.Lock()  # one pooled batch at a time (the pool's bookkeeping is unshared)
        self._traceback_logged = False

    def score(self, completions: list[str], answers: list[str]) -> tuple[list[float], dict[str, float]]:
        """Score ``completions[i]`` against ``answers[i]``; see the class docstring for the metrics."""
        if len(completions) != len(answers):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        if self.inline:
            outcomes = [_call(self.fn, c, a) for c, a in zip(completions, answers)]
            stuck = 0
        else:
            with self._lock:
                if self._pool is None:
                    self._pool = _WorkerPool(self._workers, self._max_stuck)
                outcomes = self._pool.run(self.fn, completions, answers, self.cfg.timeout_s)
                stuck = self._pool.stuck()
        return [o.value for o in outcomes], self._metrics(outcomes, stuck)

    def close(self) -> None:
        """Stop the idle workers (abandoned ones exit when their call returns)."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metrics(self, outcomes: list[_Outcome], stuck: int) -> dict[str, float]:
        counts = {ERROR: 0, TIMEOUT: 0, SKIPPED: 0}
        first_error = None
        for o in outcomes:
            if o.kind != OK:
                counts[o.kind] += 1
                if first_error is None:
                    first_error = o.error
        if any(counts.values()):
            parts = [f"{n} {kind}" for kind, n in counts.items() if n]
            detail = f"; first error: {first_error!r}" if first_error is not None else ""
            trace = first_error is not None and not self._traceback_logged
            self._traceback_logged |= trace
            logger.warning("reward %r scored 0 for %s of %d calls (timeout_s=%g)%s", self.cfg.name,
                           ", ".join(parts), len(outcomes), self.cfg.timeout_s, detail,
                           exc_info=first_error if trace else None)
        total = sum(o.value for o in outcomes)
        return {
            "reward/mean": total / len(outcomes) if outcomes else 0.0,
            "reward/errors": float(counts[ERROR]),
            "reward/timeouts": float(counts[TIMEOUT]),
            "reward/skipped": float(counts[SKIPPED]),
            "reward/stuck_threads": float(stuck),
        }


def _call(fn: RewardFn, completion: str, answer: str) -> _Outcome:
    try:
        return _checked(fn(completion, answer))
    except Exception as exc:  # the policy: a failing reward scores 0 and is counted
        return _Outcome(ERROR, error=exc)


def _checked(value: object) -> _Outcome:
    """A real, finite ``value`` as a score; anything else as an error."""
    if isinstance(value, numbers.Real):
        score = float(value)
        if math.isfinite(score):
            return _Outcome(OK, score)
        return _Outcome(ERROR, error=ValueError(f"reward returned a non-finite value {value!r}"))
    return _Outcome(ERROR, error=TypeError(f"reward returned a {type(value).__name__}, not a real number"))


class _Worker:
    """A daemon thread running reward calls from its inbox until it reads ``None``."""

    def __init__(self, n: int):
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=f"rlpp-reward-{n}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (task := self.inbox.get()) is not None:
            outbox, i, fn, completion, answer = task
            outbox.put((self, i, _call(fn, completion, answer)))


class _WorkerPool:
    """At most ``size`` healthy workers, and ``size + max_stuck`` threads in all (see module doc)."""

    def __init__(self, size: int, max_stuck: int):
        self.size = size
        self.max_stuck = max_stuck
        self._idle: list[_Worker] = []
        self._abandoned: list[_Worker] = []
        self._made = 0

    def stuck(self) -> int:
        self._abandoned = [w for w in self._abandoned if w.thread.is_alive()]
        return len(self._abandoned)

    def close(self) -> None:
        for w in self._idle:
            w.inbox.put(None)
        self._idle.clear()

    def run(self, fn: RewardFn, completions: list[str], answers: list[str], timeout: float) -> list[_Outcome]:
        outcomes: list[_Outcome | None] = [None] * len(completions)
        outbox: queue.SimpleQueue = queue.SimpleQueue()  # per batch: late answers of abandoned calls go nowhere
        todo = deque(range(len(completions)))
        running: dict[_Worker, tuple[int, float]] = {}  # worker -> (call index, deadline)
        while todo or running:
            now = time.monotonic()
            for w, (i, deadline) in list(running.items()):
                if now >= deadline:
                    del running[w]
                    w.inbox.put(None)  # exit once the hung call returns
                    self._abandoned.append(w)
                    outcomes[i] = _Outcome(TIMEOUT)
            while todo and (w := self._take(len(running))) is not None:
                i = todo.popleft()
                running[w] = (i, time.monotonic() + timeout)
                w.inbox.put((outbox, i, fn, completions[i], answers[i]))
            if not running:  # every worker is stuck in an earlier call
                for i in todo:
                    outcomes[i] = _Outcome(SKIPPED)
                break
            wait = min(deadline for _, deadline in running.values()) - time.monotonic()
            try:
                w, i, outcome = outbox.get(timeout=max(wait, 0.0))
            except queue.Empty:
                continue
            if running.get(w, (None,))[0] == i:
                del running[w]
                self._idle.append(w)
                outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]  # every slot was filled above

    def _take(self, busy: int) -> _Worker | None:
        """An idle worker, or a new one while fewer than ``size`` are healthy and the total, abandoned
        ones included, stays under ``size + max_stuck``."""
        if self._idle:
            return self._idle.pop()
        if busy >= self.size or busy + self.stuck() >= self.size + self.max_stuck:
            return None
        self._made += 1
        return _Worker(self._made)


# --- the workload and the timing ----------------------------------------------------------------------


def workload(steps: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """``steps`` batches of PROBLEMS x GROUP (completion, answer) pairs from the synthetic task."""
    train, _, _ = make_arithmetic(2000, 300, 500, seed=seed)
    rng = random.Random(seed)
    batches = []
    for _ in range(steps):
        ids = rng.sample(range(len(train.answers)), PROBLEMS)
        answers = [train.answers[i] for i in ids for _ in range(GROUP)]
        completions = []
        for a in answers:
            r = rng.random()
            if r < 0.3:
                completions.append(a)
            elif r < 0.7:
                completions.append(str(int(a) + rng.choice([-10, -1, 1, 2, 10])))
            elif r < 0.85:
                completions.append(a + rng.choice(["+1", "=", " 7", "9-"]))
            else:
                completions.append("".join(rng.choice("0123456789+-*= ") for _ in range(rng.randint(0, 8))))
        batches.append((completions, answers))
    return batches


def time_steps(scorer, batches) -> float:
    """Calls per second over ``batches``, scored one after another."""
    start = time.perf_counter()
    for completions, answers in batches:
        scorer.score(completions, answers)
    return sum(len(c) for c, _ in batches) / (time.perf_counter() - start)


def compare(label: str, old, new, batches, rounds: int) -> dict:
    # Same scores first (and warm-up: worker start-up and imports are not timed).
    for completions, answers in batches:
        old_scores, _ = old.score(completions, answers)
        new_scores, new_metrics = new.score(completions, answers)
        assert old_scores == new_scores, f"{label}: the scorers disagree"
        assert not any(v for k, v in new_metrics.items() if k != "reward/mean"), new_metrics
    figures = {"old": [], "new": []}
    for r in range(rounds):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            figures[name].append(time_steps(old if name == "old" else new, batches))
    old_cps, new_cps = statistics.median(figures["old"]), statistics.median(figures["new"])
    row = {"reward": label, "calls_per_step": len(batches[0][0]), "steps_per_round": len(batches), "rounds": rounds,
           "old_calls_per_s": round(old_cps), "new_calls_per_s": round(new_cps), "ratio_new_over_old": round(new_cps / old_cps, 3)}
    print(f"{label:<28} {old_cps:>12,.0f} {new_cps:>12,.0f} {new_cps / old_cps:>8.3f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="alternating timed rounds per scorer")
    parser.add_argument("--rewards", default="arithmetic,math_verify,arithmetic@process",
                        help="comma-separated rows: arithmetic, math_verify, arithmetic@process")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    steps = {"arithmetic": 50, "math_verify": 4, "arithmetic@process": 10}  # ~0.05-0.5 s a round
    print(f"{PROBLEMS} problems x {GROUP} completions a step; median calls/s over {args.rounds} rounds")
    print(f"{'reward':<28} {'old calls/s':>12} {'new calls/s':>12} {'new/old':>8}")
    rows = []
    for row in args.rewards.split(","):
        name, _, mode = row.partition("@")
        cfg = RewardConfig(name=name)
        old, new = ThreadScorer(cfg), RewardScorer(cfg, inline=False if mode == "process" else None)
        try:
            label = f"{name} ({'inline' if new.inline else f'{cfg.num_workers} processes'})"
            rows.append(compare(label, old, new, workload(steps[row]), args.rounds))
        finally:
            old.close()
            new.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
