"""Actor groups: the rollout actors and the learner ranks, with their resources and ranks (the buffer and
the run-control actors are started beside their own classes, ``buffer_actor.py`` and ``control.py``).

``RolloutGroup`` splits each step's problems across its rollout actors; ``LearnerGroup`` forms the
data-parallel process group of learner actors (rank 0's node hosts the rendezvous) and splits each
training batch so every rank runs the same number of micro-batches. Rollout and learner resources
are configured independently.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import ray
import torch
from ray.util.placement_group import PlacementGroup

from rlpp.algo.batch import TrainBatch, plan_micro_batches
from rlpp.algo.loss import LossNorm
from rlpp.algo.ppo import ppo_update
from rlpp.config.schema import Config
from rlpp.data.problems import ProblemSet
from rlpp.distributed.placement import PlacementError, Request, check_fits, in_group, release, reserve
from rlpp.learner.learner import Learner
from rlpp.rollout.engine import Sampling
from rlpp.rollout.worker import RolloutResult, RolloutWorker
from rlpp.sync import NCCL_DEFAULTS

log = logging.getLogger(__name__)


class RolloutFailed(RuntimeError):
    """Some rollout actors failed: the results of ``ids`` never came (``cause`` says why)."""

    def __init__(self, ids: np.ndarray, cause: BaseException):
        super().__init__(f"rollout of {len(ids)} problems failed: {cause}")
        self.cause = cause


class LearnerFailed(RuntimeError):
    """A learner rank failed (its process died or raised); the run cannot go on without it."""


class RolloutGroup:
    """The rollout actors, each in a placement group of its own so the pool can grow and shrink
    between steps (``resize``)."""

    def __init__(self, cfg: Config, model_path: str, problems: dict[str, ProblemSet], seed: int,
                 colocated: PlacementGroup | None = None, wait: bool = True):
        """``wait=False`` returns once the actors are requested; ``wait_started`` then waits for their
        engines (so the learners can start meanwhile)."""
        rc = cfg.rollout
        self.cfg, self.model_path, self.seed = cfg, model_path, seed
        self.colocated = colocated
        self.gpus = colocated_gpu_share(cfg) if colocated is not None else _rollout_gpus(cfg)
        self.actor_cls = ray.remote(RolloutWorker)
        self.actor_opts = dict(num_cpus=rc.cpus_per_actor, num_gpus=self.gpus, max_restarts=rc.max_restarts,
                               runtime_env=actor_env(cfg.torch_threads("rollout")))
        # Stored once, shared by every actor; held here so a restarted actor can still read it.
        self.problems_ref = ray.put(problems)
        self.actors: list = []
        self.groups: list = []
        try:
            self.resize(rc.num_actors, wait=wait)
        except BaseException:  # the actors and placement groups started before the failure go too
            self.shutdown()
            raise

    @staticmethod
    def request_for(cfg: Config, count: int) -> Request:
        rc = cfg.rollout
        return Request("rollout", count, rc.cpus_per_actor, _rollout_gpus(cfg),
                       "rollout.num_actors, rollout.cpus_per_actor, rollout.gpus_per_actor / vllm.tensor_parallel_size")

    def request(self, count: int) -> Request:
        return self.request_for(self.cfg, count)

    def resize(self, count: int, weights: Callable[[], ray.ObjectRef] | None = None, version: int | None = None,
               wait: bool = True) -> list:
        """Grow or shrink to ``count`` actors; returns the new ones, which load ``weights()`` (the
        current weights) before they can serve a batch, or else hold the initial ones. Call between
        steps: a removed actor holds no work then. ``wait=False`` (no ``weights``) leaves waiting for
        the new actors' engines to ``wait_started``."""
        if count < 1:
            raise ValueError(f"a run needs at least one rollout actor, got {count}")
        while len(self.actors) > count:
            actor, pg = self.actors.pop(), self.groups.pop()
            ray.kill(actor)
            release(pg)
        new = []
        while len(self.actors) < count:
            i = len(self.actors)
            if self.colocated is not None:  # bundle i of the shared group, beside learner rank i
                if i >= self.colocated.bundle_count:
                    raise PlacementError(f"colocated mode has {self.colocated.bundle_count} GPUs' bundles; "
                                         f"rollout actor {i} has no learner rank to share one with")
                pg, where = None, in_group(self.colocated, i)
            else:
                if self.cfg.ray.check_resources:
                    check_fits([self.request(1)])
                pg = reserve(f"rlpp-rollout-{i}", [self.request(1).bundle()], "STRICT_PACK", self.cfg.ray.placement_timeout_s)
                where = in_group(pg)
            actor = self.actor_cls.options(**self.actor_opts, scheduling_strategy=where).remote(
                self.cfg, self.model_path, self.problems_ref, self.seed + 1000 * i)
            self.actors.append(actor)
            self.groups.append(pg)
            new.append(actor)
        if not wait:
            if weights is not None:
                raise ValueError("resize(wait=False) cannot load weights into actors not yet started")
            return new
        try:
            self.wait_started(new)
            if new and weights is not None:
                self.load_weights(weights(), new, version)
        except ray.exceptions.RayError as e:
            raise RolloutFailed(np.empty(0, dtype=np.int64), e) from e
        return new

    def wait_started(self, actors: list | None = None) -> None:
        """Wait until ``actors`` (default: all) have built their engines; raises the first one's error."""
        ray.get([a.ping.remote() for a in (self.actors if actors is None else actors)])

    def generate(self, split: str, ids: np.ndarray, sampling: Sampling) -> RolloutResult:
        """Scored groups for ``ids``; raises ``RolloutFailed`` naming the ids that got no result."""
        return self.collect(self.submit(split, ids, sampling))

    def submit(self, split: str, ids: np.ndarray, sampling: Sampling) -> list[tuple[ray.ObjectRef, np.ndarray]]:
        """Start generating ``ids``, split over the actors; ``collect`` waits for the results. Each actor
        runs its calls in the order they were submitted, so a weight load submitted after this call is
        applied after this batch, never in the middle of it."""
        chunks = [c for c in np.array_split(np.asarray(ids, dtype=np.int64), len(self.actors)) if len(c)]
        return [(a.generate.remote(split, c, _chunk_seed(sampling, k)), c)
                for k, (a, c) in enumerate(zip(self.actors, chunks))]

    def collect(self, pending: list[tuple[ray.ObjectRef, np.ndarray]], version: int | None = None) -> RolloutResult:
        """The results of a ``submit``; raises ``RolloutFailed`` naming the ids that got no result, or
        (with ``version``) that came from weights of another policy version (an actor restarted with its
        initial weights before the sync that would have caught it up)."""
        results, failed, cause = [], [], None
        for ref, chunk in pending:
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayError, RuntimeError) as e:
                failed.append(chunk)
                cause = e
                continue
            if version is not None and result.version != version:
                failed.append(chunk)
                cause = RuntimeError(f"a rollout actor generated with policy version {result.version}, not {version} "
                                     "(restarted since the batch was submitted)")
                continue
            results.append(result)
        if failed:
            raise RolloutFailed(np.concatenate(failed), cause)
        return RolloutResult.concat(results)

    def wait_alive(self, timeout_s: float = 600.0) -> None:
        """Return once every actor answers (Ray restarts dead ones up to rollout.max_restarts times;
        a restarted actor holds the initial weights until the next sync)."""
        deadline = time.monotonic() + timeout_s
        for actor in self.actors:
            while True:
                try:
                    ray.get(actor.ping.remote(), timeout=max(1.0, deadline - time.monotonic()))
                    break
                except ray.exceptions.ActorUnavailableError:  # restarting: ask again shortly
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def load_weights(self, weights_ref: ray.ObjectRef, actors: list | None = None, version: int | None = None) -> None:
        ray.get(self.submit_weights(weights_ref, actors, version))

    def submit_weights(self, weights_ref: ray.ObjectRef, actors: list | None = None,
                       version: int | None = None) -> list[ray.ObjectRef]:
        """Queue a weight load on each actor (after the generation calls already queued there)."""
        # A top-level ObjectRef argument is resolved inside each actor, straight from the object store.
        return [a.load_weights.remote(weights_ref, version) for a in (self.actors if actors is None else actors)]

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        for pg in self.groups:
            release(pg)


def learner_request(cfg: Config) -> Request:
    lc = cfg.learner
    return Request("learner", lc.num_actors, lc.cpus_per_actor, lc.gpus_per_actor,
                   "learner.num_actors, learner.cpus_per_actor, learner.gpus_per_actor")


def run_requests(cfg: Config) -> list[Request]:
    """What the run's actors need from the cluster, for ``check_fits``."""
    if cfg.rollout.colocate:
        lc, rc = cfg.learner, cfg.rollout
        return [Request("learner + rollout (colocated)", lc.num_actors, lc.cpus_per_actor + rc.cpus_per_actor,
                        lc.gpus_per_actor, "learner.num_actors, learner.cpus_per_actor + rollout.cpus_per_actor, "
                        "learner.gpus_per_actor")]
    return [learner_request(cfg), RolloutGroup.request_for(cfg, cfg.rollout.num_actors)]


def reserve_colocated(cfg: Config) -> PlacementGroup:
    """``rollout.colocate``: one bundle per learner rank, holding that rank's GPU and CPUs plus its rollout
    actor's CPUs; the two actors take half the bundle's GPU each, so Ray gives both the same device."""
    (req,) = run_requests(cfg)
    return reserve("rlpp-colocated", [req.bundle()] * req.count, cfg.ray.learner_placement,
                   cfg.ray.placement_timeout_s)


def colocated_gpu_share(cfg: Config) -> float:
    """The GPU fraction each of the two colocated actors asks for (0 on CPU)."""
    return cfg.learner.gpus_per_actor / 2


class LearnerGroup:
    """The learner ranks, placed together in one placement group (``ray.learner_placement``)."""

    def __init__(self, cfg: Config, model_path: str, colocated: PlacementGroup | None = None):
        lc = cfg.learner
        self.cfg, self.world_size = cfg, lc.num_actors
        if colocated is None:
            req = learner_request(cfg)
            self.pg = reserve("rlpp-learner", [req.bundle()] * lc.num_actors, cfg.ray.learner_placement,
                              cfg.ray.placement_timeout_s)
            gpus = lc.gpus_per_actor
        else:
            self.pg, gpus = colocated, colocated_gpu_share(cfg)
        self.actors: list = []
        try:
            self._start(cfg, model_path, gpus)
        except BaseException:  # the ranks (and their placement group) started before the failure go too
            self.shutdown()
            raise

    def _start(self, cfg: Config, model_path: str, gpus: float) -> None:
        lc = cfg.learner
        actor = ray.remote(Learner)
        self.actors = [actor.options(num_cpus=lc.cpus_per_actor, num_gpus=gpus,
                                     runtime_env=actor_env(cfg.torch_threads("learner")),
                                     scheduling_strategy=in_group(self.pg, rank)).remote(cfg, model_path, rank, lc.num_actors)
                       for rank in range(lc.num_actors)]
        addr, port = ray.get(self.actors[0].endpoint.remote())
        # Every rank joins the rendezvous at once; DeepSpeed's init blocks until all have arrived.
        ray.get([a.connect.remote(addr, port) for a in self.actors])

    def train(self, batch: TrainBatch, seed: int = 0) -> dict[str, float]:
        """PPO over one rollout batch (``rlpp.algo.ppo``), each optimizer step run on every rank; raises
        ``LearnerFailed`` when a rank fails."""
        algo = self.cfg.algo
        return self._calling(lambda: ppo_update(batch, epochs=algo.ppo_epochs, mini_batches=self.cfg.learner.mini_batches,
                                                old_logprobs=algo.old_logprobs, step=self._step, logprobs=self.logprobs,
                                                seed=seed))

    @staticmethod
    def _calling(call):
        try:
            return call()
        except ray.exceptions.RayError as e:
            raise LearnerFailed(str(e)) from e

    def _plans(self, batch: TrainBatch) -> tuple[list[list[list[int]]], list[list[TrainBatch | None]]]:
        """Rows dealt to ranks by tokens, in length-sorted micro-batches, padded to one count per rank."""
        lc = self.cfg.learner
        rows = plan_micro_batches(batch.attention_mask.sum(1).tolist(), self.world_size, lc.micro_batch_size,
                                  lc.max_tokens_per_micro_batch)
        n_micro = max(1, max(len(r) for r in rows))
        return rows, [[batch.select(mb) for mb in r] + [None] * (n_micro - len(r)) for r in rows]

    def logprobs(self, batch: TrainBatch) -> torch.Tensor:
        """[N, L] log-probs of ``batch``'s tokens under the current weights (0 off the completion)."""
        rows, plans = self._plans(batch)
        outs = ray.get([a.logprobs.remote(p) for a, p in zip(self.actors, plans)])
        full = torch.zeros(batch.input_ids.shape, dtype=torch.float32)
        for rank_rows, rank_out in zip(rows, outs):
            for mb_rows, lp in zip(rank_rows, rank_out):
                full[mb_rows, : lp.shape[1]] = lp
        return full

    def _step(self, batch: TrainBatch) -> dict[str, float]:
        """One optimizer step over ``batch`` (every rank its share of the rows)."""
        _, plans = self._plans(batch)
        norm = LossNorm(total_sequences=len(batch), total_tokens=batch.num_tokens,
                        max_len=self.cfg.rollout.max_new_tokens)
        outs = ray.get([a.train.remote(p, norm) for a, p in zip(self.actors, plans)])
        tokens = max(1, sum(o["tokens"] for o in outs))
        metrics = {"train/loss": sum(o["loss"] for o in outs), "train/pg_loss": sum(o["pg_loss"] for o in outs),
                   "train/grad_norm": outs[0]["grad_norm"], "train/lr": outs[0]["lr"],
                   "train/skipped": float(outs[0]["skipped"])}
        for k in ("clip_frac", "clip_frac_low", "clip_frac_high", "ratio_mean", "kl", "entropy", "logprob_diff"):
            metrics[f"train/{k}"] = sum(o[k] for o in outs) / tokens
        if self.cfg.algo.tis_cap > 0:
            for k in ("tis_mean", "tis_capped_frac"):
                metrics[f"train/{k}"] = sum(o[k] for o in outs) / tokens
        for phase in ("forward", "backward", "optimizer"):  # the slowest rank's: the step waits for it
            metrics[f"time/learner_{phase}"] = max(o.get(f"time_{phase}", 0.0) for o in outs)
        if "memory_reserved_gib" in outs[0]:  # GPU learners: the fullest rank's allocator after the step
            metrics["train/memory_reserved_gib"] = max(o["memory_reserved_gib"] for o in outs)
        return metrics

    def weights(self) -> ray.ObjectRef:
        """Rank 0's full weights in the object store, packed in one buffer (``rlpp.sync.packed``; every
        rank takes part: ZeRO-3 gathers)."""
        refs = [a.packed_weights.remote() for a in self.actors]
        ray.get(refs[1:])  # the other ranks return None once they have taken part
        return refs[0]

    def save(self, folder: str) -> None:
        self._calling(lambda: ray.get([a.save.remote(folder) for a in self.actors]))

    def load(self, folder: str) -> None:
        self._calling(lambda: ray.get([a.load.remote(folder) for a in self.actors]))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        release(self.pg)


def _chunk_seed(sampling: Sampling, k: int) -> Sampling:
    return sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + 1_000_003 * k)


def actor_env(threads: int) -> dict:
    # Ray caps OpenMP at the actor's CPU reservation; the configured thread count is what the user
    # asked for (vLLM's CPU backend reads it at start-up, before any torch.set_num_threads).
    env = {k: os.environ.get(k, v) for k, v in NCCL_DEFAULTS.items()}
    return {"env_vars": {"OMP_NUM_THREADS": str(threads), **env}}


def _rollout_gpus(cfg: Config) -> float:
    return cfg.rollout.actor_gpus(_has_gpus())


def _has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0
