"""Learner → rollout weight sync after each step: one interface, ``WeightSync``, and a class per transport
(``ObjectStoreSync``, ``NcclSync``, ``IpcSync``), picked from ``SYNCS`` by ``rollout.weight_sync`` with
``auto`` resolved (``rlpp.sync.resolve_weight_sync``). Each class drives the two halves of its transport
(``rlpp.sync.object_store``, ``.nccl``, ``.ipc``) through the learner and rollout actors' entry points.

The loop sees ``sync``, ``push``/``wait_pushed``, ``release_memory``, ``restartable`` and
``cannot_resize``, and two errors: ``SyncFailed`` (an actor's call failed: the actor is named, the cause
chained) and its subclass ``SyncTimeout``; never ``ray.exceptions``.

With ``rollout.colocate`` the engines also give their memory to the learner, whatever the transport:
``release_memory`` puts them to sleep before training, and a sync first has every learner rank give
back what the step left (``Learner.offload_states``: optimizer state to CPU, cached blocks freed), then
wakes the engines' weights, loads the new ones, then wakes the KV cache. Every wait of a sync is bounded by ``rollout.sync_timeout_s``: a side that
never finishes (a dead actor, a peer stuck in a collective) stops the run with ``SyncTimeout`` naming the
actors still pending, and those actors are killed so nothing stays blocked in NCCL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from rlpp.config.schema import Config
from rlpp.distributed.groups import LearnerGroup, RolloutGroup
from rlpp.sync import resolve_weight_sync


class SyncFailed(RuntimeError):
    """A weight sync (or a colocated sleep/wake, or a queued weight load) failed on an actor."""


class SyncTimeout(SyncFailed):
    """A weight sync (or a colocated sleep/wake) did not finish within ``rollout.sync_timeout_s``."""


def wait_all(calls: dict, timeout_s: float, what: str) -> list:
    """Results of ``calls`` ({label: (object ref, actor)}), in order.

    When a call fails, or some are still running after ``timeout_s``, the actors of the calls still
    running are killed (a peer of a collective that will never complete would block for ever) and the
    failure is raised: ``SyncFailed`` naming the failed call's label, or ``SyncTimeout`` naming the
    labels still pending."""
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
        except Exception as e:  # noqa: BLE001 - raised below once the others are stopped
            failed = (labels[refs.index(done[0])], e)
    if pending:
        stuck = [k for k, r in zip(labels, refs) if r in pending]
        for k in stuck:
            ray.kill(calls[k][1], no_restart=True)
        if failed is None:
            raise SyncTimeout(f"{what} did not finish within rollout.sync_timeout_s={timeout_s:g} s; "
                              f"still waiting on: {', '.join(stuck)} (killed)")
    if failed is not None:
        label, cause = failed
        raise SyncFailed(f"{what} failed on {label}: {cause}") from cause
    return ray.get(refs)


@contextmanager
def _as_sync_failed(what: str) -> Iterator[None]:
    """A Ray error outside ``wait_all`` (a learner's export, the group's layout) as ``SyncFailed``."""
    try:
        yield
    except ray.exceptions.RayError as e:
        raise SyncFailed(f"{what} failed: {e}") from e


class WeightSync:
    """Brings every rollout actor to the learner's current weights and tells each the policy version.

    A subclass moves the weights (``_transfer``), and may queue them (``_start_loads``); colocation, the
    policy version, bounded waits and the queued loads are handled here, once for every transport."""

    restartable = True
    """Whether a restarted rollout actor can be brought back into sync (not into an NCCL group fixed at
    start-up)."""
    fixed_pool = ""
    """Why this transport cannot serve a rollout pool that changes size ("" when it can)."""
    queues_loads = False
    """A load is an ordinary call on each rollout actor (``_start_loads``), which can wait in its queue."""
    load_sets_version = False
    """The transport's load records the policy version on each actor itself."""

    def __init__(self, cfg: Config, learners: LearnerGroup, rollouts: RolloutGroup):
        self.learners, self.rollouts = learners, rollouts
        self.colocate = cfg.rollout.colocate
        self.timeout_s = cfg.rollout.sync_timeout_s
        self._pending: list[tuple[str, ray.ObjectRef]] = []  # (actor label, queued load), see push

    @property
    def cannot_resize(self) -> str:
        """Why the rollout pool cannot change size with this sync ("" when it can)."""
        if self.colocate:
            return ("rollout.colocate=true pairs each rollout actor with a learner rank on its GPU; the pool "
                    "size is learner.num_actors")
        return self.fixed_pool

    def _rollout_calls(self, method: str, *args) -> dict:
        return {f"rollout actor {i}": (getattr(a, method).remote(*args), a) for i, a in enumerate(self.rollouts.actors)}

    def _learner_calls(self, method: str, *args) -> dict:
        return {f"learner rank {i}": (getattr(a, method).remote(*args), a) for i, a in enumerate(self.learners.actors)}

    def release_memory(self) -> None:
        """Before training (colocated mode): the engines free their GPU memory for the learner."""
        if self.colocate:
            wait_all(self._rollout_calls("sleep"), self.timeout_s, "putting the rollout engines to sleep")

    def sync(self, version: int) -> None:
        """Bring every rollout actor to the learner's weights, which are policy version ``version`` (each
        actor reports it with every batch it generates). Blocks; raises ``SyncFailed``/``SyncTimeout``."""
        self._pending = []  # superseded: this sync's calls run after them on each actor (see push)
        if self.colocate:
            # The engine re-maps the whole share it sized at start-up: the learner's step peak must be gone
            # first. Then the weights' memory, which the sync writes into.
            wait_all(self._learner_calls("offload_states"), self.timeout_s, "offloading the learner's states")
            wait_all(self._rollout_calls("wake_up", ["weights"]), self.timeout_s, "waking the rollout engines' weights")
        self._transfer(version)
        if self.colocate:
            wait_all(self._rollout_calls("wake_up", ["kv_cache"]), self.timeout_s, "waking the rollout engines' KV cache")
        if not self.load_sets_version:
            wait_all(self._rollout_calls("set_policy_version", version), self.timeout_s, "recording the policy version")

    def push(self, version: int) -> None:
        """Start a sync to ``version`` without waiting for the rollout side, where the transport can: one
        load is queued on each actor after the generation batches already queued there and before any
        submitted later, so it lands between batches, never inside one; ``wait_pushed`` checks it.
        A push supersedes the loads still pending from an earlier one: each actor runs its calls in
        order, so the newer load lands after the older and alone decides the weights that actor ends
        with (a batch generated in between by weights an older load failed to replace carries the wrong
        policy version, which ``RolloutGroup.collect`` refuses). A transport that needs both sides at
        once (NCCL), or engines that sleep while the learner trains (colocated), syncs here instead."""
        if self.colocate or not self.queues_loads:
            self.sync(version)
            return
        self._pending = [(label, ref) for label, (ref, _) in self._start_loads(version).items()]

    def wait_pushed(self, block: bool = True) -> None:
        """Check the loads ``push`` queued: all of them, waiting as long as the batches queued before them
        take (``block``), or only those already finished, leaving the rest pending. A failed load raises
        ``SyncFailed`` naming its actor; the loads finished by then are no longer pending either way."""
        if not self._pending:
            return
        refs = [ref for _, ref in self._pending]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=None if block else 0)
        done = set(done)
        finished = [(label, ref) for label, ref in self._pending if ref in done]
        self._pending = [(label, ref) for label, ref in self._pending if ref not in done]
        for label, ref in finished:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:
                raise SyncFailed(f"a queued weight load failed on {label}: {e}") from e

    def _transfer(self, version: int) -> None:
        """Move the learner's weights into every (awake) engine."""
        raise NotImplementedError

    def _start_loads(self, version: int) -> dict:
        """With ``queues_loads``: one load call on each rollout actor, {label: (object ref, actor)}."""
        raise NotImplementedError


class ObjectStoreSync(WeightSync):
    """Learner rank 0's packed weights through the Ray object store (``rlpp.sync.object_store``); the one
    transport whose loads queue between batches (the pipelined loop's)."""

    queues_loads = load_sets_version = True

    def _start_loads(self, version: int) -> dict:
        with _as_sync_failed("packing the learner's weights"):
            ref = self.learners.weights()
        # A top-level ObjectRef argument is resolved inside each actor, straight from the object store.
        return self._rollout_calls("load_weights", ref, version)

    def _transfer(self, version: int) -> None:
        wait_all(self._start_loads(version), self.timeout_s, "the object-store weight sync")


class NcclSync(WeightSync):
    """A broadcast from learner rank 0 to every vLLM worker over one NCCL group formed at start-up
    (``rlpp.sync.nccl``, which documents the call order followed here)."""

    restartable = False
    fixed_pool = ("weight_sync=nccl fixes the NCCL group's members at start-up; resizing the rollout pool "
                  "needs rollout.weight_sync=object_store")

    def __init__(self, cfg: Config, learners: LearnerGroup, rollouts: RolloutGroup):
        super().__init__(cfg, learners, rollouts)
        self.metadata = self._join_group()

    def _join_group(self):
        from rlpp.sync.nccl import transfer_group_layout

        what = "joining the NCCL weight-transfer group"
        with _as_sync_failed(what):
            sizes = ray.get([a.sync_world_size.remote() for a in self.rollouts.actors])
            world, offsets = transfer_group_layout(sizes)
            address, port = ray.get(self.learners.actors[0].endpoint.remote())
        # Both sides block in the rendezvous until all ranks arrive: launch every call, then wait.
        receivers = {f"rollout actor {i}": (a.sync_init.remote(address, port, off, world), a)
                     for i, (a, off) in enumerate(zip(self.rollouts.actors, offsets))}
        senders = self._learner_calls("sync_init", address, port, world)
        return wait_all({**senders, **receivers}, self.timeout_s, what)[0]  # rank 0's metadata

    def _transfer(self, version: int) -> None:
        receivers = self._rollout_calls("sync_receive", self.metadata)
        senders = self._learner_calls("sync_send", self.metadata)
        wait_all({**senders, **receivers}, self.timeout_s, "the NCCL weight sync")


class IpcSync(WeightSync):
    """Colocated engines on GPUs load from CUDA IPC handles to each learner rank's weights on the same GPU
    (``rlpp.sync.ipc``)."""

    def _transfer(self, version: int) -> None:
        from rlpp.sync.ipc import merge_update_infos

        infos = wait_all(self._learner_calls("ipc_export"), self.timeout_s, "exporting CUDA IPC weight handles")
        try:
            wait_all(self._rollout_calls("sync_receive_ipc", merge_update_infos(infos)), self.timeout_s,
                     "the CUDA IPC weight sync")
        finally:
            wait_all(self._learner_calls("ipc_release"), self.timeout_s, "releasing CUDA IPC weight handles")


SYNCS: dict[str, type[WeightSync]] = {"object_store": ObjectStoreSync, "nccl": NcclSync, "ipc": IpcSync}
"""The class of each transport (``rlpp.sync.TRANSPORTS``)."""


def create_weight_sync(cfg: Config, learners: LearnerGroup, rollouts: RolloutGroup) -> WeightSync:
    """The weight sync of ``cfg``'s transport (``rollout.weight_sync``, ``auto`` resolved)."""
    return SYNCS[resolve_weight_sync(cfg)](cfg, learners, rollouts)
