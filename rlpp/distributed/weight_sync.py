"""Learner → rollout weight transfer after each step, by ``rollout.weight_sync``.

``object_store``: learner rank 0 puts its full weights in the Ray object store once; every rollout
actor reads them from there (no copy through the driver) and reloads its engine in place.
``nccl``: learner rank 0 and every vLLM worker form one NCCL group at start-up; each sync broadcasts
the weights tensor by tensor (``rlpp.sync.nccl`` documents the call order this follows).
"""

from __future__ import annotations

import ray

from rlpp.config.schema import Config
from rlpp.distributed.groups import LearnerGroup, RolloutGroup


class WeightSync:
    def __init__(self, cfg: Config, learners: LearnerGroup, rollouts: RolloutGroup):
        self.mode, self.learners, self.rollouts = cfg.weight_sync, learners, rollouts
        self.metadata = None
        if self.mode == "nccl":
            self._join_nccl_group()

    def _join_nccl_group(self) -> None:
        from rlpp.sync.nccl import transfer_group_layout

        sizes = ray.get([a.sync_world_size.remote() for a in self.rollouts.actors])
        world, offsets = transfer_group_layout(sizes)
        address, port = ray.get(self.learners.actors[0].endpoint.remote())
        # Both sides block in the rendezvous until all ranks arrive: launch every call, then wait.
        receivers = [a.sync_init.remote(address, port, off, world) for a, off in zip(self.rollouts.actors, offsets)]
        senders = [a.sync_init.remote(address, port, world) for a in self.learners.actors]
        self.metadata = ray.get(senders)[0]
        ray.get(receivers)

    def __call__(self) -> None:
        if self.mode == "object_store":
            self.rollouts.load_weights(self.learners.weights())
            return
        receivers = [a.sync_receive.remote(self.metadata) for a in self.rollouts.actors]
        senders = [a.sync_send.remote(self.metadata) for a in self.learners.actors]
        ray.get(senders + receivers)
