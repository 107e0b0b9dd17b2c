"""The priority buffer: per-problem statistics, pools, retest scheduling, and a named sampler.

The buffer holds problem ids (ints) and statistics in numpy arrays, never text. Every problem is in
exactly one pool:

- ``heap``: unseen, or last seen with 0 < p̂ < 1; served by the sampler.
- ``solved`` (p̂ = 1) / ``unsolved`` (p̂ = 0) after ``park_after`` such groups in a row: parked;
  samplers that park serve them only through retests (oldest last visit first), the ``prioritized``
  sampler's uniform share, or when nothing else is left.
- ``in_flight``: handed out by ``sample`` and not yet answered by ``update`` or ``release``.

Every public method checks its input completely before changing anything, so a bad call raises a
``ValueError`` and leaves the buffer as it was. No Ray here: the wiring wraps this class in an actor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rlpp.buffer.diagnostics import PredictionLog, summarize
from rlpp.buffer.prior import make_prior
from rlpp.buffer.samplers import Sampler, sampler_class
from rlpp.buffer.view import ProblemStats
from rlpp.buffer.structures import (HEAP, IN_FLIGHT, MAX_PROBLEMS, POOL_NAMES, SOLVED, UNSOLVED, IdSet, LazyHeap, key_id,
                                    visit_key, visit_keys)
from rlpp.config.schema import BufferConfig, validate

STATE_VERSION = 3
READABLE_VERSIONS = (2, 3)
"""Version 2 (before the prior and the diagnostics) still loads: those start afresh."""
PARKED_GROWTH, PARKED_SLACK = 2, 1024
"""The parked queue is rebuilt once stale entries (problems the uniform share took) outnumber live ones."""


@dataclass
class SampleBatch:
    """Problems handed out by ``PriorityBuffer.sample``; they stay in flight until updated or released."""

    ids: np.ndarray  # (k,) int64 problem ids
    weights: np.ndarray  # (k,) float64 importance weights; 1.0 unless the sampler corrects its bias
    retest: np.ndarray  # (k,) bool: drawn from the parked (solved/unsolved) pools
    step: int  # the buffer step this batch belongs to

    def __len__(self) -> int:
        return len(self.ids)


class PriorityBuffer:
    """Prioritized replay over training problems, priority ω = p̂(1 − p̂) of each problem's success rate."""

    def __init__(self, cfg: BufferConfig, num_problems: int, seed: int = 0, group_size: int = 8,
                 clusters: np.ndarray | None = None):
        """``group_size`` is G, the rollouts of a full group (a screened group may be smaller); ``clusters``
        a label per problem (ints), needed by ``buffer.prior.mode=cluster`` and never read otherwise."""
        validate(cfg, "buffer.")
        if not 1 <= num_problems < MAX_PROBLEMS:
            raise ValueError(f"num_problems must be in [1, {MAX_PROBLEMS}), got {num_problems}")
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
        if clusters is not None:
            clusters = np.asarray(clusters)
            if clusters.shape != (num_problems,) or not np.issubdtype(clusters.dtype, np.integer) or \
                    (num_problems and clusters.min() < 0):
                raise ValueError(f"clusters must be {num_problems} ints >= 0, one per problem, got dtype "
                                 f"{clusters.dtype} shape {clusters.shape}")
        self.cfg = cfg
        self.group_size = int(group_size)
        self.clusters = clusters
        cls = sampler_class(cfg)
        self.variant = cls.variant(cfg)
        self.retest_mode = cls.retest_mode(cfg)
        self.num_problems = n = int(num_problems)
        self.rng = np.random.default_rng(seed)
        self.attempts = np.zeros(n, dtype=np.int64)
        self.successes = np.zeros(n, dtype=np.int64)
        # Decayed evidence (stats=decayed): successes and attempts, each visit scaling the past by decay.
        self.w_successes = np.zeros(n if cfg.stats == "decayed" else 0)
        self.w_attempts = np.zeros(n if cfg.stats == "decayed" else 0)
        self.p_hat = np.full(n, np.nan)
        self.priority = np.full(n, cfg.unseen_priority)
        self.visits = np.zeros(n, dtype=np.int32)
        # Consecutive zero-variance groups: +k after k all-pass groups in a row, -k after k all-fail.
        self.streak = np.zeros(n, dtype=np.int32)
        self.last_visit = np.full(n, -1, dtype=np.int64)
        self.sample_step = np.full(n, -1, dtype=np.int64)
        self.pool = np.zeros(n, dtype=np.int8)
        self.origin = np.zeros(n, dtype=np.int8)  # pool a problem left when it went in flight
        self.counts = np.array([n, 0, 0, 0], dtype=np.int64)
        # Every problem not in flight, for the prioritized sampler's uniform share (else unused).
        self.mix = self.variant.uniform_mix
        # Visit keys over solved ∪ unsolved (parking samplers), oldest first; stale entries only with a
        # uniform share (it takes parked problems behind the queue's back).
        self.parked = LazyHeap(self._parked_keys, self._parked_live if self.mix else None, self._parked_ids,
                               lambda: int(self.counts[SOLVED] + self.counts[UNSOLVED]), PARKED_GROWTH, PARKED_SLACK)
        self.available = IdSet(n if self.mix else 0)
        if self.mix:
            self.available.insert(np.arange(n, dtype=np.int64))
        self.step = 0
        self.last_round = 0
        self.counters = dict(forgotten=0, unlocked=0, retested=0, released=0, seen=0, updates=0, skipped=0,
                             solved_revisits=0, solved_then_failed=0)
        self.prior = make_prior(cfg.prior, clusters, *cls.flat_prior(cfg))
        self.prior_scores = cfg.prior.mode == "cluster" and cls.serves_by_priority and self.variant.priority == "posterior"
        self.prior_frozen = self.prior.frozen()  # what priorities are computed with (re-frozen at each refresh)
        self.last_refresh = 0
        if self._scores_by_prior():
            self.priority[:] = self._unseen_priority(np.arange(n))
        # Diagnostics: the longest gap between two visits of each problem, and every draw's prediction.
        self.max_gap = np.zeros(n, dtype=np.int64)
        self.predictions = PredictionLog(n)
        self.view = ProblemStats(self)  # all a sampler sees of this buffer
        self.sampler: Sampler = cls(self.view)
        self.sampler.insert(np.arange(n, dtype=np.int64))

    # ---------------------------------------------------------------- serving
    def sample(self, batch_size: int, step: int | None = None) -> SampleBatch:
        """Hand out a batch of problems and mark them in flight.

        ``step`` defaults to the next step; pass the current step again to draw more problems for the
        same step (a top-up, as DAPO's dynamic sampling does), which never starts a retest round.
        The batch is shorter than requested only when every other problem is in flight.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))):
            raise ValueError(f"step must be an int, got {step!r}")
        step = self.step + 1 if step is None else int(step)
        if step < self.step:
            raise ValueError(f"step must not go back: buffer is at step {self.step}, got {step}")
        n = self.sampler.draw_size(int(batch_size))
        n_retest, new_round = self._retest_quota(n, step)

        self.step = self.view.step = step
        if new_round:
            self.last_round = step
        if self._scores_by_prior() and step - self.last_refresh >= self.cfg.prior.refresh_steps:
            self._refresh_priorities(step)
        # Each part goes in flight as soon as it is drawn, so no later part can serve it again.
        retest = self._take(self._pop_parked(n_retest), step)
        mixed = self._take(self._pop_uniform(n - len(retest)), step, drawn_from_available=True)
        ids, weights = self.sampler.pop(n - len(retest) - len(mixed))
        self.counters["skipped"] += self.sampler.take_skipped()
        self._take(ids, step)
        # A sampler that parks may run dry; parked problems then fill the batch, oldest first.
        fill = self._pop_parked(n - len(retest) - len(mixed) - len(ids)) if self.sampler.parks else retest[:0]
        self._take(fill, step)
        all_ids = np.concatenate([retest, mixed, ids, fill])
        is_retest = np.concatenate([np.ones(len(retest), dtype=bool), self.origin[mixed] != HEAP,
                                    np.zeros(len(ids), dtype=bool), np.ones(len(fill), dtype=bool)])
        self.counters["retested"] += int(is_retest.sum())
        self.predictions.drawn(all_ids, self.sampler.predict(all_ids))
        w = np.concatenate([np.ones(len(retest) + len(mixed)), weights, np.ones(len(fill))])
        return SampleBatch(ids=all_ids, weights=w, retest=is_retest, step=step)

    def _take(self, ids: np.ndarray, step: int, drawn_from_available: bool = False) -> np.ndarray:
        """Put freshly drawn ``ids`` in flight."""
        if self.mix and not drawn_from_available:
            self.available.remove(ids)
        self.origin[ids] = self.pool[ids]
        self._move(ids, IN_FLIGHT)
        self.sample_step[ids] = step
        return ids

    def _pop_uniform(self, room: int) -> np.ndarray:
        """The uniform share of a batch: uniform_mix of it on average, from every problem not in flight."""
        if not self.mix or room <= 0:
            return np.empty(0, dtype=np.int64)
        want = self.mix * room
        k = min(room, int(want) + int(self.rng.random() < want - int(want)))
        ids = self.available.draw(k, self.rng)
        in_heap = ids[self.pool[ids] == HEAP]
        self.sampler.discard(in_heap)  # entries of parked ones in the parked queue just go stale
        return ids

    def _retest_quota(self, n: int, step: int) -> tuple[int, bool]:
        r, mode = self.cfg.retest, self.retest_mode
        if not self.sampler.parks or mode == "off":
            return 0, False
        if mode == "fraction":
            return math.ceil(r.batch_fraction * n), False
        if mode == "scaled":
            parked = int(self.counts[SOLVED] + self.counts[UNSOLVED])
            return math.ceil(min(r.max_fraction, r.scale * parked / self.num_problems) * n * (1 - 1e-12)), False
        if step > self.step and step - self.last_round >= r.every_steps:
            if r.per_round > n:
                raise ValueError(
                    f"buffer.retest.per_round ({r.per_round}) exceeds the batch of {n} problems drawn at "
                    f"step {step}; lower it or raise the batch size"
                )
            return r.per_round, True
        return 0, False

    def _pop_parked(self, k: int) -> np.ndarray:
        return self.parked.pop(k)

    def _parked_keys(self, ids: np.ndarray) -> list[int]:
        return visit_keys(self.last_visit[ids], ids).tolist()

    def _parked_ids(self) -> np.ndarray:
        return np.flatnonzero((self.pool == SOLVED) | (self.pool == UNSOLVED))

    def _parked_live(self, key: int) -> bool:
        """Whether a parked-queue entry still stands for its problem (the uniform share may have taken
        the problem since, leaving the entry stale)."""
        i = key_id(key)
        return self.pool[i] in (SOLVED, UNSOLVED) and visit_key(int(self.last_visit[i]), i) == key

    # ---------------------------------------------------------------- results
    def update(self, ids, rewards) -> dict[str, int]:
        """Record one group of rewards per in-flight problem and move each to its new pool.

        ``rewards`` has shape (len(ids), group_size). A rollout succeeds when reward >= the configured
        threshold; p̂ = 1 parks a problem in ``solved``, p̂ = 0 in ``unsolved``, otherwise it returns to
        the heap with priority p̂(1 − p̂).
        """
        ids = self._in_flight_ids(ids, "update")
        try:
            r = np.asarray(rewards)
            if r.dtype.kind not in "biufO":  # text, bytes and complex would convert (or warn) silently
                raise TypeError(f"got dtype {r.dtype}")
            r = r.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rewards must be a numeric array of shape ({len(ids)}, group_size): {e}") from None
        if r.ndim != 2 or r.shape[0] != len(ids) or r.shape[1] < 1:
            raise ValueError(f"rewards must have shape ({len(ids)}, group_size >= 1), got {r.shape}")
        bad = ~np.isfinite(r).all(axis=1)
        if bad.any():
            raise ValueError(f"rewards must be finite; non-finite rewards for problem ids {ids[bad][:10].tolist()}")

        s = (r >= self.cfg.success_threshold).sum(axis=1)
        g = r.shape[1]
        self.attempts[ids] += g
        self.successes[ids] += s
        if self.cfg.stats == "decayed":
            d = self.cfg.decay
            self.w_successes[ids] = d * self.w_successes[ids] + s
            self.w_attempts[ids] = d * self.w_attempts[ids] + g
            p = self.w_successes[ids] / self.w_attempts[ids]
        else:
            p = s / g
        self.counters["seen"] += int((self.visits[ids] == 0).sum())
        self.counters["updates"] += len(ids)
        was_solved = self.p_hat[ids] >= 1.0  # NaN (never seen) compares False
        self.counters["solved_revisits"] += int(was_solved.sum())
        self.counters["solved_then_failed"] += int((was_solved & (s < g)).sum())
        seen = self.last_visit[ids] >= 0
        self.max_gap[ids] = np.where(seen, np.maximum(self.max_gap[ids], self.sample_step[ids] - self.last_visit[ids]),
                                     self.max_gap[ids])
        self.predictions.observed(ids, s, g)
        self.prior.observe(ids, s, g, self.step)
        self.p_hat[ids] = p
        streak = self.streak[ids]
        self.streak[ids] = np.where(s == g, np.maximum(streak, 0) + 1, np.where(s == 0, np.minimum(streak, 0) - 1, 0))
        self.priority[ids] = self._priority(ids)
        self.visits[ids] += 1
        self.last_visit[ids] = self.sample_step[ids]
        prev = self.origin[ids]
        forgotten = int(((prev == SOLVED) & (p < 1.0)).sum())
        unlocked = int(((prev == UNSOLVED) & (p > 0.0)).sum())
        self.counters["forgotten"] += forgotten
        self.counters["unlocked"] += unlocked
        self.sampler.observe(ids, s, g)
        pools = self._pools(ids)
        self._make_available(ids, pools)
        return {"forgotten": forgotten, "unlocked": unlocked, "solved": int((pools == SOLVED).sum()),
                "unsolved": int((pools == UNSOLVED).sum())}

    def _priority(self, ids: np.ndarray) -> np.ndarray:
        """ω of visited problems: p̂(1 - p̂), or E[p(1 - p)] under the Beta posterior."""
        if self.variant.priority == "point":
            p = self.p_hat[ids]
            return p * (1.0 - p)
        a, b = self.view.posterior(ids)
        return a * b / ((a + b) * (a + b + 1.0))

    def _scores_by_prior(self) -> bool:
        """Whether priorities come from a cluster prior (a sampler served by priority, with posterior
        priority), so that they move with the clusters' rates and are re-scored every
        ``buffer.prior.refresh_steps``."""
        return self.prior_scores

    def _unseen_priority(self, ids: np.ndarray) -> np.ndarray:
        """Priority of problems never seen: ``unseen_priority``, or E[p(1 − p)] under a cluster prior."""
        if not self._scores_by_prior():
            return np.full(len(ids), self.cfg.unseen_priority)
        a, b = self.prior_frozen(ids, self.last_refresh)
        return a * b / ((a + b) * (a + b + 1.0))

    def _refresh_priorities(self, step: int) -> None:
        """Freeze the clusters' current rates and re-score every problem not in flight with them."""
        self.prior_frozen, self.last_refresh = self.prior.frozen(), step
        self.view.prior_frozen, self.view.last_refresh = self.prior_frozen, step
        ids = np.flatnonzero(self.pool != IN_FLIGHT)
        seen = ids[self.visits[ids] > 0]
        self.priority[seen] = self._priority(seen)
        fresh = ids[self.visits[ids] == 0]
        self.priority[fresh] = self._unseen_priority(fresh)
        self.sampler.refresh()

    def _pools(self, ids: np.ndarray) -> np.ndarray:
        """Where visited problems belong: parked once p̂ is 1 (or 0) after ``park_after`` all-pass (or
        all-fail) groups in a row, else the heap."""
        p, streak, k = self.p_hat[ids], self.streak[ids], self.variant.park_after
        return np.where((p >= 1.0) & (streak >= k), SOLVED,
                        np.where((p <= 0.0) & (streak <= -k), UNSOLVED, HEAP)).astype(np.int8)

    def release(self, ids) -> int:
        """Hand in-flight problems back unchanged (their results never came); returns how many."""
        ids = self._in_flight_ids(ids, "release")
        self.counters["released"] += len(ids)
        self._make_available(ids, self.origin[ids])
        return len(ids)

    def set_oracle_rates(self, ids, rates) -> None:
        """Hand the ``oracle`` sampler the pass rates measured for ``ids`` under the current policy."""
        if not hasattr(self.sampler, "set_rates"):
            raise ValueError(f"buffer.sampler={self.cfg.sampler} takes no measured pass rates (only oracle does)")
        ids = np.asarray(ids, dtype=np.int64)
        rates = np.asarray(rates, dtype=np.float64)
        if ids.shape != rates.shape or ids.ndim != 1:
            raise ValueError(f"set_oracle_rates: ids and rates must be 1-D of one length, got {ids.shape} and {rates.shape}")
        if len(ids) and (ids.min() < 0 or ids.max() >= self.num_problems):
            raise ValueError(f"set_oracle_rates: ids must be in 0..{self.num_problems - 1}")
        if not np.all((rates >= 0) & (rates <= 1)):
            raise ValueError("set_oracle_rates: rates must be in [0, 1]")
        self.sampler.set_rates(ids, rates)

    def oracle_request(self) -> tuple[int, int] | None:
        """(rollouts per problem, steps between measurements) when the sampler selects by measured pass
        rates (``oracle``), else None."""
        if not hasattr(self.sampler, "set_rates"):
            return None
        return self.cfg.oracle.rollouts, self.cfg.oracle.every_steps

    def diagnostics(self) -> dict[str, float]:
        """Prediction quality, coverage, gaps and forgetting of the run so far (``rlpp.buffer.diagnostics``)."""
        return summarize(self.predictions, self.visits, self.max_gap, self.counters)

    def prediction_log(self) -> dict[str, np.ndarray]:
        """Every logged group's predicted and realized pass rate (the report's raw diagnostics)."""
        return self.predictions.arrays()

    def group_filter(self) -> str:
        """The group filter this buffer's sampler names (``rlpp.loop.filters``; ``dapo`` for ``dapo_filter``)."""
        return self.sampler.group_filter

    def in_flight(self) -> np.ndarray:
        """Ids currently in flight (for returning a failed actor's work)."""
        return np.flatnonzero(self.pool == IN_FLIGHT)

    def _in_flight_ids(self, ids, what: str) -> np.ndarray:
        a = np.asarray(ids)
        if a.size == 0:
            return np.empty(0, dtype=np.int64)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{what}: ids must be a 1-D array of ints, got dtype {a.dtype} shape {a.shape}")
        a = a.astype(np.int64)
        unknown = a[(a < 0) | (a >= self.num_problems)]
        if len(unknown):
            raise ValueError(f"{what}: unknown problem ids {unknown[:10].tolist()} (buffer holds 0..{self.num_problems - 1})")
        uniq, counts = np.unique(a, return_counts=True)
        if len(uniq) != len(a):
            raise ValueError(f"{what}: duplicate problem ids {uniq[counts > 1][:10].tolist()}")
        idle = a[self.pool[a] != IN_FLIGHT]
        if len(idle):
            where = [POOL_NAMES[self.pool[i]] for i in idle[:10]]
            raise ValueError(f"{what}: problems not in flight: {dict(zip(idle[:10].tolist(), where))}")
        return a

    def _move(self, ids: np.ndarray, pools) -> None:
        self.counts -= np.bincount(self.pool[ids], minlength=4)
        self.pool[ids] = pools
        self.counts += np.bincount(self.pool[ids], minlength=4)

    def _make_available(self, ids: np.ndarray, pools: np.ndarray) -> None:
        self._move(ids, pools)
        if self.mix:
            self.available.insert(ids)
        if not self.sampler.parks:
            self.sampler.insert(ids)
            return
        self.sampler.insert(ids[pools == HEAP])
        self.parked.push(ids[pools != HEAP])

    # ---------------------------------------------------------------- metrics
    def stats(self) -> dict[str, float]:
        """Pool sizes and counters (cheap: the loop logs them every step)."""
        out: dict[str, float] = {f"buffer/{name}": int(c) for name, c in zip(POOL_NAMES, self.counts)}
        out.update({f"buffer/{k}": v for k, v in self.counters.items()})
        out["buffer/step"] = self.step
        return out

    def snapshot(self) -> dict[str, np.ndarray]:
        """Per-problem p̂ (NaN if unseen), visits and pool: what reports plot over time."""
        return {"p_hat": self.p_hat.astype(np.float32), "visits": self.visits.copy(), "pool": self.pool.copy()}

    def pools(self) -> np.ndarray:
        """Pool of every problem (codes index ``POOL_NAMES``)."""
        return self.pool.copy()

    # ---------------------------------------------------------------- state
    _ARRAYS = ("attempts", "successes", "w_successes", "w_attempts", "p_hat", "priority", "visits", "streak",
               "last_visit", "sample_step", "pool", "origin", "counts", "max_gap")
    _NEW_IN_3 = ("max_gap",)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: statistics, pools, schedule, counters and RNG."""
        return {
            "version": STATE_VERSION,
            "num_problems": self.num_problems,
            "sampler": self.cfg.sampler,
            "stats": self.cfg.stats,
            "arrays": {k: getattr(self, k).copy() for k in self._ARRAYS},
            "step": self.step,
            "last_round": self.last_round,
            "counters": dict(self.counters),
            "rng": self.rng.bit_generator.state,
            "sampler_state": self.sampler.state_dict(),
            "available": self.available.state_dict(),
            "prior": self.prior.state_dict(),
            "prior_frozen": self.prior_frozen.state_dict(),
            "last_refresh": self.last_refresh,
            "predictions": self.predictions.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict``; the heaps and trees are rebuilt from the arrays (their keys are
        unique, so they serve in the same order)."""
        if state.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"buffer state has version={state.get('version')!r}, this buffer reads {READABLE_VERSIONS}")
        for key, want in (("num_problems", self.num_problems), ("sampler", self.cfg.sampler), ("stats", self.cfg.stats)):
            if state.get(key) != want:
                raise ValueError(f"buffer state has {key}={state.get(key)!r}, this buffer needs {want!r}")
        arrays = dict(state["arrays"])
        if state["version"] == 2:
            arrays.update({k: np.zeros_like(getattr(self, k)) for k in self._NEW_IN_3})
        for k in self._ARRAYS:
            mine = getattr(self, k)
            if k not in arrays or np.shape(arrays[k]) != mine.shape:
                raise ValueError(f"buffer state array {k!r} is missing or has the wrong shape")
        for k in self._ARRAYS:
            getattr(self, k)[...] = arrays[k]
        self.step, self.last_round = int(state["step"]), int(state["last_round"])
        self.counters = {**dict.fromkeys(self.counters, 0), **state["counters"]}
        self.rng.bit_generator.state = state["rng"]
        if "prior" in state:
            self.prior.load_state_dict(state["prior"])
            self.prior_frozen = self.prior.frozen()
            self.prior_frozen.load_state_dict(state["prior_frozen"])
            self.last_refresh = int(state["last_refresh"])
            self.predictions.load_state_dict(state["predictions"])
        self.view.step, self.view.prior_frozen, self.view.last_refresh = self.step, self.prior_frozen, self.last_refresh
        self.sampler = sampler_class(self.cfg)(self.view)
        self.available.load_state_dict(state["available"])
        available = np.flatnonzero(self.pool == HEAP) if self.sampler.parks else np.flatnonzero(self.pool != IN_FLIGHT)
        self.sampler.load_state_dict(state["sampler_state"], available)
        self.parked.clear()
        if self.sampler.parks:
            self.parked.rebuild()

    # ---------------------------------------------------------------- checking
    def check_invariants(self) -> None:
        """Raise AssertionError unless every problem is in exactly one pool and every index agrees
        with the pools (a full scan: for tests and debugging, not for the hot path)."""
        pool = self.pool
        assert (self.counts == np.bincount(pool, minlength=4)).all(), "pool counts drifted"
        served = np.sort(self.sampler.members())
        assert len(np.unique(served)) == len(served), "sampler holds a problem twice"
        live = self.parked.live_ids(unique=False)
        parked = np.unique(live)
        assert len(parked) == len(live) or self.mix, "parked queue holds a problem twice"
        if self.mix:
            assert np.array_equal(np.sort(self.available.members()), np.flatnonzero(pool != IN_FLIGHT)), \
                "uniform-share index != problems not in flight"
        if self.sampler.parks:
            assert np.array_equal(served, np.flatnonzero(pool == HEAP)), "sampler index != heap pool"
            assert np.array_equal(parked, np.flatnonzero((pool == SOLVED) | (pool == UNSOLVED))), "parked queue != parked pools"
        else:
            assert np.array_equal(served, np.flatnonzero(pool != IN_FLIGHT)), "sampler index != available problems"
            assert len(parked) == 0, "a sampler that never parks has a parked queue"
        visited = np.flatnonzero(self.visits > 0)
        assert np.allclose(self.priority[visited], self._priority(visited), rtol=0, atol=1e-15), "priority != its formula"
        unseen = np.flatnonzero(self.visits == 0)
        assert (self.priority[unseen] == self._unseen_priority(unseen)).all(), "unseen problem lost its priority"
        done = visited[pool[visited] != IN_FLIGHT]
        assert np.array_equal(pool[done], self._pools(done)), "a visited problem sits in the wrong pool"
