"""Score a batch of completions; a reward call that fails, hangs, runs out of memory or crashes scores 0
and is counted, never raised, and leaves nothing behind.

Worker processes. Reward calls run in a pool of ``reward.num_workers`` worker processes, started on the
first batch that needs them and reused. Each is a fresh interpreter (``subprocess`` with
``sys.executable``: no fork, so safe inside Ray actors full of threads) in its own session and process
group. It gets the parent's ``sys.path``, caps its address space at ``reward.memory_limit_mb``
(``RLIMIT_AS``, soft and hard), then resolves the reward by name (``resolve_reward(reward.name)``:
functions are never pickled). Not ``multiprocessing``'s spawn or forkserver: they re-run the parent's
``__main__`` in the child (in a Ray actor that is Ray's worker script, which imports all of Ray:
seconds, and address space counted against the limit). The parent sends chunks of calls (several a
message, to amortise the hand-off) and reads one result per call back, so it always knows which call a
worker is on and since when: its deadline, ``reward.timeout_s``, is counted from when the worker took
the call (from dispatch for a chunk's first call, else from when the previous call's result arrived:
never early, only ever late by the parent's own reaction time). The default of two workers: the
parent (the rollout actor, one CPU) idles while they run, a call hung until its deadline does not stall
the rest of the batch, and a small machine's two cores are both used.

What happens to a call, and its metric (every call is in exactly one):

* returns a finite real number: that is its score;
* raises, or returns something else (NaN, inf, a string, None): 0, ``reward/errors``; the worker stays;
* runs past ``reward.timeout_s``: 0, ``reward/timeouts``; the worker's process group is SIGKILLed;
* raises ``MemoryError`` (it asked for more than ``reward.memory_limit_mb``), or its worker is killed
  by SIGKILL that the scorer did not send (the kernel's OOM killer): 0, ``reward/out_of_memory``; the
  worker is retired (its heap may be fragmented or near the limit);
* its worker dies any other way (a segfault, ``os._exit``, an abort): 0, ``reward/crashes``.

A killed or dead worker's unstarted calls go back to the queue for the other workers, and a
replacement starts at once; a worker found dead when a chunk is about to go to it (its process state,
not only its pipe: a killed worker's pipes can stay open a moment after it is dead) takes none (its start-up does not count against any deadline). A worker also exits by
itself when its parent dies, even one killed with SIGKILL (it watches its command pipe and its parent
pid). ``close`` SIGKILLs every worker's process group and reaps it; a ``weakref.finalize`` does the same
when the scorer is garbage collected or the interpreter exits, so no worker outlives its scorer. The
parent starts no threads. A worker that cannot start (its reward fails to import in a fresh
interpreter, the memory limit is too small to import it, no sign of life in ``_START_TIMEOUT_S``)
raises ``RuntimeError`` from ``score``, with its error: that is a set-up error, not a bad completion.

Inline rewards. Built-ins registered ``inline=True`` (``arithmetic``, ``exact_match``) still run in the
calling thread, with no worker and no time or memory limit: each is a regex, an int parse (at most
4300 digits, Python's limit) or a one-pass brace scan, linear in the completion, and needs memory
proportional to it, so it can neither hang nor blow up. That is what keeps the tiny task's scoring at
~1 us a call; a round trip to a worker process costs tens of us a call. ``math_verify`` (sympy: a
parse or a simplification can take unbounded time and memory) and every ``module:function`` reward go
to the workers. Exceptions and bad values from inline rewards are still caught and counted.
``reward.pooled=true`` (or ``RewardScorer(cfg, inline=False)``) sends an inline reward to the workers too.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import NamedTuple

from rlpp.config.schema import RewardConfig
from rlpp.reward.registry import RewardFn, is_inline, resolve_reward

logger = logging.getLogger(__name__)

OK, ERROR, TIMEOUT, OUT_OF_MEMORY, CRASH = "ok", "error", "timeout", "out_of_memory", "crash"
METRICS = {ERROR: "reward/errors", TIMEOUT: "reward/timeouts", OUT_OF_MEMORY: "reward/out_of_memory",
           CRASH: "reward/crashes"}
"""The metric counting each kind of failed call (``reward/mean`` is the mean score, failures as 0)."""

_START_TIMEOUT_S = 120.0  # from process start to "ready" (importing sympy on a loaded machine takes seconds)
_MAX_CHUNK = 64  # calls per message to a worker
_CHUNKS_PER_WORKER = 4  # a batch is cut into ~this many chunks per worker, for load balance
_MAX_TEXT = 4000  # characters of an error's repr or traceback kept


class _Outcome(NamedTuple):
    kind: str
    value: float = 0.0
    detail: str | None = None  # what went wrong, one line
    trace: str | None = None  # its traceback, if it raised


class RewardScorer:
    """Scores completions against reference answers with the reward named by ``cfg.name``.

    ``score`` returns one float per completion and metrics: ``reward/mean`` (failed calls count as 0),
    and the count of failed calls of each kind, ``reward/errors``, ``reward/timeouts``,
    ``reward/out_of_memory`` and ``reward/crashes`` (see the module docstring). Call ``close`` when
    done (it is also done when the scorer is garbage collected, or at exit).
    """

    def __init__(self, cfg: RewardConfig, *, inline: bool | None = None):
        if cfg.num_workers < 1:
            raise ValueError(f"reward.num_workers must be >= 1, got {cfg.num_workers}")
        self.cfg = cfg
        self.fn = resolve_reward(cfg.name)  # here too, so a bad name or a missing dependency fails now
        self.inline = (is_inline(self.fn) and not cfg.pooled) if inline is None else inline
        self._pool: _WorkerPool | None = None  # started on first pooled batch; inline rewards never need it
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()  # one pooled batch at a time (the pool's bookkeeping is unshared)
        self._traceback_logged = False

    def score(self, completions: list[str], answers: list[str]) -> tuple[list[float], dict[str, float]]:
        """Score ``completions[i]`` against ``answers[i]``; see the class docstring for the metrics."""
        if len(completions) != len(answers):
            raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
        if self.inline:
            scores, failed = _score_inline(self.fn, completions, answers)
        elif not completions:
            scores, failed = [], []
        else:
            with self._lock:
                if self._pool is None:
                    self._pool = _WorkerPool(self.cfg)
                    self._finalizer = weakref.finalize(self, self._pool.close)
                outcomes = self._pool.run(list(completions), list(answers), self.cfg.timeout_s)
            scores, failed = [o.value for o in outcomes], [o for o in outcomes if o.kind != OK]
        return scores, self._metrics(scores, failed)

    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes (none before the first pooled batch)."""
        return [] if self._pool is None else [w.proc.pid for w in self._pool.workers]

    def close(self) -> None:
        """Kill and reap every worker process (a later pooled batch starts new ones)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()  # runs _WorkerPool.close once, and detaches it from the scorer
            self._pool = self._finalizer = None

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metrics(self, scores: list[float], failed: list[_Outcome]) -> dict[str, float]:
        counts = dict.fromkeys(METRICS, 0)
        first = None
        for o in failed:
            counts[o.kind] += 1
            if first is None or (first.detail is None and o.detail is not None):
                first = o
        if first is not None:
            parts = [f"{n} {kind}" for kind, n in counts.items() if n]
            detail = f"; first error: {first.detail}" if first.detail is not None else ""
            trace = first.trace is not None and not self._traceback_logged
            self._traceback_logged |= trace
            logger.warning("reward %r scored 0 for %s of %d calls (timeout_s=%g, memory_limit_mb=%d)%s%s",
                           self.cfg.name, ", ".join(parts), len(scores), self.cfg.timeout_s,
                           self.cfg.memory_limit_mb, detail, f"\n{first.trace}" if trace else "")
        return {"reward/mean": sum(scores) / len(scores) if scores else 0.0,
                **{METRICS[kind]: float(n) for kind, n in counts.items()}}


def _score_inline(fn: RewardFn, completions: list[str], answers: list[str]) -> tuple[list[float], list[_Outcome]]:
    """Scores, and the failed calls' outcomes, of calls run right here (the hot loop of the tiny task)."""
    scores: list[float] = []
    failed: list[_Outcome] = []
    for completion, answer in zip(completions, answers):
        try:
            value = fn(completion, answer)
        except Exception as exc:  # the policy: a failing reward scores 0 and is counted
            scores.append(0.0)
            failed.append(_failed(OUT_OF_MEMORY if isinstance(exc, MemoryError) else ERROR, exc))
            continue
        if type(value) is float and math.isfinite(value):
            scores.append(value)
            continue
        outcome = _checked(value)
        scores.append(outcome.value)
        if outcome.kind != OK:
            failed.append(outcome)
    return scores, failed


def _call(fn: RewardFn, completion: str, answer: str) -> _Outcome:
    """One call in a worker process, where nothing it raises may end the worker."""
    try:
        return _checked(fn(completion, answer))
    except MemoryError as exc:
        return _failed(OUT_OF_MEMORY, exc)
    except BaseException as exc:  # noqa: BLE001
        return _failed(ERROR, exc)


def _failed(kind: str, exc: BaseException) -> _Outcome:
    try:
        trace = "".join(traceback.format_exception(exc))[-_MAX_TEXT:]
    except MemoryError:
        trace = None
    return _Outcome(kind, 0.0, repr(exc)[:_MAX_TEXT], trace)


def _checked(value: object) -> _Outcome:
    """A real, finite ``value`` as a score; anything else as an error."""
    if isinstance(value, numbers.Real):
        score = float(value)
        if math.isfinite(score):
            return _Outcome(OK, score)
        return _Outcome(ERROR, detail=repr(ValueError(f"reward returned a non-finite value {value!r}")))
    return _Outcome(ERROR, detail=repr(TypeError(f"reward returned a {type(value).__name__}, not a real number")))


# --- the worker process --------------------------------------------------------------------------

# Run with ``python -c``: reads its set-up (sys.path first) before importing anything of rlpp.
_BOOTSTRAP = """\
import sys
from multiprocessing.connection import Connection
inbox = Connection(int(sys.argv[1]), writable=False)
init = inbox.recv()
sys.path[:] = init["sys_path"]
from rlpp.reward.scorer import _worker_main
_worker_main(inbox, Connection(int(sys.argv[2]), readable=False), init)
"""


def _worker_main(inbox: Connection, outbox: Connection, init: dict) -> None:
    """Set the memory limit, resolve the reward, then run chunks of calls until told to stop; one message
    per call back: the score (a float) or an ``_Outcome``. Exits after a ``MemoryError``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_exit_with_parent, args=(inbox.fileno(), os.getppid()), daemon=True).start()
    try:
        limit = init["memory_limit_bytes"]
        if limit:
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        fn = resolve_reward(init["name"])
    except BaseException as exc:  # noqa: BLE001  (sent to the parent, which raises it)
        outbox.send(("failed", "".join(traceback.format_exception(exc))))
        return
    outbox.send(("ready", None))
    while True:
        try:
            job = inbox.recv()
        except EOFError:
            return
        if job is None:
            return
        for completion, answer in zip(*job):
            outcome = _call(fn, completion, answer)
            outbox.send(outcome.value if outcome.kind == OK else outcome)
            if outcome.kind == OUT_OF_MEMORY:
                os._exit(0)


def _exit_with_parent(fd: int, parent: int) -> None:
    """Exit at once when the parent closes the command pipe or dies (even by SIGKILL), though the main
    thread may be stuck in a reward call."""
    poller = select.poll()
    poller.register(fd, 0)  # only POLLHUP / POLLERR wake it: the write end is gone
    while not poller.poll(1000) and os.getppid() == parent:
        pass
    os._exit(0)


# --- the parent's side --------------------------------------------------------------------------


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # one call at a time per worker; and thread pools eat address space
    return env


class _Worker:
    """One worker process: its pipes and the calls it was given but has not answered yet."""

    def __init__(self, cfg: RewardConfig):
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(cmd_r), str(res_w)], pass_fds=(cmd_r, res_w),
                stdin=subprocess.DEVNULL, start_new_session=True, env=_worker_env())
        except BaseException:
            os.close(cmd_w)
            os.close(res_r)
            raise
        finally:
            os.close(cmd_r)
            os.close(res_w)
        self.inbox = Connection(cmd_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self.started = time.monotonic()
        self.ready = False
        self.calls: deque[int] = deque()  # calls[0] is running, since call_start
        self.call_start = 0.0
        try:
            self.inbox.send({"sys_path": list(sys.path), "name": cfg.name,
                             "memory_limit_bytes": cfg.memory_limit_mb * 2**20})
        except OSError:
            pass  # it died already: the parent sees its result pipe close, and reports it

    def exit_status(self, wait_s: float) -> int | None:
        """The worker's exit status once it has exited by itself (``Popen.returncode`` style), waiting up
        to ``wait_s``; None if it is still running. Does not reap it (see ``kill``)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            except ChildProcessError:
                return None
            if info is not None and info.si_pid:
                return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)

    def exited(self) -> bool:
        """Whether the worker's main thread has exited (it is a zombie, or gone) -- true as soon as it
        dies, while a write to its command pipe can still succeed: its other thread may hold the pipe's
        read end open a while longer as it exits. False where there is no ``/proc`` (the pipe then
        tells, a moment later)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split(None, 1)[0]
        except (OSError, IndexError):
            return False
        return state in (b"Z", b"X")

    def kill(self) -> None:
        """SIGKILL the worker's process group (anything its reward started too), reap it, close the pipes.
        The group goes before the reaping, so its id cannot have been reused."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        self.inbox.close()
        self.results.close()


class _WorkerPool:
    """``cfg.num_workers`` worker processes, replaced as they are killed or die (see module doc)."""

    def __init__(self, cfg: RewardConfig):
        self.cfg = cfg
        self.workers: list[_Worker] = []
        self._owner = os.getpid()  # a forked copy of the parent must not kill the parent's workers

    def close(self) -> None:
        if os.getpid() != self._owner:
            return
        while self.workers:
            self.workers.pop().kill()

    def run(self, completions: list[str], answers: list[str], timeout: float) -> list[_Outcome]:
        n = len(completions)
        outcomes: list[_Outcome | None] = [None] * n
        size = max(1, min(_MAX_CHUNK, math.ceil(n / (_CHUNKS_PER_WORKER * self.cfg.num_workers))))
        todo = deque(list(range(i, min(i + size, n))) for i in range(0, n, size))
        try:
            while todo or any(w.calls for w in self.workers):
                while len(self.workers) < self.cfg.num_workers:
                    self.workers.append(_Worker(self.cfg))
                for w in list(self.workers):
                    if todo and w.ready and not w.calls:
                        self._dispatch(w, todo, completions, answers)
                deadlines = [w.call_start + timeout if w.calls else w.started + _START_TIMEOUT_S
                             for w in self.workers if w.calls or not w.ready]
                if not deadlines:
                    continue  # a worker was found dead on dispatch: start its replacement
                by_conn = {w.results: w for w in self.workers}
                for conn in wait(list(by_conn), timeout=max(0.0, min(deadlines) - time.monotonic())):
                    self._receive(by_conn[conn], outcomes, todo)
                now = time.monotonic()
                for w in list(self.workers):
                    if w.calls and now >= w.call_start + timeout:
                        outcomes[w.calls.popleft()] = _Outcome(TIMEOUT)
                        self._retire(w, todo)
                    elif not w.ready and now >= w.started + _START_TIMEOUT_S:
                        raise self._start_error(f"no sign of life within {_START_TIMEOUT_S:g} s")
        except BaseException:
            self.close()  # busy workers would answer this batch's calls into the next one
            raise
        while len(self.workers) < self.cfg.num_workers:  # replacements start up while the caller works
            self.workers.append(_Worker(self.cfg))
        return outcomes  # type: ignore[return-value]  # every slot was filled above

    def _dispatch(self, w: _Worker, todo: deque, completions: list[str], answers: list[str]) -> None:
        chunk = todo.popleft()
        try:
            if w.exited():
                raise BrokenPipeError
            w.inbox.send(([completions[i] for i in chunk], [answers[i] for i in chunk]))
        except OSError:  # it died while idle (nothing of this batch was lost)
            todo.appendleft(chunk)
            logger.warning("reward worker pid %d died while idle (%s); replacing it", w.proc.pid,
                           _describe(w.exit_status(1.0)))
            self._retire(w, todo)
            return
        w.calls.extend(chunk)
        w.call_start = time.monotonic()

    def _receive(self, w: _Worker, outcomes: list, todo: deque) -> None:
        """Read every message ``w`` has sent; on EOF, handle its death."""
        try:
            while w.results.poll():
                msg = w.results.recv()
                if not w.ready:
                    if msg[0] != "ready":
                        raise self._start_error(f"\n{msg[1]}")
                    w.ready = True
                    continue
                outcomes[w.calls.popleft()] = _Outcome(OK, msg) if type(msg) is float else msg
                w.call_start = time.monotonic()
                if type(msg) is not float and msg.kind == OUT_OF_MEMORY:  # the worker exits after one
                    self._retire(w, todo)
                    return
        except (EOFError, OSError):
            status = w.exit_status(1.0)
            if not w.ready:
                raise self._start_error(f"it {_describe(status)} (its error, if any, is on stderr)") from None
            if w.calls:
                kind = OUT_OF_MEMORY if status == -signal.SIGKILL else CRASH
                outcomes[w.calls.popleft()] = _Outcome(kind, detail=f"reward worker pid {w.proc.pid} "
                                                       f"{_describe(status)} during the call")
            else:
                logger.warning("reward worker pid %d %s while idle; replacing it", w.proc.pid, _describe(status))
            self._retire(w, todo)

    def _start_error(self, why: str) -> RuntimeError:
        return RuntimeError(f"a reward worker for reward.name={self.cfg.name!r} could not start "
                            f"(reward.memory_limit_mb={self.cfg.memory_limit_mb}): {why}")

    def _retire(self, w: _Worker, todo: deque) -> None:
        """Kill ``w``; its calls not yet answered go back to the front of the queue."""
        if w.calls:
            todo.appendleft(list(w.calls))
            w.calls.clear()
        w.kill()
        self.workers.remove(w)


def _describe(status: int | None) -> str:
    if status is None:
        return "closed its pipe"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"
