"""Exact continuation: a run killed with SIGKILL and resumed with trainer.resume=auto logs the same
per-step metrics and ends with the same buffer state as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from rlpp.metrics import read_metrics

# Wall-clock measurements differ between any two runs (and start-up is logged with each process's first
# step, so a resumed run logs it again); everything else must match exactly.
VOLATILE = ("time/", "startup/", "rollout/tokens_per_s")


def command(out, small_run, *extra):
    return [sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", *small_run, f"trainer.output_dir={out}",
            "trainer.steps=12", "trainer.eval_every=4", "trainer.checkpoint_every=4", "trainer.keep_last=2",
            "buffer.retest.every_steps=3", "learner.lr=3e-4", *extra]


def stable(records):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in records]


LORA = ["model.lora.rank=8", "model.lora.alpha=16"]


@pytest.mark.slow
@pytest.mark.parametrize("mode, extra", [("sync", []), ("pipelined", []), ("sync", LORA)], ids=["sync", "pipelined", "lora"])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, small_run, mode, extra):
    """Pipelined (k = 2) too: a checkpoint drains the pipeline, so the resumed run replays the schedule. And
    LoRA: its checkpoint holds the adapters and their optimizer state, the frozen base is rebuilt."""
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    small_run = [*small_run, f"trainer.mode={mode}", "trainer.max_staleness=2", *extra]
    subprocess.run(command(straight, small_run), check=True, capture_output=True, timeout=900)

    proc = subprocess.Popen(command(broken, small_run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    metrics = broken / "metrics.jsonl"
    while time.time() < deadline:  # kill once step 6 is logged: after the step-4 checkpoint, before step 8's
        if metrics.exists() and any(r["step"] >= 6 for r in read_metrics(metrics)):
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (broken / "summary.json").exists()
    assert [p.name for p in sorted((broken / "checkpoints").iterdir()) if not p.name.endswith(".tmp")] == ["step_000004"]

    resumed = subprocess.run(command(broken, small_run, "trainer.resume=auto"), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr

    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(broken / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b]  # nothing logged twice, nothing missing
    assert stable(a) == stable(b)
    sa = torch.load(straight / "checkpoints/step_000012/buffer.pt", weights_only=False)
    sb = torch.load(broken / "checkpoints/step_000012/buffer.pt", weights_only=False)
    for k in sa["arrays"]:
        np.testing.assert_array_equal(sa["arrays"][k], sb["arrays"][k])
    assert sa["rng"] == sb["rng"] and sa["counters"] == sb["counters"]
    if extra == LORA:
        assert (broken / "checkpoints/step_000012/adapter/adapter_model.safetensors").is_file()
    if mode == "pipelined":  # k = 2 ahead, drained at each checkpoint (every 4 steps)
        assert [r["rollout/staleness"] for r in b if "rollout/staleness" in r] == [0, 1, 2, 2] * 3
    # keep_last=2: only the two newest complete checkpoints remain.
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["step_000008", "step_000012"]


def test_resume_refuses_an_incompatible_checkpoint(tmp_path):
    from rlpp import checkpoint

    ckpt = tmp_path / "checkpoints" / "step_000004"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer.json").write_text('{"format": 999, "step": 4}')
    assert checkpoint.resolve("auto", tmp_path) == ckpt
    with pytest.raises(checkpoint.CheckpointError, match="format 999, this rlpp reads format 1"):
        checkpoint.read_state(ckpt)
    half = tmp_path / "checkpoints" / "step_000008.tmp"
    half.mkdir()
    (half / "trainer.json").write_text("{}")
    assert checkpoint.resolve("auto", tmp_path) == ckpt  # a half-written folder is never picked up
    with pytest.raises(checkpoint.CheckpointError, match="not a complete checkpoint"):
        checkpoint.resolve(str(tmp_path / "nowhere"), tmp_path)
    assert checkpoint.resolve("auto", tmp_path / "empty") is None
