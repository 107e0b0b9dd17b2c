"""Learner → rollout weight transfer after each step, by ``rollout.weight_sync`` (resolved by
``Config.weight_sync``).

``object_store``: learner rank 0 puts its full weights in the Ray object store once; every rollout
actor reads them from there (no copy through the driver) and reloads its engine in place.
``nccl``: learner rank 0 and every vLLM worker form one NCCL group at start-up; each sync broadcasts
the weights tensor by tensor (``rlpp.sync.nccl`` documents the call order this follows).
``ipc``: colocated mode on GPUs: each learner rank exports CUDA IPC handles of its weights and the vLLM
engine on the same GPU loads from them (``rlpp.sync.ipc``).

With ``rollout.colocate`` the engines also give their memory to the learner: ``release_memory`` puts
them to sleep before training, and a sync wakes their weights, loads the new ones, then wakes the KV
cache. Every wait is bounded by ``rollout.sync_timeout_s``: a side that never finishes (a dead actor,
a peer stuck in a collective) stops the run with ``SyncTimeout`` naming the actors still pending, and
those actors are killed so nothing stays blocked in NCCL.
"""

from __future__ import annotations

import time

import ray

from rlpp.config.schema import Config
from rlpp.distributed.groups import LearnerGroup, RolloutGroup


class SyncFailed(RuntimeError):
    """A weight load or sync failed on some actor (the cause is chained)."""


class SyncTimeout(RuntimeError):
    """A weight sync (or a colocated sleep/wake) did not finish within ``rollout.sync_timeout_s``."""


def wait_all(calls: dict, timeout_s: float, what: str) -> list:
    """Results of ``calls`` ({label: (object ref, actor)}), in order.

    When a call fails, or some are still running after ``timeout_s``, the actors of the calls still
    running are killed (a peer of a collective that will never complete would block for ever) and the
    failure is raised: the actor's own error, or ``SyncTimeout`` naming the labels still pending."""
    labels = list(calls)
    refs = [calls[k][0] for k in labels]
    deadline = time.monotonic() + timeout_s
    pending, failed = list(refs), None
    while pending and failed is None:
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            break  # deadline passed
        try:
            ray.get(done[0])
        except Exception as e:  # noqa: BLE001 - re-raised below once the others are stopped
            failed = e
    if pending:
        stuck = [k for k, r in zip(labels, refs) if r in pending]
        for k in stuck:
            ray.kill(calls[k][1], no_restart=True)
        if failed is not None:
            raise failed
        raise SyncTimeout(f"{what} did not finish within rollout.sync_timeout_s={timeout_s:g} s; "
                          f"still waiting on: {', '.join(stuck)} (killed)")
    if failed is not None:
        raise failed
    return ray.get(refs)


class WeightSync:
    def __init__(self, cfg: Config, learners: LearnerGroup, rollouts: RolloutGroup):
        self.mode, self.learners, self.rollouts = cfg.weight_sync, learners, rollouts
        self.colocate = cfg.rollout.colocate
        self.timeout_s = cfg.rollout.sync_timeout_s
        self.metadata = None
        if self.mode == "nccl":
            self._join_nccl_group()

    @property
    def restartable(self) -> bool:
        """Whether a restarted rollout actor can be brought back into sync (not into an NCCL group fixed
        at start-up)."""
        return self.mode != "nccl"

    @property
    def cannot_resize(self) -> str:
        """Why the rollout pool cannot change size with this sync ("" when it can)."""
        if self.colocate:
            return ("rollout.colocate=true pairs each rollout actor with a learner rank on its GPU; the pool "
                    "size is learner.num_actors")
        if self.mode == "nccl":
            return ("weight_sync=nccl fixes the NCCL group's members at start-up; resizing the rollout pool "
                    "needs rollout.weight_sync=object_store")
        return ""

    def _rollout_calls(self, method: str, *args) -> dict:
        return {f"rollout actor {i}": (getattr(a, method).remote(*args), a) for i, a in enumerate(self.rollouts.actors)}

    def _learner_calls(self, method: str, *args) -> dict:
        return {f"learner rank {i}": (getattr(a, method).remote(*args), a) for i, a in enumerate(self.learners.actors)}

    def _join_nccl_group(self) -> None:
        from rlpp.sync.nccl import transfer_group_layout

        sizes = ray.get([a.sync_world_size.remote() for a in self.rollouts.actors])
        world, offsets = transfer_group_layout(sizes)
        address, port = ray.get(self.learners.actors[0].endpoint.remote())
        # Both sides block in the rendezvous until all ranks arrive: launch every call, then wait.
        receivers = {f"rollout actor {i}": (a.sync_init.remote(address, port, off, world), a)
                     for i, (a, off) in enumerate(zip(self.rollouts.actors, offsets))}
        senders = self._learner_calls("sync_init", address, port, world)
        self.metadata = wait_all({**senders, **receivers}, self.timeout_s, "joining the NCCL weight-transfer group")[0]

    def push(self, version: int) -> list:
        """Start a sync without waiting for the rollout side (pipelined mode): each actor applies the
        new weights after the generation batches already queued on it and before any submitted later.
        Returns the pending loads, to be checked once those batches are collected; the NCCL sync needs
        both sides at once, so it completes here (after each actor's queued batches)."""
        if self.mode == "object_store":
            return self.rollouts.submit_weights(self.learners.weights(), version=version)
        if self.mode == "nccl":
            self(version)
            return []
        raise ValueError(f"weight sync {self.mode!r} cannot run pipelined (colocated engines sleep while the learner trains)")

    def release_memory(self) -> None:
        """Before training (colocated mode): the engines free their GPU memory for the learner."""
        if self.colocate:
            wait_all(self._rollout_calls("sleep"), self.timeout_s, "putting the rollout engines to sleep")

    def __call__(self, version: int | None = None) -> None:
        """Bring every rollout actor to the learner's weights (``version``: the policy version they are,
        reported back with each generated batch)."""
        if self.colocate:  # weights memory back first: the sync writes into it
            wait_all(self._rollout_calls("wake_up", ["weights"]), self.timeout_s, "waking the rollout engines' weights")
        if self.mode == "object_store":
            ref = self.learners.weights()
            wait_all(self._rollout_calls("load_weights", ref, version), self.timeout_s, "the object-store weight sync")
            version = None
        elif self.mode == "nccl":
            receivers = self._rollout_calls("sync_receive", self.metadata)
            senders = self._learner_calls("sync_send", self.metadata)
            wait_all({**senders, **receivers}, self.timeout_s, "the NCCL weight sync")
        elif self.mode == "ipc":
            from rlpp.sync.ipc import merge_update_infos

            infos = wait_all(self._learner_calls("ipc_export"), self.timeout_s, "exporting CUDA IPC weight handles")
            try:
                wait_all(self._rollout_calls("sync_receive_ipc", merge_update_infos(infos)), self.timeout_s,
                         "the CUDA IPC weight sync")
            finally:
                wait_all(self._learner_calls("ipc_release"), self.timeout_s, "releasing CUDA IPC weight handles")
        else:
            raise ValueError(f"unknown weight sync mode {self.mode!r}")
        if self.colocate:
            wait_all(self._rollout_calls("wake_up", ["kv_cache"]), self.timeout_s, "waking the rollout engines' KV cache")
        if version is not None:
            wait_all(self._rollout_calls("set_policy_version", version), self.timeout_s, "recording the policy version")
