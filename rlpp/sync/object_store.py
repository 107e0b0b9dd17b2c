"""Object-store weight sync: learner rank 0 packs its full weights into one CPU buffer
(``rlpp.sync.packed``) and returns it into the Ray object store; every rollout actor reads it from there,
with no copy through the driver and none on receive, and reloads its engine in place. It serves any
engine on CPU or GPU, and a load is an ordinary actor call, so it can be queued between an actor's
generation batches (the transport of the pipelined loop).

Call order (the driver, ``rlpp.distributed.weight_sync.ObjectStoreSync``): every learner rank calls
``pack_weights`` at once (rank 0 returns the payload; the others return None once they have taken part
in each ZeRO-3 gather); each rollout actor is handed the object ref of rank 0's result as a top-level
argument, which Ray resolves inside the actor, and calls ``load_weights``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rlpp.sync.packed import PackedWeights

if TYPE_CHECKING:
    import torch

    from rlpp.rollout.engine import RolloutEngine
    from rlpp.sync.source import WeightSource


def pack_weights(source: WeightSource) -> PackedWeights | None:
    """The learner half: rank 0's full weights on CPU in one flat buffer, None on the other ranks."""
    if source.rank != 0:
        source.take_part()
        return None
    return PackedWeights.pack(source, stable=not source.gathered)


def load_weights(engine: RolloutEngine, weights: Mapping[str, torch.Tensor]) -> None:
    """The rollout half: copy ``weights`` into ``engine``'s parameters. A ``PackedWeights`` arrives mapped
    read-only from shared memory; the engine only reads it."""
    engine.load_weights(weights.items())
