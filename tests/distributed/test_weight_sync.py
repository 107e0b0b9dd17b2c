"""Weight sync control flow without GPUs: bounded waits, the colocated sleep/wake order, IPC handle
merging. Ray actors of small fake classes stand in for the learner and rollout actors."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import ray

from rlpp.config.loader import load_config
from rlpp.distributed.weight_sync import SyncTimeout, WeightSync, wait_all
from rlpp.sync.ipc import merge_update_infos


@ray.remote(num_cpus=0)
class Recorder:
    """Every call is logged with a system-wide monotonic time, so logs of several actors interleave."""

    def __init__(self, name: str, hang_on: str = "", fail_on: str = ""):
        self.name, self.hang_on, self.fail_on, self.log = name, hang_on, fail_on, []

    def _record(self, what: str, *args):
        self.log.append((time.monotonic(), self.name, what, args))
        if what == self.fail_on:
            raise RuntimeError(f"{self.name} failed in {what}")
        if what == self.hang_on:
            time.sleep(3600)

    def events(self):
        return self.log

    def sleep(self):
        self._record("sleep")

    def wake_up(self, tags):
        self._record("wake_up", tuple(tags))

    def load_weights(self, weights, version=None):
        self._record("load_weights", sorted(weights))

    def ipc_export(self):
        self._record("ipc_export")
        return {"names": ["w"], "dtype_names": ["bfloat16"], "shapes": [[2]], "ipc_handles": [{self.name: ("args",)}]}

    def ipc_release(self):
        self._record("ipc_release")

    def sync_receive_ipc(self, info):
        self._record("sync_receive_ipc", tuple(sorted(info["ipc_handles"][0])))

    def named_weights(self):
        self._record("named_weights")
        return {"w": 1}


def fake_sync(cfg, learners, rollouts) -> WeightSync:
    group_l = SimpleNamespace(actors=learners, weights=lambda: learners[0].named_weights.remote())
    return WeightSync(cfg, group_l, SimpleNamespace(actors=rollouts))


def timeline(*actors):
    return [e[1:] for e in sorted(e for a in actors for e in ray.get(a.events.remote()))]


def test_a_hanging_call_times_out_naming_the_actor_and_kills_it(ray_local):
    ok, stuck = Recorder.remote("a"), Recorder.remote("b", hang_on="sleep")
    t0 = time.monotonic()
    with pytest.raises(SyncTimeout, match=r"rollout.sync_timeout_s=1 s; still waiting on: actor b \(killed\)"):
        wait_all({"actor a": (ok.sleep.remote(), ok), "actor b": (stuck.sleep.remote(), stuck)}, 1.0, "test sleep")
    assert time.monotonic() - t0 < 30
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(stuck.events.remote(), timeout=30)
    assert ray.get(ok.events.remote())  # the one that answered is left alone


def test_a_failed_side_stops_the_other_instead_of_leaving_it_blocked(ray_local):
    """A receiver that dies before its NCCL call would leave the sender in the broadcast for ever."""
    sender, receiver = Recorder.remote("sender", hang_on="sleep"), Recorder.remote("receiver", fail_on="sleep")
    with pytest.raises(RuntimeError, match="receiver failed in sleep"):
        wait_all({"s": (sender.sleep.remote(), sender), "r": (receiver.sleep.remote(), receiver)}, 600, "sync")
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(sender.events.remote(), timeout=30)


def test_colocated_object_store_sync_order(ray_local, tmp_path):
    """Colocated: engines sleep before training; a sync wakes their weights, loads, then wakes the KV cache."""
    cfg = load_config(None, ["rollout.colocate=true", f"trainer.output_dir={tmp_path}"])
    learner, r0 = Recorder.remote("learner"), Recorder.remote("rollout")
    sync = fake_sync(cfg, [learner], [r0])
    sync.release_memory()
    sync()
    assert [e[:2] for e in timeline(learner, r0)] == [
        ("rollout", "sleep"), ("rollout", "wake_up"), ("learner", "named_weights"), ("rollout", "load_weights"),
        ("rollout", "wake_up")]
    assert [e[2] for e in timeline(r0) if e[1] == "wake_up"] == [(("weights",),), (("kv_cache",),)]


def test_not_colocated_the_engines_never_sleep(ray_local, tmp_path):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    learner, r0 = Recorder.remote("learner"), Recorder.remote("rollout")
    sync = fake_sync(cfg, [learner], [r0])
    sync.release_memory()
    sync()
    assert [e[:2] for e in timeline(learner, r0)] == [("learner", "named_weights"), ("rollout", "load_weights")]


def test_ipc_sync_merges_every_ranks_handles_and_releases_them(ray_local, tmp_path):
    cfg = load_config(None, ["rollout.colocate=true", "rollout.engine=vllm", "learner.gpus_per_actor=1",
                             "learner.num_actors=2", "rollout.num_actors=2", "learner.zero_stage=2",
                             f"trainer.output_dir={tmp_path}"])
    assert cfg.weight_sync == "ipc"
    learners = [Recorder.remote("gpu0"), Recorder.remote("gpu1")]
    rollouts = [Recorder.remote("engine0"), Recorder.remote("engine1", fail_on="sync_receive_ipc")]
    sync = fake_sync(cfg, learners, rollouts)
    with pytest.raises(RuntimeError, match="engine1 failed"):
        sync()
    events = timeline(*learners, *rollouts)
    assert ("engine0", "sync_receive_ipc", (("gpu0", "gpu1"),)) in events  # each engine finds its GPU's handle
    released = [e for e in events if e[1] == "ipc_release"]
    assert {e[0] for e in released} == {"gpu0", "gpu1"}  # handles dropped even though a receive failed


def test_merge_update_infos_refuses_mismatched_ranks():
    a = {"names": ["w"], "dtype_names": ["float32"], "shapes": [[2]], "ipc_handles": [{"u0": 1}]}
    b = {**a, "ipc_handles": [{"u1": 2}]}
    assert merge_update_infos([a, b])["ipc_handles"] == [{"u0": 1, "u1": 2}]
    with pytest.raises(ValueError, match="different tensors"):
        merge_update_infos([a, {**b, "names": ["v"]}])
