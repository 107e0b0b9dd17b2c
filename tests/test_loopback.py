"""Tests and local runs listen on loopback only: every listening socket of a default local `rlpp train`
(its Ray processes and actors included) and of a test-started `ray start --head` is on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
from net_helpers import listening, off_loopback


def tree(pid: int) -> set[int]:
    root = psutil.Process(pid)
    return {pid, *(c.pid for c in root.children(recursive=True))}


@pytest.mark.slow
def test_a_local_rlpp_train_listens_on_loopback_only(tmp_path, small_run):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", *small_run, "trainer.steps=200",
           f"trainer.output_dir={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not ((out / "metrics.jsonl").is_file() and "rollout/pass_rate" in (out / "metrics.jsonl").read_text()):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the run never reached a training step"
            time.sleep(0.5)
        sockets = listening(tree(proc.pid))  # mid-run: buffer, rollout, learner actors and Ray's own processes
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    assert len(sockets) >= 5  # GCS, raylet, agents, actors: the check saw the run's processes
    assert off_loopback(sockets) == []
