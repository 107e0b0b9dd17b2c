"""The GRPO loop: buffer → rollouts → buffer update → learner → weight sync → log.

``Trainer.fit`` is the whole loop and reads top to bottom; set-up, evaluation and checkpoints are the
methods beside it. The buffer, rollout and learner actors are created here, at wiring time.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import ray
import torch

from rlpp import checkpoint
from rlpp.algo.batch import make_train_batch
from rlpp.config.loader import to_yaml
from rlpp.config.schema import Config, ConfigError
from rlpp.data.loader import load_problems
from rlpp.distributed.groups import RolloutFailed
from rlpp.distributed.local import init_ray
from rlpp.distributed.placement import PlacementError
from rlpp.distributed.runtime import Parts, build_parts
from rlpp.distributed.weight_sync import SyncFailed
from rlpp.evaluation import evaluate
from rlpp.metrics import MetricsSink, PhaseTimer, StartupClock
from rlpp.recipes.warmstart import prepare_model
from rlpp.progress import Progress
from rlpp.reward.registry import check_reward
from rlpp.rollout.engine import Sampling
from rlpp.rollout.worker import RolloutResult

log = logging.getLogger(__name__)


class Trainer:
    """The GRPO loop over a run's parts (``rlpp.distributed.runtime``): ``with Trainer(cfg) as t: t.fit()``.

    ``parts`` defaults to the Ray actors ``build_parts`` starts; a test passes in-process fakes. The
    trainer owns the parts from then on: ``close`` (or leaving the ``with`` block, or a failure while
    setting up) tears them down."""

    def __init__(self, cfg: Config, parts: Parts | None = None):
        self.startup = StartupClock()
        self.cfg = cfg
        self.out = Path(cfg.trainer.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(to_yaml(cfg))
        check_reward(cfg.reward.name)  # a bad reward.name fails here, once, not in every rollout actor
        resume_from = checkpoint.resolve(cfg.trainer.resume, self.out)  # a bad checkpoint too, before any actor
        self.train_set, self.dev_set, self.eval_set = load_problems(cfg.data)
        _check_pool(cfg.trainer, len(self.train_set))
        if cfg.buffer.prior.mode == "cluster" and self.train_set.cluster_ids() is None:
            raise ConfigError(f"buffer.prior.mode: cluster needs a cluster label per problem; {self.train_set.source} has "
                              "none: set data.group_key to a row field (e.g. level or subject)")
        self.startup.mark("data")
        if parts is None:
            model_path, warmstart = prepare_model(cfg, self.dev_set, self.eval_set)
            self.startup.mark("warm_start")
            init_ray(cfg)
            self.startup.mark("ray")
            problems = {"train": self.train_set, "dev": self.dev_set, "eval": self.eval_set}
            parts = build_parts(cfg, self.out, problems, model_path, warmstart)
            self.startup.mark("actors")
            self.startup.add({f"actors.{k}": v for k, v in parts.startup.items()})
        self.parts = parts
        self.buffer, self.rollouts, self.learners = parts.buffer, parts.rollouts, parts.learners
        self.sync_weights, self.control = parts.sync_weights, parts.control
        self.model_path, self.warmstart, self.pad_id = parts.model_path, parts.warmstart, parts.pad_id
        self.sink = None
        try:
            rc = cfg.rollout
            self.sampling = Sampling(rc.group_size, rc.temperature, rc.top_p, rc.max_new_tokens)
            self.sink = MetricsSink(self.out, tensorboard=cfg.log.tensorboard, wandb=cfg.log.wandb,
                                    mlflow=cfg.log.mlflow, params=cfg)
            self.rollouts_done, self.start_step, self.bad_steps = 0, 0, 0
            self.oracle_request = None  # (rollouts, every) of the oracle sampler's measurements, asked in fit
            self.history: list[dict] = []
            # Pipelined mode: trained steps by the staleness of their batch, and batches dropped as too old.
            self.staleness_steps: dict[int, int] = {}
            self.stale_dropped = 0
            if resume_from is not None:
                self.resume(resume_from)
            elif (self.out / "metrics.jsonl").stat().st_size:
                # A fresh start in a used folder: the earlier run's records would interleave with these.
                log.warning("%s holds metrics of an earlier run; starting fresh, they are dropped "
                            "(use trainer.resume=auto to continue that run instead)", self.out / "metrics.jsonl")
                self.sink.truncate_after(-1)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        cfg, t_start = self.cfg.trainer, time.perf_counter()
        self.oracle_request = self.buffer.oracle_request()
        self.startup.mark("set_up")
        if self.start_step == 0:
            self.history.append(self._evaluate_all(step=0))
            self.startup.mark("initial_eval")
        log.info("%s", self.startup.summary())
        self.progress = Progress(cfg.steps, self.start_step, self.cfg.log.progress_bar)
        step = self._fit_pipelined() if cfg.mode == "pipelined" else self._fit_sync()
        self.progress.close()
        self.buffer.check_invariants()  # every problem in exactly one pool, none lost
        np.savez_compressed(self.out / "predictions.npz", **self.buffer.prediction_log())
        self.save(step)
        self.steps_done = step
        return self.summary(time.perf_counter() - t_start)

    def _fit_sync(self) -> int:
        """Each step: draw → generate → score → record in the buffer → train → sync, one after another."""
        step = self.start_step
        for step in range(self.start_step + 1, self.cfg.trainer.steps + 1):
            self._apply_requests(step)
            timer = PhaseTimer()
            self._measure_oracle(step, timer)
            with timer("rollout"):
                result = self.collect(step, timer)
            batch, metrics = self._batch(result)
            with timer("sleep"):
                self._sync(self.sync_weights.release_memory, step)  # colocated engines free the GPU
            with timer("train"):
                metrics.update(self._train(batch, step) if batch is not None else {})
            with timer("sync"):
                self._sync(lambda: self.sync_weights.sync(step), step)
            metrics["time/learner_idle_frac"] = timer.seconds("rollout") / max(timer.total(), 1e-9)
            if self._end_of_step(step, result, metrics, timer):
                break
        return step

    def _fit_pipelined(self) -> int:
        """Steps t+1..t+k generate while step t trains (k = ``trainer.max_staleness``). A batch is drawn and
        submitted with the policy version of the last sync submitted before it; each actor applies syncs
        and batches in submission order, so a batch is generated by exactly that version. A checkpoint
        step drains the pipeline (nothing is drawn beyond it until it is saved), so resuming from it
        replays the same schedule."""
        tc, k = self.cfg.trainer, self.cfg.trainer.max_staleness
        last = tc.steps
        if tc.max_rollouts:  # every pipelined step costs B x G rollouts: the budget fixes the last step
            per_step = tc.batch_size * self.cfg.rollout.group_size
            last = min(last, self.start_step + math.ceil(max(tc.max_rollouts - self.rollouts_done, 1) / per_step))
        if self.cfg.algo.tis_cap == 0:
            log.warning("pipelined with algo.tis_cap=0: batches up to %d policy versions old are trained as if "
                        "on-policy (the ratio's denominator is the learner's current policy); algo.tis_cap (e.g. 2) "
                        "weights each token by the capped ratio to the policy that generated it", k)
        flights: deque[Flight] = deque()
        self.version = self.start_step
        step = self.start_step
        for step in range(self.start_step + 1, last + 1):
            self._apply_requests(step, drain=lambda: self._drain(flights))
            timer = PhaseTimer()
            boundary = math.ceil(step / tc.checkpoint_every) * tc.checkpoint_every if tc.checkpoint_every else last
            drawn = flights[-1].step if flights else step - 1
            for ahead in range(drawn + 1, min(step + k, last, boundary) + 1):
                with timer("buffer"):
                    flights.append(self._submit(ahead))
            flight = flights.popleft()
            with timer("wait"):
                result = self._receive(flight)
            while self.version - flight.version > k:  # a guard: the schedule above never lets this happen
                self.buffer.release(flight.ids)
                self.stale_dropped += len(flight.ids)
                flight = self._submit(step, top_up=True)
                result = self._receive(flight)
            with timer("buffer"):
                self.buffer.update(result.ids, result.rewards)
            self.rollouts_done += result.rewards.size
            batch, metrics = self._batch(result)
            with timer("train"):
                metrics.update(self._train(batch, step) if batch is not None else {})
            self.version += 1
            with timer("sync"):
                self._push_weights(step)
            wall = max(timer.total(), 1e-9)
            staleness = self.version - 1 - flight.version
            self.staleness_steps[staleness] = self.staleness_steps.get(staleness, 0) + 1
            trained = sum(self.staleness_steps.values())
            # The run's staleness histogram so far: the share of trained steps at each staleness 0..k.
            metrics.update({f"rollout/staleness_share/{s}": self.staleness_steps.get(s, 0) / trained for s in range(k + 1)})
            metrics.update({"rollout/staleness": float(staleness),
                            "rollout/policy_version": float(flight.version), "rollout/stale_dropped": float(self.stale_dropped),
                            "rollout/in_flight_batches": float(len(flights)),
                            "time/learner_idle_frac": timer.seconds("wait") / wall})
            if self._end_of_step(step, result, metrics, timer):
                break
        return step

    def _submit(self, step: int, top_up: bool = False) -> "Flight":
        """Draw step ``step``'s problems and start generating them with the current policy version."""
        drawn = self.buffer.sample(self.cfg.trainer.batch_size, self.drawn_step if top_up else step)
        self.drawn_step = max(getattr(self, "drawn_step", 0), step)
        sampling = replace(self.sampling, seed=_step_seed(self.cfg.seed, step, 0))
        return Flight(step, self.version, drawn.ids, drawn.weights, sampling,
                      self.rollouts.submit("train", drawn.ids, sampling))

    def _receive(self, flight: "Flight") -> RolloutResult:
        """The flight's scored groups, generated by its policy version. When a rollout actor died, or a
        restarted one generated with its initial weights, or a queued weight load failed, the flight's
        problems go back to the buffer, every actor gets the current weights, and the same step draws
        again (a top-up draw, generated by the current version)."""
        for attempt in range(self.cfg.rollout.max_restarts + 1):
            if flight.result is not None:
                return flight.result
            try:
                # weight loads that ran before this batch: their failures count as the actor's
                self.sync_weights.wait_pushed(block=False)
                result = self.rollouts.collect(flight.pending, version=flight.version)
            except (RolloutFailed, SyncFailed) as e:
                cause = e.cause if isinstance(e, RolloutFailed) else e
                self.buffer.release(flight.ids)
                if attempt == self.cfg.rollout.max_restarts or not self.sync_weights.restartable:
                    raise TrainingStopped(f"rollout failed at step {flight.step}: {cause}\n{self._resume_hint()}") from e
                log.warning("step %d: rollout failed (%s); redrawing it after the current weights, queued on every "
                            "actor (a restarting one takes them first)", flight.step, cause)
                # Not a blocking sync: healthy actors may hold up to k batches; the version check catches any
                # batch that still ran on other weights.
                self._push_weights(flight.step)
                again = self._submit(flight.step, top_up=True)
                flight.version, flight.ids, flight.weights, flight.pending = again.version, again.ids, again.weights, again.pending
                continue
            _attach_weights(result, flight.ids, flight.weights)
            flight.result = result
        return flight.result

    def _drain(self, flights: "deque[Flight]") -> None:
        """Wait until the rollout actors hold no work: every flight's results (kept for its step) and
        every queued weight load (so an actor about to be removed leaves nothing behind)."""
        for f in flights:
            self._receive(f)
        try:
            self.sync_weights.wait_pushed()
        except SyncFailed as e:  # an actor died: nothing is queued now, so a blocking sync is safe
            if not self.sync_weights.restartable:
                raise TrainingStopped(f"weight sync failed: {e}\n{self._resume_hint()}") from e
            log.warning("a queued weight load failed (%s); syncing every actor again", e)
            self.rollouts.wait_alive()
            self._sync(lambda: self.sync_weights.sync(self.version), self.drawn_step)

    def _push_weights(self, step: int) -> None:
        try:
            self.sync_weights.push(self.version)
        except SyncFailed as e:
            raise TrainingStopped(f"weight sync failed at step {step}: {e}\n{self._resume_hint()}") from e

    def _batch(self, result: RolloutResult):
        return make_train_batch(
            result.prompt_ids, [[(c.token_ids, c.logprobs) for c in g] for g in result.completions],
            torch.as_tensor(result.rewards), std_normalize=self.cfg.algo.std_normalize,
            drop_zero_variance=self.cfg.algo.drop_zero_variance, pad_id=self.pad_id, weights=result.weights)

    def _end_of_step(self, step: int, result: RolloutResult, metrics: dict, timer: PhaseTimer) -> bool:
        """Log the step, evaluate and checkpoint when due; whether this was the last step."""
        cfg = self.cfg.trainer
        metrics.update(self._rollout_metrics(result, timer))
        metrics["rollout/actors"] = len(self.rollouts.actors)
        metrics["time/step"] = timer.total()
        if step == self.start_step + 1:  # the run's (or the resumed run's) first step
            metrics.update(self.startup.metrics())
        metrics["time/rollout_idle_frac"] = max(0.0, 1.0 - result.metrics.get("time/generate", 0.0) / max(timer.total(), 1e-9))
        self.sink.log(step, metrics)
        last = step == cfg.steps or 0 < cfg.max_rollouts <= self.rollouts_done
        if (cfg.eval_every and step % cfg.eval_every == 0) or last:
            self.history.append(self._evaluate_all(step, final=last))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last:
            self.save(step)
        self.progress.update(step, accuracy=self.history[-1]["eval/accuracy"], pass_rate=metrics["rollout/pass_rate"],
                             rollouts=self.rollouts_done)
        return last

    def _apply_requests(self, step: int, drain=None) -> None:
        """Between steps: resize the rollout pool if ``rlpp scale`` asked to. ``drain`` (pipelined mode)
        first collects every batch still generating, so a removed actor holds no work."""
        wanted = self.control.take()
        if wanted is None:
            return
        if drain is not None and wanted != len(self.rollouts.actors):
            drain()
        error = self.sync_weights.cannot_resize if wanted != len(self.rollouts.actors) else ""
        if not error:
            before = len(self.rollouts.actors)
            try:
                # New actors load the current weights first (and, pipelined, learn their version).
                self.rollouts.resize(wanted, weights=self.learners.weights, version=getattr(self, "version", None))
            except (PlacementError, ray.exceptions.RayError) as e:
                error = str(e)
                self.rollouts.resize(before)  # drop any actor added before the failure: it has no weights
        if error:
            log.error("step %d: rollout pool not resized to %d: %s", step, wanted, error)
        else:
            log.info("step %d: rollout pool resized to %d actors", step, wanted)
        self.control.report(len(self.rollouts.actors), step, error)

    def _sync(self, call, step: int) -> None:
        try:
            call()
        except SyncFailed as e:
            raise TrainingStopped(f"weight sync failed at step {step}: {e}\n{self._resume_hint()}") from e

    def _train(self, batch, step: int) -> dict:
        try:
            metrics = self.learners.train(batch, seed=_step_seed(self.cfg.seed, step, 7))
        except ray.exceptions.RayError as e:
            raise TrainingStopped(f"a learner actor failed at step {step}: {e}\n{self._resume_hint()}") from e
        self.bad_steps = self.bad_steps + 1 if metrics["train/skipped"] else 0
        if self.bad_steps >= self.cfg.trainer.max_bad_steps:
            raise TrainingStopped(f"{self.bad_steps} steps in a row had a non-finite loss (last: step {step}); "
                                  f"stopping (trainer.max_bad_steps={self.cfg.trainer.max_bad_steps}).\n{self._resume_hint()}")
        return metrics

    def _resume_hint(self) -> str:
        found = checkpoint.complete(checkpoint.root(self.out))
        where = f"the latest checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
        return f"Resume with the same command plus trainer.resume=auto ({where})."

    def collect(self, step: int, timer: PhaseTimer) -> RolloutResult:
        """Sample problems, generate and score their groups, and record the results in the buffer.

        With ``trainer.fill=signal`` the step keeps up to B groups that carry signal and draws again for
        the shortfall (up to ``trainer.fill_rounds`` draws); with ``fill=screen`` each drawn problem is first
        screened with ``trainer.screen_rollouts`` rollouts and only the mixed ones are completed to G;
        ``dapo_filter`` draws extra problems and keeps up to B such groups, drawing again (at most 3 rounds)
        while fewer survive. Every group generated is counted as spent, kept or not.
        """
        b, tc = self.cfg.trainer.batch_size, self.cfg.trainer
        dapo = self.buffer.filters_groups()  # the sampler draws extra and leaves the filtering to this loop
        rounds = 3 if dapo else tc.fill_rounds if tc.fill != "off" else 1
        kept: list[RolloutResult] = []
        drawn = signal_groups = screened = 0
        for round_ in range(rounds):
            need = b - sum(len(k.ids) for k in kept)
            # Later rounds of dynamic filling draw the shortfall over the signal rate seen so far this
            # step (at least 1/4, so one unlucky round does not draw the pool).
            want = b if dapo or round_ == 0 else min(4 * need, math.ceil(need / max(signal_groups / drawn, 0.25)))
            sampling = replace(self.sampling, seed=_step_seed(self.cfg.seed, step, round_))
            if tc.fill == "screen":
                sampling = replace(sampling, n=tc.screen_rollouts)
            result = self._generate_with_retries(want, step, sampling, timer)
            self.rollouts_done += result.rewards.size
            signal = result.rewards.max(axis=1) > result.rewards.min(axis=1)
            if tc.fill == "screen":
                screened += len(result.ids)
                chosen = np.flatnonzero(signal)[:need]
                rest = np.setdiff1d(np.arange(len(result.ids)), chosen)
                with timer("buffer"):  # the screen alone is all these problems get
                    self.buffer.update(result.ids[rest], result.rewards[rest])
                result = self._complete(_take(result, chosen), step, round_, timer)
            with timer("buffer"):
                self.buffer.update(result.ids, result.rewards)
            if rounds == 1:
                return result
            drawn, signal_groups = drawn + len(signal), signal_groups + int(signal.sum())
            kept.append(_take(result, np.flatnonzero(result.rewards.max(axis=1) > result.rewards.min(axis=1))))
            if sum(len(k.ids) for k in kept) >= b or len(signal) == 0:
                break
        merged = RolloutResult.concat(kept)
        out = _take(merged, np.arange(min(b, len(merged.ids))))
        out.metrics.update({"rollout/fill_rounds": float(round_ + 1), "rollout/groups_generated": float(drawn),
                            "rollout/signal_groups": float(len(out.ids))})
        if tc.fill == "screen":
            out.metrics["rollout/screened"] = float(screened)
        return out

    def _complete(self, screen: RolloutResult, step: int, round_: int, timer: PhaseTimer) -> RolloutResult:
        """Generate the rest of each screened group (G − screen rollouts, the problems still in flight) and
        join it to its screen: one group of G per problem."""
        g = self.cfg.rollout.group_size
        if len(screen.ids) == 0:
            return RolloutResult(screen.ids, [], [], np.empty((0, g)), [], screen.metrics, screen.weights)
        rest = g - self.cfg.trainer.screen_rollouts
        sampling = replace(self.sampling, n=rest, seed=_step_seed(self.cfg.seed, step, 50 + round_))
        for attempt in range(self.cfg.rollout.max_restarts + 1):
            try:
                more = self.rollouts.generate("train", screen.ids, sampling)
                break
            except RolloutFailed as e:
                if attempt == self.cfg.rollout.max_restarts or not self.sync_weights.restartable:
                    self.buffer.release(screen.ids)
                    raise TrainingStopped(f"rollout failed at step {step}: {e.cause}\n{self._resume_hint()}") from e
                log.warning("step %d: %s; completing the screened groups again after the actor restarts", step, e)
                self.rollouts.wait_alive()
                self._sync(lambda: self.sync_weights.sync(step - 1), step)  # the version step draws with
        order = {int(i): k for k, i in enumerate(more.ids.tolist())}
        rows = [order[int(i)] for i in screen.ids.tolist()]
        self.rollouts_done += more.rewards.size
        full = RolloutResult(screen.ids, screen.prompt_ids,
                             [c + more.completions[r] for c, r in zip(screen.completions, rows)],
                             np.concatenate([screen.rewards, more.rewards[rows]], axis=1),
                             [t + more.texts[r] for t, r in zip(screen.texts, rows)],
                             RolloutResult.concat([screen, more]).metrics, screen.weights)
        return full

    def _measure_oracle(self, step: int, timer: PhaseTimer) -> None:
        """The ``oracle`` sampler's measurement, every ``buffer.oracle.every_steps`` steps from step 1: every
        problem's pass rate under the current policy from extra rollouts, which no budget is charged for."""
        request = self.oracle_request
        if request is None or (step - 1) % request[1]:
            return
        k = request[0]
        sampling = replace(self.sampling, n=k, seed=_step_seed(self.cfg.seed, step, 98))
        ids = np.arange(len(self.train_set))
        with timer("oracle"):
            parts = [self.rollouts.generate("train", chunk, sampling) for chunk in np.array_split(ids, max(1, len(ids) // 1024))]
            got = RolloutResult.concat(parts)
            self.buffer.set_oracle_rates(got.ids, (got.rewards >= self.cfg.buffer.success_threshold).mean(axis=1))

    def _generate_with_retries(self, b: int, step: int, sampling: Sampling, timer: PhaseTimer) -> RolloutResult:
        """Draw and generate; when a rollout actor dies, every problem of the draw goes back to the
        buffer unchanged, the restarted actor gets the current weights, and the step draws again."""
        for attempt in range(self.cfg.rollout.max_restarts + 1):
            with timer("buffer"):
                drawn = self.buffer.sample(b, step)
            ids = drawn.ids
            try:
                result = self.rollouts.generate("train", ids, sampling)
                _attach_weights(result, ids, drawn.weights)
                return result
            except RolloutFailed as e:
                self.buffer.release(ids)  # nothing lost: the whole draw is handed back
                if attempt == self.cfg.rollout.max_restarts or not self.sync_weights.restartable:
                    raise TrainingStopped(f"rollout failed at step {step}: {e.cause}\n{self._resume_hint()}") from e
                log.warning("step %d: %s; retrying after the actor restarts", step, e)
                self.rollouts.wait_alive()
                self._sync(lambda: self.sync_weights.sync(step - 1), step)  # the version step draws with
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ around the loop
    def _evaluate_all(self, step: int, final: bool = False) -> dict:
        out = self.evaluate(step, final=final)
        if self.cfg.trainer.eval_dev:
            out.update({k: v for k, v in self.evaluate(step, "dev", snapshot=False).items() if k.startswith("dev/")})
        return out

    def evaluate(self, step: int, split: str = "eval", snapshot: bool = True, final: bool = False) -> dict:
        """``rlpp eval``'s evaluation (``rlpp.evaluation``) of the current policy, logged at ``step``; the
        run's last one also reports pass@k for ``eval.final_k``."""
        problems = self.eval_set if split == "eval" else self.dev_set
        ec = self.cfg.eval
        k, samples = (ec.final_k, max(ec.final_k)) if final and ec.final_k else (ec.k, ec.samples)
        metrics, _ = evaluate(self.rollouts.generate, problems, split, max_new_tokens=self.cfg.rollout.max_new_tokens,
                              threshold=self.cfg.buffer.success_threshold, k=k, samples=samples,
                              temperature=ec.temperature, top_p=ec.top_p, seed=_step_seed(self.cfg.seed, step, 99))
        metrics["rollouts"] = self.rollouts_done
        self.sink.log(step, metrics)
        if self.cfg.log.buffer_snapshots and snapshot:
            folder = self.out / "buffer"
            folder.mkdir(exist_ok=True)
            np.savez_compressed(folder / f"step_{step:06d}.npz", **self.buffer.snapshot())
        log.info("step %d: %s accuracy %.4f", step, split, metrics[f"{split}/accuracy"])
        return {"step": step, **metrics}

    def _rollout_metrics(self, result: RolloutResult, timer: PhaseTimer) -> dict:
        stats = self.buffer.stats()
        success = result.rewards >= self.cfg.buffer.success_threshold
        return {**result.metrics, **timer.metrics(), **stats, "rollouts": self.rollouts_done,
                "rollout/pass_rate": float(success.mean()),
                "rollout/tokens_per_s": result.metrics.get("rollout/tokens", 0.0) / max(result.metrics.get("time/generate", 0.0), 1e-9)}

    def save(self, step: int) -> Path:
        """Model in HF format + tokenizer + DeepSpeed optimizer state + buffer and trainer state."""
        tmp = checkpoint.staging(self.out, step)
        self.learners.save(str(tmp))
        if self.parts.tokenizer is not None:
            self.parts.tokenizer.save_pretrained(tmp)
        for marker in Path(self.model_path).glob("rlpp_tokenizer.json") if self.model_path else ():
            shutil.copy(marker, tmp / marker.name)
        torch.save(self.buffer.state_dict(), tmp / "buffer.pt")
        state = {"step": step, "rollouts": self.rollouts_done, "history": self.history, "bad_steps": self.bad_steps,
                 "num_problems": len(self.train_set), "stale_dropped": self.stale_dropped,
                 "staleness_steps": self._staleness_counts()}
        return checkpoint.commit(tmp, state, self.cfg.trainer.keep_last)

    def _staleness_counts(self) -> dict[str, int]:
        """Trained steps by staleness, JSON-ready (checkpoint state and summary.json)."""
        return {str(s): n for s, n in sorted(self.staleness_steps.items())}

    def resume(self, folder: Path) -> None:
        """Continue from ``folder``: learner weights and optimizer, engines, buffer, counters, logs."""
        state = checkpoint.read_state(folder)
        if state["num_problems"] != len(self.train_set):
            raise checkpoint.CheckpointError(f"{folder} holds a buffer over {state['num_problems']} problems, "
                                             f"this run's data has {len(self.train_set)}")
        self.learners.load(str(folder))
        self.sync_weights.sync(state["step"])  # the policy version the engines now hold
        self.buffer.load_state_dict(torch.load(folder / "buffer.pt", weights_only=False))
        self.start_step, self.rollouts_done = state["step"], state["rollouts"]
        self.history, self.bad_steps = state["history"], state["bad_steps"]
        self.stale_dropped = state.get("stale_dropped", 0)  # absent from checkpoints written before these counters
        self.staleness_steps = {int(s): n for s, n in state.get("staleness_steps", {}).items()}
        # What the interrupted run logged after this checkpoint is redone, so it must not appear twice.
        self.sink.truncate_after(self.start_step)
        for snap in (self.out / "buffer").glob("step_*.npz"):
            if int(snap.stem.removeprefix("step_")) > self.start_step:
                snap.unlink()
        log.info("resumed from %s at step %d (%d rollouts)", folder, self.start_step, self.rollouts_done)

    def summary(self, seconds: float) -> dict:
        first, last = self.history[0], self.history[-1]
        best = max(self.history, key=lambda h: h["eval/accuracy"])
        out = {"warmstart_dev_accuracy": self.warmstart.get("dev_accuracy"),
               "initial_accuracy": first["eval/accuracy"], "final_accuracy": last["eval/accuracy"],
               "best_accuracy": best["eval/accuracy"], "best_step": best["step"], "steps": self.steps_done,
               "rollouts": self.rollouts_done, "seconds": round(seconds, 1), "output_dir": str(self.out),
               "num_problems": len(self.train_set), "group_size": self.cfg.rollout.group_size,
               "diagnostics": self.buffer.diagnostics()}
        for key, value in last.items():  # the last evaluation's pass@k (eval.k, eval.final_k)
            if re.fullmatch(r"eval/pass@\d+", key):
                out[f"final_{key.removeprefix('eval/')}"] = value
        if self.staleness_steps:
            out["staleness_steps"] = self._staleness_counts()
        if "dev/accuracy" in last:
            out.update(initial_dev_accuracy=first.get("dev/accuracy"), final_dev_accuracy=last["dev/accuracy"],
                       best_dev_accuracy=max(h.get("dev/accuracy", 0.0) for h in self.history))
        (self.out / "summary.json").write_text(json.dumps(out, indent=1))
        return out

    def close(self) -> None:
        """Tear the run down: metrics sink, then every actor and placement group (safe to call twice)."""
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        close, self.parts.close = self.parts.close, lambda: None
        close()


class TrainingStopped(RuntimeError):
    """The run cannot go on; the message says why and how to resume."""


def _step_seed(seed: int, step: int, round_: int) -> int:
    # Sampling depends on (seed, step) only, so a resumed run draws exactly what the original did.
    return (seed * 1_000_003 + step * 101 + round_) % (2**31 - 1)


def _check_pool(tc, problems: int) -> None:
    """Pipelined mode keeps up to max_staleness + 1 batches in flight (fewer when checkpoints come sooner):
    the pool must hold them all, or later draws would come back short."""
    if tc.mode != "pipelined":
        return
    ahead = min(tc.max_staleness, tc.checkpoint_every - 1) if tc.checkpoint_every else tc.max_staleness
    if problems < (ahead + 1) * tc.batch_size:
        raise ConfigError(f"trainer.max_staleness: pipelined mode holds up to {ahead + 1} batches of "
                          f"trainer.batch_size={tc.batch_size} in flight, more than the {problems} training "
                          "problems; lower max_staleness or batch_size")


@dataclass
class Flight:
    """One pipelined batch: drawn for ``step``, generated by policy ``version``, results once collected."""

    step: int
    version: int
    ids: np.ndarray
    weights: np.ndarray
    sampling: Sampling
    pending: list
    result: RolloutResult | None = None


def _attach_weights(result: RolloutResult, ids: np.ndarray, weights: np.ndarray) -> None:
    """A sampler that corrects its bias (``per``) returns importance weights: they go with the groups to the loss."""
    if not np.all(weights == 1.0):
        weight_of = dict(zip(np.asarray(ids).tolist(), np.asarray(weights).tolist()))
        result.weights = np.array([weight_of[i] for i in result.ids.tolist()])


def _take(result: RolloutResult, rows: np.ndarray) -> RolloutResult:
    rows = rows.tolist()
    return RolloutResult(result.ids[rows], [result.prompt_ids[i] for i in rows], [result.completions[i] for i in rows],
                         result.rewards[rows], [result.texts[i] for i in rows], result.metrics,
                         None if result.weights is None else result.weights[rows])
