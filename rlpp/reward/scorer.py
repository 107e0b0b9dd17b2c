"""Score a batch of completions; a failing or hung reward call scores 0 and is counted, never raised.

Time limits. The scorer runs inside Ray actor threads, where ``signal.alarm`` is unavailable and a
thread cannot be killed. So a pooled reward call runs on a daemon worker thread and the caller waits
with a deadline of ``reward.timeout_s`` per call, counted from when a worker takes the call (waiting
for a free worker does not use it up). A call past its deadline scores 0; its worker is abandoned: it
keeps running until the call returns (a CPU-bound one also keeps taking its share of the GIL), then
exits, and a fresh worker takes its place, as long as worker threads, healthy and abandoned, number
fewer than ``workers + max_stuck``. Past that, calls that find no worker are not run but scored 0 as
``reward/skipped`` (until abandoned calls return), so a reward that hangs forever cannot grow threads
without bound. Workers are daemon threads, so a hung call
never blocks interpreter exit.

Inline rewards. Built-ins registered ``inline=True`` (``arithmetic``, ``exact_match``: a regex and an
int parse, linear in the text) run in the calling thread: ~1 us a call against ~50 us for a hand-off
to a worker, which matters for the synthetic task's hundreds of completions a step. Exceptions and
bad values are still caught and counted, but ``reward.timeout_s`` does not apply to them.
"""

from __future__ import annotations

import logging
import math
import numbers
import queue
import threading
import time
from collections import deque
from typing import NamedTuple

from rlpp.config.schema import RewardConfig
from rlpp.reward.registry import RewardFn, is_inline, resolve_reward

logger = logging.getLogger(__name__)

OK, ERROR, TIMEOUT, SKIPPED = "ok", "error", "timeout", "skipped"


class _Outcome(NamedTuple):
    kind: str
    value: float = 0.0
    error: BaseException | None = None


class RewardScorer:
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
