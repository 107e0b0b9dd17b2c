"""One tiny end-to-end ``rlpp train`` run, as a user starts it, checked through what it logged."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from rlpp.metrics import read_metrics


@pytest.mark.slow
def test_rlpp_train_end_to_end(tmp_path, small_run):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", *small_run, "log.tensorboard=true",
           f"trainer.output_dir={out}", "trainer.steps=12", "trainer.eval_every=6",
           "buffer.retest.every_steps=4", "learner.lr=1e-3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out accuracy after RL" in proc.stdout

    records = read_metrics(out / "metrics.jsonl")
    steps = [r for r in records if "train/loss" in r or "rollout/pass_rate" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    for r in steps:
        pools = [r[f"buffer/{p}"] for p in ("heap", "solved", "unsolved", "in_flight")]
        assert sum(pools) == 200 and r["buffer/in_flight"] == 0  # nothing lost, nothing left in flight
        assert r["rollouts"] == 64 * r["step"]
        if "train/loss" in r:
            assert math.isfinite(r["train/loss"]) and math.isfinite(r["train/grad_norm"])
        for phase in ("rollout", "train", "sync", "buffer"):
            assert r[f"time/{phase}"] >= 0
    assert any("train/loss" in r for r in steps)
    assert steps[-1]["buffer/updates"] == 8 * 12
    # start-up, logged once with the first step: its phases add up to the process age at step 1
    assert [r["step"] for r in records if "startup/total_s" in r] == [1]
    up = steps[0]
    top = sum(v for k, v in up.items() if k.startswith("startup/") and "." not in k and k != "startup/total_s")
    assert up["startup/actors_s"] > 0 and up["startup/total_s"] == pytest.approx(top)
    assert "start-up: " in proc.stderr
    evals = [r for r in records if "eval/accuracy" in r]
    assert [e["step"] for e in evals] == [0, 6, 12]
    assert evals[0]["eval/accuracy"] != evals[-1]["eval/accuracy"]  # the policy moved

    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_accuracy"] == evals[-1]["eval/accuracy"]
    ckpt = out / "checkpoints" / "step_000012"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "buffer.pt", "trainer.json", "deepspeed"):
        assert (ckpt / name).exists(), name
    assert not list((out / "checkpoints").glob("*.tmp"))
    assert list((out / "tensorboard").iterdir())  # TensorBoard events beside the JSONL

    # A fresh (not resumed) run in the same folder starts its metrics afresh instead of interleaving
    # its steps with the earlier run's.
    again = subprocess.run([*cmd, "trainer.steps=2", "trainer.eval_every=0"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "holds metrics of an earlier run" in again.stderr
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "rollout/pass_rate" in r]
    assert steps == [1, 2]


@pytest.mark.slow
def test_dynamic_filling_trains_on_signal_groups_and_charges_every_rollout(tmp_path, small_run):
    """trainer.fill=signal with the thompson sampler: each step keeps up to B groups that carry signal,
    drawing again for the shortfall, and every generated rollout counts toward ``rollouts``."""
    out = tmp_path / "fill"
    cmd = [sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", *small_run, f"trainer.output_dir={out}",
           "trainer.steps=6", "trainer.eval_every=0", "buffer.sampler=thompson", "trainer.fill=signal",
           "trainer.fill_rounds=3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [r for r in read_metrics(out / "metrics.jsonl") if "rollout/pass_rate" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    before = 0
    for r in steps:
        generated = r["rollouts"] - before
        before = r["rollouts"]
        assert generated == 8 * r["rollout/groups_generated"] >= 64  # G = 8; the first draw is B = 8 groups
        assert r["rollout/signal_groups"] <= 8 and 1 <= r["rollout/fill_rounds"] <= 3
        if r["rollout/signal_groups"] < 8:
            assert r["rollout/fill_rounds"] == 3  # a short batch only when the rounds ran out
        if r["rollout/signal_groups"]:
            assert r["rollout/zero_variance_frac"] == 0.0 and r["train/sequences"] == 8 * r["rollout/signal_groups"]
        assert r["buffer/in_flight"] == 0 and r["buffer/updates"] == sum(
            s["rollout/groups_generated"] for s in steps if s["step"] <= r["step"])
    assert any(r["rollout/fill_rounds"] > 1 for r in steps)  # the filling did draw again
