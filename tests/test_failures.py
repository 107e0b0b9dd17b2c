"""Actor failures: a rollout actor killed mid-run is restarted, its problems return to the buffer and
training goes on; a learner failure stops the run with a message saying how to resume."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import ray

from rlpp.config.loader import load_config
from rlpp.distributed.groups import RolloutGroup
from rlpp.trainer import Trainer, TrainingStopped

ACTORS = ["trainer.batch_size=48", "rollout.num_actors=2", "rollout.cpus_per_actor=0.5", "rollout.torch_threads=1",
          "learner.cpus_per_actor=0.5", "learner.torch_threads=1", "log.buffer_snapshots=false"]


def actor_pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_killed_rollout_actor_is_restarted_and_nothing_is_lost(ray_local, tmp_path, small_run, mode):
    """SIGKILL a rollout actor mid-generation: in pipelined mode it also holds the batches queued behind
    the running one (k = 2). Every lost draw goes back to the buffer and the step draws again."""
    cfg = load_config("configs/tiny.yaml", small_run + ACTORS + [f"trainer.output_dir={tmp_path / 'run'}",
                                                                 "trainer.steps=8", "trainer.eval_every=0",
                                                                 f"trainer.mode={mode}", "trainer.max_staleness=2"])
    trainer = Trainer(cfg)
    original = RolloutGroup.submit
    kills, submits = [], [0]

    def submit_with_a_crash(self, split, ids, sampling):
        # From the third training draw on, until one kill has hit a running call: SIGKILL actor 0's
        # process a moment after the calls are submitted, so it dies mid-generation.
        if split == "train":
            submits[0] += 1
            if len(kills) < 3 and submits[0] >= 3 and not released():
                try:
                    pid = actor_pid(self.actors[0])
                except ray.exceptions.ActorUnavailableError:  # still restarting from the last kill
                    return original(self, split, ids, sampling)
                timer = threading.Timer(0.02, os.kill, (pid, signal.SIGKILL))
                timer.start()
                kills.append(pid)
        return original(self, split, ids, sampling)

    def released() -> int:
        return trainer.buffer.stats()["buffer/released"]

    RolloutGroup.submit = submit_with_a_crash
    try:
        summary = trainer.fit()  # checks the buffer invariants before its final checkpoint
        stats = trainer.buffer.stats()
    finally:
        RolloutGroup.submit = original
        trainer.close()
    assert kills, "no rollout actor was killed"
    assert stats["buffer/released"] > 0, "the killed actor's draw was not handed back"
    assert stats["buffer/in_flight"] == 0
    assert stats["buffer/updates"] == 48 * 8  # every step still trained on a full draw
    assert summary["steps"] == 8


@pytest.mark.slow
def test_learner_failure_stops_with_resume_hint(ray_local, tmp_path, small_run):
    cfg = load_config("configs/tiny.yaml", small_run + ACTORS + [f"trainer.output_dir={tmp_path / 'run'}",
                                                                 "trainer.steps=4", "trainer.eval_every=0"])
    trainer = Trainer(cfg)
    try:
        ray.kill(trainer.learners.actors[0])
        with pytest.raises(TrainingStopped, match=r"(?s)learner actor failed at step 1.*trainer\.resume=auto"):
            trainer.fit()
    finally:
        trainer.close()
