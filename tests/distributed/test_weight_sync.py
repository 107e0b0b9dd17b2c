"""Weight sync control flow without GPUs: the class per transport, bounded waits, the colocated
sleep/wake order, IPC handle merging, queued loads, and the errors the loop sees. Ray actors of small
fake classes stand in for the learner and rollout actors."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import ray

from rlpp.config.loader import load_config
from rlpp.distributed.weight_sync import (
    SYNCS,
    IpcSync,
    NcclSync,
    ObjectStoreSync,
    SyncFailed,
    SyncTimeout,
    WeightSync,
    create_weight_sync,
    wait_all,
)
from rlpp.sync import TRANSPORTS
from rlpp.sync.ipc import merge_update_infos

GPU_VLLM = ["rollout.engine=vllm", "learner.gpus_per_actor=1", "learner.zero_stage=1"]


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

    def busy(self, seconds):
        """A generation batch queued ahead of a weight load."""
        self._record("busy")
        time.sleep(seconds)

    def load_weights(self, weights, version=None):
        self._record("load_weights", sorted(weights), version)

    def set_policy_version(self, version):
        self._record("set_policy_version", version)

    def sync_world_size(self):
        return 1

    def endpoint(self):
        return "127.0.0.1", 1

    def sync_init(self, *args):
        self._record("sync_init", *args)
        return f"metadata from {self.name}"

    def sync_send(self, metadata):
        self._record("sync_send", metadata)

    def sync_receive(self, metadata):
        self._record("sync_receive", metadata)

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

    def offload_states(self):
        self._record("offload_states")


def fake_sync(cfg, learners, rollouts) -> WeightSync:
    def weights():  # as LearnerGroup.weights: every rank takes part, rank 0's result stays in the store
        refs = [a.named_weights.remote() for a in learners]
        ray.get(refs[1:])
        return refs[0]

    return create_weight_sync(cfg, SimpleNamespace(actors=learners, weights=weights), SimpleNamespace(actors=rollouts))


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
    """Colocated: engines sleep before training; a sync has the learner give its memory back, then wakes
    the engines' weights, loads, then wakes the KV cache."""
    cfg = load_config(None, ["rollout.colocate=true", f"trainer.output_dir={tmp_path}"])
    learner, r0 = Recorder.remote("learner"), Recorder.remote("rollout")
    sync = fake_sync(cfg, [learner], [r0])
    sync.release_memory()
    sync.sync(1)
    assert [e[:2] for e in timeline(learner, r0)] == [
        ("rollout", "sleep"), ("learner", "offload_states"), ("rollout", "wake_up"), ("learner", "named_weights"),
        ("rollout", "load_weights"), ("rollout", "wake_up")]
    assert [e[2] for e in timeline(r0) if e[1] == "wake_up"] == [(("weights",),), (("kv_cache",),)]


def test_not_colocated_the_engines_never_sleep(ray_local, tmp_path):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    learner, r0 = Recorder.remote("learner"), Recorder.remote("rollout")
    sync = fake_sync(cfg, [learner], [r0])
    sync.release_memory()
    sync.sync(1)
    assert [e[:2] for e in timeline(learner, r0)] == [("learner", "named_weights"), ("rollout", "load_weights")]


def test_ipc_sync_merges_every_ranks_handles_and_releases_them(ray_local, tmp_path):
    cfg = load_config(None, ["rollout.colocate=true", "rollout.engine=vllm", "learner.gpus_per_actor=1",
                             "learner.num_actors=2", "rollout.num_actors=2", "learner.zero_stage=2",
                             f"trainer.output_dir={tmp_path}"])
    assert cfg.weight_sync == "ipc"
    learners = [Recorder.remote("gpu0"), Recorder.remote("gpu1")]
    rollouts = [Recorder.remote("engine0"), Recorder.remote("engine1", fail_on="sync_receive_ipc")]
    sync = fake_sync(cfg, learners, rollouts)
    with pytest.raises(SyncFailed, match=r"(?s)the CUDA IPC weight sync failed on rollout actor 1: .*engine1 failed"):
        sync.sync(1)
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


# --- one class per transport, chosen by the resolved rollout.weight_sync -----------------------------


@pytest.mark.parametrize("overrides, cls", [
    ([], ObjectStoreSync),  # auto on CPU
    (["rollout.weight_sync=object_store", *GPU_VLLM], ObjectStoreSync),
    (GPU_VLLM, NcclSync),  # auto: vLLM on GPUs
    ([*GPU_VLLM, "trainer.mode=pipelined"], ObjectStoreSync),  # auto: loads must queue between batches
    ([*GPU_VLLM, "rollout.colocate=true"], IpcSync),  # auto: the engine shares the learner's GPU
    (["rollout.weight_sync=nccl", *GPU_VLLM], NcclSync),
])
def test_the_transport_class_is_chosen_by_the_resolved_weight_sync(tmp_path, overrides, cls):
    cfg = load_config(None, [*overrides, f"trainer.output_dir={tmp_path}"])
    assert SYNCS[cfg.weight_sync] is cls
    assert set(SYNCS) == set(TRANSPORTS)
    if cls is not NcclSync:  # NcclSync joins its group on creation (below, with actors)
        assert type(create_weight_sync(cfg, SimpleNamespace(actors=[]), SimpleNamespace(actors=[]))) is cls


def test_nccl_sync_joins_once_then_broadcasts_and_records_the_version(ray_local, tmp_path):
    cfg = load_config(None, [*GPU_VLLM, f"trainer.output_dir={tmp_path}"])
    learners, rollouts = [Recorder.remote("rank0"), Recorder.remote("rank1")], [Recorder.remote("engine")]
    sync = fake_sync(cfg, learners, rollouts)
    assert isinstance(sync, NcclSync) and sync.metadata == "metadata from rank0"
    assert not sync.restartable and "weight_sync=nccl" in sync.cannot_resize
    sync.push(3)  # both sides at once: push is the blocking sync
    sync.wait_pushed(block=False)
    events = timeline(*learners, *rollouts)
    assert ("engine", "sync_init", ("127.0.0.1", 1, 1, 2)) in events  # after the sender: rank offset 1 of 2
    assert {e[0] for e in events if e[1] == "sync_send"} == {"rank0", "rank1"}  # every rank takes part
    assert [e[1:] for e in events if e[0] == "engine"][-2:] == [
        ("sync_receive", ("metadata from rank0",)), ("set_policy_version", (3,))]


def test_colocation_wraps_every_transport_the_same_way(ray_local, tmp_path):
    """IPC, colocated: the learner offloads, wake the weights, load, wake the KV cache, then record the
    version; push syncs."""
    cfg = load_config(None, [*GPU_VLLM, "rollout.colocate=true", f"trainer.output_dir={tmp_path}"])
    learner, engine = Recorder.remote("gpu0"), Recorder.remote("engine0")
    sync = fake_sync(cfg, [learner], [engine])
    assert "rollout.colocate=true" in sync.cannot_resize
    sync.release_memory()
    sync.push(2)
    assert [e[:2] for e in timeline(learner, engine)] == [
        ("engine0", "sleep"), ("gpu0", "offload_states"), ("engine0", "wake_up"), ("gpu0", "ipc_export"),
        ("engine0", "sync_receive_ipc"), ("gpu0", "ipc_release"), ("engine0", "wake_up"), ("engine0", "set_policy_version")]
    assert timeline(engine)[-1] == ("engine0", "set_policy_version", (2,))


# --- queued loads (push / wait_pushed) and the errors the loop sees ----------------------------------


def test_push_queues_one_load_per_actor_behind_its_batches(ray_local, tmp_path):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    learner, r0, r1 = Recorder.remote("learner"), Recorder.remote("r0"), Recorder.remote("r1")
    sync = fake_sync(cfg, [learner], [r0, r1])
    r0.busy.remote(3.0)  # a batch generating on r0
    sync.push(4)
    sync.wait_pushed(block=False)  # returns at once: r0's load waits behind its batch
    returned = time.monotonic()
    sync.wait_pushed()
    waited = time.monotonic()
    events = ray.get(r0.events.remote())
    assert [e[2:] for e in events] == [("busy", ()), ("load_weights", (["w"], 4))]
    assert returned < events[1][0] < waited  # only the blocking wait waited for the load
    assert ("r1", "load_weights", (["w"], 4)) in timeline(r1)


def test_a_failed_queued_load_raises_sync_failed_and_an_unfinished_one_stays_pending(ray_local, tmp_path):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    learner, ok, bad = Recorder.remote("learner"), Recorder.remote("ok"), Recorder.remote("bad", fail_on="load_weights")
    sync = fake_sync(cfg, [learner], [ok, bad])
    bad.busy.remote(2.0)
    sync.push(1)
    sync.wait_pushed(block=False)  # bad's load has not run yet: nothing to report, it stays pending
    with pytest.raises(SyncFailed, match=r"(?s)a queued weight load failed on rollout actor 1: .*bad failed in load_weights") as e:
        sync.wait_pushed()
    assert isinstance(e.value.__cause__, ray.exceptions.RayError)
    sync.wait_pushed()  # reported once: nothing is pending any more


def test_a_newer_push_supersedes_the_pending_loads(ray_local, tmp_path):
    """After a rollout failure the loop pushes again; a load lost with the failed actor is not reported
    a second time: each actor runs its calls in order, so the newest load alone decides its weights."""
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    learner, r0 = Recorder.remote("learner"), Recorder.remote("r0", fail_on="load_weights")
    sync = fake_sync(cfg, [learner], [r0])
    r0.busy.remote(1.0)
    sync.push(1)  # will fail
    r1 = Recorder.remote("r1")
    sync.rollouts.actors = [r1]  # the failed actor replaced (as a restart would)
    sync.push(2)
    sync.wait_pushed()
    assert ("r1", "load_weights", (["w"], 2)) in timeline(r1)


def test_a_killed_rollout_actor_surfaces_as_sync_failed_never_as_a_ray_error(ray_local, tmp_path):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    learner, dead, alive = Recorder.remote("learner"), Recorder.remote("dead"), Recorder.remote("alive")
    sync = fake_sync(cfg, [learner], [alive, dead])
    ray.kill(dead, no_restart=True)
    sync.push(1)
    with pytest.raises(SyncFailed, match="a queued weight load failed on rollout actor 1") as e:
        sync.wait_pushed()
    assert not isinstance(e.value, ray.exceptions.RayError)
    assert isinstance(e.value.__cause__, ray.exceptions.RayActorError)
    with pytest.raises(SyncFailed, match="the object-store weight sync failed on rollout actor 1") as e:
        sync.sync(2)
    assert not isinstance(e.value, ray.exceptions.RayError)


def test_a_killed_learner_rank_surfaces_as_sync_failed(ray_local, tmp_path):
    cfg = load_config(None, [f"trainer.output_dir={tmp_path}"])
    rank0, rank1, r0 = Recorder.remote("rank0"), Recorder.remote("rank1"), Recorder.remote("r0")
    sync = fake_sync(cfg, [rank0, rank1], [r0])
    ray.kill(rank1, no_restart=True)
    with pytest.raises(SyncFailed, match="packing the learner's weights failed") as e:
        sync.push(1)
    assert isinstance(e.value.__cause__, ray.exceptions.RayActorError)
