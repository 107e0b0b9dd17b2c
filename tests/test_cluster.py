"""Placement and the elastic rollout pool: impossible requests fail at once naming the keys, a
request that cannot be had now times out instead of hanging, and a running job's rollout pool goes
1 -> 2 -> 1 through ``rlpp scale`` without losing a problem (and a request beyond the cluster is
refused, leaving the pool as it was)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlpp.distributed.local import SINGLE_MACHINE_ENV
from rlpp.distributed.placement import PlacementError, Request, check_fits, release, reserve

ROOT = Path(__file__).resolve().parents[1]


def test_a_request_the_cluster_can_never_hold_fails_at_once_naming_the_keys(ray_local):
    learner = Request("learner", 2, 1, 1, "learner.num_actors, learner.cpus_per_actor, learner.gpus_per_actor")
    rollout = Request("rollout", 1, 0.5, 0, "rollout.num_actors, rollout.cpus_per_actor")
    with pytest.raises(PlacementError, match=r"2 GPU in all, the cluster has 0(.|\n)*learner.gpus_per_actor"):
        check_fits([learner, rollout])
    with pytest.raises(PlacementError, match=r"one rollout actor needs 3 CPU \+ 0 GPU on a single node"):
        check_fits([Request("rollout", 1, 3, 0, "rollout.cpus_per_actor")])
    check_fits([Request("learner", 1, 1, 0, "k"), rollout])  # fits: no error


def test_a_placement_that_cannot_be_had_now_times_out_instead_of_hanging(ray_local):
    free = ray_local.available_resources().get("CPU", 0)
    if free < 1:
        pytest.skip("another test holds this session's CPUs")
    held = reserve("hold-everything", [{"CPU": free}], "STRICT_PACK", 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(PlacementError, match=r"could not place rlpp-rollout-9 .* within 1 s"):
            reserve("rlpp-rollout-9", [{"CPU": 1.0}], "STRICT_PACK", 1.0)
        assert time.monotonic() - t0 < 15
    finally:
        release(held)
    # the timed-out group was removed: the CPUs are free again for the next request
    release(reserve("after", [{"CPU": 1.0}], "STRICT_PACK", 30))


def test_scale_without_a_running_job_says_so(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rlpp.cli", "scale", str(tmp_path), "--rollout-actors", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "control.json not found" in r.stderr
    (tmp_path / "control.json").write_text('{"address": "127.0.0.1:1"')  # cut short
    r = subprocess.run([sys.executable, "-m", "rlpp.cli", "scale", str(tmp_path), "--rollout-actors", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"{tmp_path / 'control.json'}: not a control file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "rlpp.cli", "scale", str(tmp_path), "--rollout-actors", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "must be >= 1" in r.stderr


def test_loopback_addresses_are_recognised():
    from rlpp.distributed.control import is_loopback

    for address in ("127.0.0.1:6379", "localhost:6379", "[::1]:6379", "ray://127.0.0.1:10001", "127.8.9.1:1"):
        assert is_loopback(address), address
    for address in ("10.0.0.5:6379", "192.0.2.2:6379", "head-node:6379", "[fd00::2]:6379", "auto"):
        assert not is_loopback(address), address


def _records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for_step(out: Path, step: int, proc, timeout_s: float = 600) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        steps = [r["step"] for r in _records(out) if "rollout/actors" in r]
        if steps and max(steps) >= step:
            return max(steps)
        assert proc.poll() is None, f"training exited early ({proc.returncode}); see {out / 'train.log'}"
        time.sleep(0.5)
    raise AssertionError(f"no step {step} within {timeout_s} s")


def _scale(out: Path, n: int, ok: bool = True) -> str:
    # As from a fresh shell: without the loopback setting a private Ray instance (or this session's
    # ray_local fixture) puts in the environment.
    env = {k: v for k, v in os.environ.items() if k != SINGLE_MACHINE_ENV}
    r = subprocess.run([sys.executable, "-m", "rlpp.cli", "scale", str(out), "--rollout-actors", str(n), "--wait", "300"],
                       capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    return r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "pipelined"])
def test_the_rollout_pool_grows_and_shrinks_mid_run_without_losing_a_problem(small_run, tmp_path, mode):
    out = tmp_path / "run"
    out.mkdir()
    steps, batch = 300, 8
    cmd = [sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", *small_run, f"trainer.steps={steps}",
           f"trainer.mode={mode}",
           "trainer.eval_every=0", "ray.num_cpus=3", "ray.placement_timeout_s=3", "rollout.torch_threads=1", "learner.torch_threads=1",
           f"trainer.output_dir={out}"]
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_for_step(out, 3, proc)
        assert "2 rollout actors" in _scale(out, 2)
        grown = _wait_for_step(out, 0, proc)
        _wait_for_step(out, grown + 3, proc)
        # more than the cluster has room for: refused after the placement timeout, the pool unchanged
        assert "could not place rlpp-rollout-2" in _scale(out, 4, ok=False)
        assert "1 rollout actors" in _scale(out, 1)
        assert proc.wait(timeout=900) == 0, (out / "train.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (out / "train.log").read_text()
    assert "rollout pool resized to 2 actors" in text and "rollout pool resized to 1 actors" in text
    assert "rollout pool not resized to 4" in text
    recs = [r for r in _records(out) if "rollout/actors" in r]
    actors = [int(r["rollout/actors"]) for r in recs]
    # 1 at first, then 2 for a while, then 1 to the end; every step trained on a full batch
    first2, last2 = actors.index(2), len(actors) - 1 - actors[::-1].index(2)
    assert set(actors[:first2]) == {1} and set(actors[first2:last2 + 1]) == {2} and set(actors[last2 + 1:]) == {1}
    assert last2 + 1 < len(actors) and [r["step"] for r in recs] == list(range(1, steps + 1))
    last = recs[-1]
    # No problem lost: every problem sits in exactly one pool (the trainer also ran the buffer's full
    # invariant check before its final save), nothing is left in flight, every draw was answered.
    assert last["buffer/in_flight"] == 0
    assert last["buffer/heap"] + last["buffer/solved"] + last["buffer/unsolved"] == 200
    assert last["buffer/updates"] == steps * batch and last["buffer/released"] == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == steps
    assert not (out / "control.json").exists()  # removed when the job ended
