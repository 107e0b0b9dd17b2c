"""``rlpp ablate``'s runner with a stand-in for ``rlpp train`` (tests/ablate/fake_train.py): parallel
runs, a failed run reported with its log while the rest go on, resume skipping finished runs, and a
finished run with a different config refused."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from ablate_helpers import spec_text

from rlpp.ablate import runner
from rlpp.ablate.spec import SpecError, load_spec

FAKE = str(Path(__file__).with_name("fake_train.py"))


@pytest.fixture
def fake_train(monkeypatch):
    monkeypatch.setattr(runner, "train_command", lambda base, overrides: [sys.executable, FAKE, "train", base, *overrides])


def test_runs_fail_resume_and_report(tmp_path, fake_train, caplog):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform", "prioritized": "prioritized", "per": "per"},
                              budget=160, extra="parallel: 2\n"))
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="rlpp.ablate.runner")
    assert runner.run_ablation(load_spec(path)) == 1  # the per arm fails on purpose
    text = caplog.text
    assert "FAILED per/seed_0 (exit code 3)" in text and str(out / "per" / "seed_0" / "run.log") in text
    assert "crashed on purpose" in (out / "per" / "seed_0" / "run.log").read_text()
    for arm in ("uniform", "prioritized"):
        for seed in (0, 1):
            assert (out / arm / f"seed_{seed}" / "summary.json").is_file()
            assert "fake train:" in (out / arm / f"seed_{seed}" / "run.log").read_text()
    assert (out / "ablation.yaml").is_file() and (out / "report.md").is_file()
    assert "| per | 0 | failed |" in (out / "report.md").read_text()

    caplog.clear()
    stamp = (out / "uniform" / "seed_0" / "summary.json").stat().st_mtime_ns
    assert runner.run_ablation(load_spec(path)) == 1
    assert "skip uniform/seed_0: finished" in caplog.text and "skip prioritized/seed_1: finished" in caplog.text
    assert "start uniform" not in caplog.text and "start per/seed_0" in caplog.text
    assert "removing the unfinished run" in caplog.text
    assert (out / "uniform" / "seed_0" / "summary.json").stat().st_mtime_ns == stamp

    # a finished run made under other settings is never mixed into the comparison
    with pytest.raises(SpecError, match="finished with a different training config"):
        runner.run_ablation(load_spec(path, ["budget_rollouts=320"]))

    # ...but the same run copied from another ablation (a learning-rate sweep's chosen run) is reused
    other = tmp_path / "other.yaml"
    other.write_text(spec_text(tmp_path / "out2", {"uniform": "uniform"}, budget=160))
    (tmp_path / "out2" / "uniform").mkdir(parents=True)
    import shutil

    shutil.copytree(out / "uniform" / "seed_0", tmp_path / "out2" / "uniform" / "seed_0")
    caplog.clear()
    runner.run_ablation(load_spec(other))
    assert "skip uniform/seed_0: finished" in caplog.text and "start uniform/seed_1" in caplog.text


def test_bad_arm_fails_before_any_run(tmp_path, fake_train):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(tmp_path / "out", {"uniform": "uniform", "typo": "prioritised"}))
    with pytest.raises(SpecError, match=r"arms.typo .*buffer.sampler must be one of"):
        runner.run_ablation(load_spec(path))
    assert not (tmp_path / "out").exists()


def test_parallel_gpu_runs_get_disjoint_devices(tmp_path, monkeypatch):
    """Without RAY_ADDRESS each run starts a private Ray that would see every GPU: runs at once get
    disjoint CUDA_VISIBLE_DEVICES instead, and a machine too small for `parallel` runs is an error."""
    from rlpp.config.loader import load_config

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    gpu = load_config("configs/qwen2.5-math-1.5b.yaml", [f"trainer.output_dir={tmp_path}"])  # 1 learner + 2 rollout GPUs
    assert runner.gpus_needed(gpu, True) == 3
    assert runner.gpu_slots([gpu], 2, [str(i) for i in range(8)]) == [["0", "1", "2"], ["3", "4", "5"]]
    with pytest.raises(SpecError, match="parallel=3 runs of 3 GPU.s. each need 9 GPUs; this machine has 8"):
        runner.gpu_slots([gpu], 3, [str(i) for i in range(8)])
    assert runner.gpu_slots([gpu], 1, ["0", "1", "2"]) is None  # one at a time: nothing to share out
    cpu = load_config(None, [f"trainer.output_dir={tmp_path}"])
    assert runner.gpus_needed(cpu, True) == 0 and runner.gpu_slots([cpu], 4, []) is None
    # A CPU learner with vLLM rollouts: on a GPU machine the actor groups give each engine its GPU (the
    # cluster has GPUs), so its runs need slots too; on a CPU machine they run on CPU.
    cpu_learner = load_config(None, ["rollout.engine=vllm", "rollout.num_actors=2", f"trainer.output_dir={tmp_path}"])
    assert runner.gpus_needed(cpu_learner, True) == 2 and runner.gpus_needed(cpu_learner, False) == 0
    assert runner.gpu_slots([cpu_learner], 2, [str(i) for i in range(4)]) == [["0", "1"], ["2", "3"]]
    assert runner.gpu_slots([cpu_learner], 2, []) is None
    colocated = load_config(None, ["rollout.colocate=true", "rollout.engine=vllm", "learner.gpus_per_actor=1",
                                   "learner.zero_stage=1", f"trainer.output_dir={tmp_path}"])
    assert runner.gpus_needed(colocated, True) == 1
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # inside a Ray job, Ray shares the cluster out
    assert runner.gpu_slots([gpu], 4, []) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert runner.visible_gpus() == ["4", "6"]


def test_each_run_is_started_on_its_slot(tmp_path, fake_train, monkeypatch):
    """The slots reach the runs' environments, and a finished run's slot goes to the next run."""
    seen = []
    real = runner.subprocess.Popen

    def spy(cmd, **kw):
        seen.append(kw["env"].get("CUDA_VISIBLE_DEVICES"))
        return real(cmd, **kw)

    monkeypatch.setattr(runner.subprocess, "Popen", spy)
    jobs = [runner.Job("a", s, tmp_path / f"a{s}", [sys.executable, "-c", "pass"]) for s in range(3)]
    runner._run_all(jobs, 2, [["0"], ["1"]])
    assert sorted(seen[:2]) == ["0", "1"] and seen[2] in ("0", "1")
