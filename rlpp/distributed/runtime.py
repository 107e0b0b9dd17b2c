"""What a run is made of at run time, and its teardown: ``Parts`` and ``build_parts``.

The loop (``rlpp.trainer`` and ``rlpp.loop.scheduler``) talks to five components through plain method calls,
each typed by a ``Protocol`` below: ``BufferLike``, ``RolloutPool``, ``LearnerPool``, ``WeightSyncLike`` and
``RunControlLike``. The Ray-backed classes and the in-process test fakes both implement them, and a test checks
that every one does.

``build_parts`` makes the Ray-backed ones: the buffer and control actors behind ``ActorClient`` (the
only place their answers are awaited), the rollout and learner groups, the weight sync. It is the
run's single owner of actors and placement groups: if any part fails to start, everything started
before it is torn down, and ``Parts.close`` tears down the rest in reverse order. A test passes
in-process fakes instead and drives the loop without Ray.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import ray

from rlpp.metrics import PhaseTimer


@runtime_checkable
class BufferLike(Protocol):
    """The priority buffer as the loop uses it (``rlpp.buffer.PriorityBuffer``, behind an ``ActorClient``)."""

    def sample(self, batch_size: int, step: int | None = None) -> Any: ...
    def update(self, ids, rewards) -> dict: ...
    def release(self, ids) -> int: ...
    def stats(self) -> dict: ...
    def snapshot(self) -> dict: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def check_invariants(self) -> None: ...
    def group_filter(self) -> str: ...
    def oracle_request(self) -> tuple[int, int] | None: ...
    def set_oracle_rates(self, ids, rates) -> None: ...
    def diagnostics(self) -> dict: ...
    def prediction_log(self) -> dict: ...


@runtime_checkable
class RolloutPool(Protocol):
    """The rollout actors (``rlpp.distributed.groups.RolloutGroup``). ``collect`` raises ``RolloutFailed``."""

    actors: list

    def generate(self, split: str, ids: np.ndarray, sampling) -> Any: ...
    def submit(self, split: str, ids: np.ndarray, sampling) -> list: ...
    def collect(self, pending: list, version: int | None = None) -> Any: ...
    def wait_alive(self) -> None: ...
    def resize(self, count: int, weights: Callable | None = None, version: int | None = None) -> list: ...


@runtime_checkable
class LearnerPool(Protocol):
    """The learner ranks (``rlpp.distributed.groups.LearnerGroup``). Raises ``LearnerFailed``."""

    def train(self, batch, seed: int = 0) -> dict: ...
    def weights(self) -> Any: ...
    def save(self, folder: str) -> None: ...
    def load(self, folder: str) -> None: ...


@runtime_checkable
class WeightSyncLike(Protocol):
    """Learner -> rollout weights (``rlpp.distributed.weight_sync``). Raises ``SyncFailed`` / ``SyncTimeout``."""

    restartable: bool
    cannot_resize: str

    def sync(self, version: int) -> None: ...
    def push(self, version: int) -> None: ...
    def wait_pushed(self, block: bool = True) -> None: ...
    def release_memory(self) -> None: ...


@runtime_checkable
class RunControlLike(Protocol):
    """The ``rlpp scale`` mailbox (``rlpp.distributed.control.RunControl``)."""

    def take(self) -> int | None: ...
    def report(self, actors: int, step: int, error: str = "") -> None: ...


class ActorClient:
    """Calls an actor's methods and waits for the answer: ``client.sample(16)`` is
    ``ray.get(actor.sample.remote(16))``. The loop uses it like the plain object the actor wraps."""

    def __init__(self, handle: "ray.actor.ActorHandle"):
        self.handle = handle

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.handle, name)
        return lambda *args, **kwargs: ray.get(method.remote(*args, **kwargs))

    def kill(self) -> None:
        ray.kill(self.handle)


@dataclass
class Parts:
    """The run's components (see the module docstring) and how to tear them down."""

    buffer: BufferLike
    rollouts: RolloutPool
    learners: LearnerPool
    sync_weights: WeightSyncLike
    control: RunControlLike
    model_path: str = ""
    tokenizer: Any = None  # saved beside every checkpoint; None: nothing to save
    pad_id: int = 0
    warmstart: dict = field(default_factory=dict)
    close: Callable[[], None] = lambda: None
    startup: dict = field(default_factory=dict)  # seconds each part took to start


def build_parts(cfg, out: Path, problems: dict, model_path: str, warmstart: dict) -> Parts:
    """Start the buffer, control, rollout and learner actors and the weight sync; on any failure the
    ones already started are torn down before the error propagates."""
    from rlpp.distributed.buffer_actor import create_buffer_actor
    from rlpp.distributed.control import CONTROL_FILE, start_control
    from rlpp.distributed.groups import LearnerGroup, RolloutGroup, reserve_colocated, run_requests
    from rlpp.distributed.placement import check_fits, release
    from rlpp.distributed.weight_sync import create_weight_sync
    from rlpp.models.tiny import load_tokenizer

    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    timer = PhaseTimer()  # seconds each part took to start
    with ExitStack() as stack:
        if cfg.ray.check_resources:  # fail now, naming the keys, rather than wait on what can never fit
            check_fits(run_requests(cfg))
        train = problems["train"]
        buffer = ActorClient(create_buffer_actor(cfg.buffer, len(train), seed=cfg.seed, num_cpus=0,
                                                 group_size=cfg.rollout.group_size, clusters=train.cluster_ids()))
        stack.callback(buffer.kill)
        # Colocated: one placement group, each bundle holding a learner rank and a rollout actor on one
        # GPU. The engines start first, so vLLM sizes its KV cache before the learner allocates.
        # Otherwise the rollout engines and the learner ranks start at the same time.
        shared = reserve_colocated(cfg) if cfg.rollout.colocate else None
        if shared is not None:
            stack.callback(release, shared)
        with timer("rollouts"):
            rollouts = RolloutGroup(cfg, model_path, problems, seed=cfg.seed, colocated=shared, wait=shared is not None)
            stack.callback(rollouts.shutdown)
        with timer("learners"):
            learners = LearnerGroup(cfg, model_path, colocated=shared)
            stack.callback(learners.shutdown)
        with timer("rollouts"):
            rollouts.wait_started()
        with timer("sync_control_buffer"):
            sync = create_weight_sync(cfg, learners, rollouts)
            control = ActorClient(start_control(out, len(rollouts.actors)))
            stack.callback((out / CONTROL_FILE).unlink, missing_ok=True)
            stack.callback(control.kill)
            buffer.stats()  # created first, it has long been ready: its errors surface here, not at step 1
        teardown = stack.pop_all()
    return Parts(buffer, rollouts, learners, sync, control, model_path=model_path, tokenizer=tokenizer,
                 pad_id=tokenizer.pad_token_id, warmstart=warmstart, close=teardown.close, startup=dict(timer.totals))
