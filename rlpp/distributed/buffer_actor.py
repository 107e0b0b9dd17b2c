"""The priority buffer as a Ray actor.

The actor is the plain ``PriorityBuffer`` wrapped by ``ray.remote`` here; its methods are already
batch-level (one RPC per batch). Ray runs an actor's calls one at a time by default, which is what
makes many concurrent samplers and updaters safe without a lock.
"""

from __future__ import annotations

import ray

from rlpp.buffer import PriorityBuffer
from rlpp.config.schema import BufferConfig


def create_buffer_actor(
    cfg: BufferConfig,
    num_problems: int,
    seed: int = 0,
    *,
    name: str | None = None,
    num_cpus: float = 1,
    max_restarts: int = 0,
    group_size: int = 8,
    clusters=None,
) -> "ray.actor.ActorHandle":
    """Start one buffer actor. ``name`` makes it reachable with ``ray.get_actor`` (e.g. by a scaler)."""
    options: dict = {"num_cpus": num_cpus, "max_restarts": max_restarts, "max_concurrency": 1}
    if name is not None:
        options["name"] = name
    return ray.remote(PriorityBuffer).options(**options).remote(cfg, num_problems, seed, group_size, clusters)
