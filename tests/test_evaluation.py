"""Evaluation shared by `rlpp eval` and the trainer: the unbiased pass@k, CIs, breakdowns, the command."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from rlpp.data.problems import ProblemSet
from rlpp.evaluation import evaluate, format_report, pass_at_k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of k-subsets of n samples (c correct) holding a correct one, by enumeration."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n, k", [(1, 1), (4, 1), (4, 2), (6, 3), (8, 8)])
def test_pass_at_k_is_the_unbiased_estimator(n, k):
    c = np.arange(n + 1)
    want = [brute_pass_at_k(n, int(ci), k) for ci in c]
    np.testing.assert_allclose(pass_at_k(n, c, k), want, atol=1e-12)
    with pytest.raises(ValueError, match=r"pass@9 needs 1 <= k <= samples per problem \(8\)"):
        pass_at_k(8, c, 9)


def fake_generate(correct_greedy, correct_sampled):
    """A RolloutGroup.generate stand-in: rewards from fixed tables, recording the sampling asked for."""
    calls = []

    def generate(split, ids, sampling):
        calls.append(sampling)
        table = correct_greedy if sampling.temperature == 0 else correct_sampled
        return SimpleNamespace(rewards=np.asarray(table, dtype=float)[ids][:, : sampling.n])

    return generate, calls


def test_evaluate_greedy_pass_at_k_cis_and_breakdowns():
    problems = ProblemSet(prompts=[f"p{i}" for i in range(4)], answers=["a"] * 4, levels=np.array([0, 0, 1, 1]),
                          groups=["Algebra", "Algebra", "Number Theory", "Algebra"])
    greedy = [[1], [0], [1], [1]]
    sampled = [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    generate, calls = fake_generate(greedy, sampled)
    m, records = evaluate(generate, problems, "eval", max_new_tokens=8, threshold=0.5, k=[1, 2], seed=3)
    assert [(c.n, c.temperature, c.seed) for c in calls] == [(1, 0.0, None), (2, 1.0, 3)]  # samples: max(k)
    assert m["eval/accuracy"] == 0.75 and m["eval/accuracy_level0"] == 0.5 and m["eval/accuracy_level1"] == 1.0
    assert m["eval/accuracy_group_Algebra"] == pytest.approx(2 / 3) and m["eval/accuracy_group_Number_Theory"] == 1.0
    # with 2 samples (the first two columns): c = 2, 0, 1, 2
    assert m["eval/pass@1"] == pytest.approx(np.mean([1, 0, 0.5, 1]))
    assert m["eval/pass@2"] == pytest.approx(np.mean([1, 0, 1, 1]))
    sd = np.std([1, 0, 1, 1], ddof=1)
    assert m["eval/accuracy_ci95"] == pytest.approx(3.182446 * sd / 2, rel=1e-4)  # t(0.975, 3)
    assert records[1] == {"id": 1, "correct": False, "level": 0, "group": "Algebra", "samples_correct": 0}
    text = format_report({"model": "m", "problems": 4, "split": "eval", "source": "s", "engine": "hf",
                          "samples": 2, "temperature": 1.0, "k": [1, 2], "metrics": m})
    assert "greedy accuracy" in text and "pass@2" in text and "level1" in text and "±" in text


def test_greedy_only_asks_for_one_call():
    problems = ProblemSet(prompts=["p"] * 3, answers=["a"] * 3)
    generate, calls = fake_generate([[1], [1], [0]], None)
    m, _ = evaluate(generate, problems, "dev", max_new_tokens=8, threshold=0.5)
    assert len(calls) == 1 and m["dev/accuracy"] == pytest.approx(2 / 3) and not any("pass@" in k for k in m)
    assert math.isfinite(m["dev/accuracy_ci95"])


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["model.lora.rank=8", "learner.lr=1e-2"]], ids=["full", "lora"])
def test_rlpp_eval_on_a_checkpoint_written_by_rlpp_train(tmp_path, small_run, extra):
    """A checkpoint of `rlpp train` loads directly: its run's config gives data and engine; greedy and
    pass@k through the HF rollout actor, a table on stdout, JSON beside the checkpoint; and the trainer's
    own evaluations carry the same metrics (same code). A LoRA run's checkpoint too: its top holds the
    merged weights the engines had, its adapters sit in adapter/."""
    out = tmp_path / "run"
    train = subprocess.run([sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", *small_run,
                            "trainer.steps=2", "trainer.eval_every=0", f"trainer.output_dir={out}", *extra],
                           capture_output=True, text=True, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = out / "checkpoints" / "step_000002"
    ev = subprocess.run([sys.executable, "-m", "rlpp.cli", "eval", str(ckpt), "eval.k=[1,4]", "eval.samples=4"],
                        capture_output=True, text=True, timeout=900)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "greedy accuracy" in ev.stdout and "pass@4" in ev.stdout and "level0" in ev.stdout
    report = json.loads((ckpt / "eval_eval.json").read_text())
    m = report["metrics"]
    assert report["problems"] == 100 and report["engine"] == "hf" and report["samples"] == 4
    assert 0 <= m["eval/pass@1"] <= m["eval/pass@4"] <= 1 and len(report["per_problem"]) == 100
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "eval/accuracy" in x]
    assert m["eval/accuracy"] == pytest.approx(logged[-1]["eval/accuracy"])  # the same greedy evaluation
    assert "eval/accuracy_ci95" in logged[-1]
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file() == bool(extra)

    # The README's command right after a run: `rlpp eval RUN_DIR` takes the run folder (its final model/)
    # (LoRA's adapters stay in the checkpoint: model/ is the merged model alone.)
    assert sorted(p.name for p in (out / "model").iterdir()) == sorted(
        p.name for p in ckpt.iterdir() if p.name not in ("deepspeed", "buffer.pt", "trainer.json", "eval_eval.json", "adapter"))
    ev = subprocess.run([sys.executable, "-m", "rlpp.cli", "eval", str(out)], capture_output=True, text=True, timeout=900)
    assert ev.returncode == 0, ev.stderr[-3000:]
    run_report = json.loads((out / "model" / "eval_eval.json").read_text())
    assert run_report["metrics"]["eval/accuracy"] == pytest.approx(m["eval/accuracy"])  # the final model, the run's config


def test_rlpp_eval_of_a_path_that_does_not_exist_says_so(tmp_path):
    missing = tmp_path / "runs" / "nope"
    ev = subprocess.run([sys.executable, "-m", "rlpp.cli", "eval", str(missing)], capture_output=True, text=True,
                        timeout=300)
    assert ev.returncode != 0
    assert f"{missing}: no such folder" in ev.stderr and "huggingface" not in ev.stderr.lower()
