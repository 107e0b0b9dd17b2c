"""A miniature ablation through the CLI, as a user runs it: 2 arms x 2 seeds of a shrunken tiny config,
real training. Checks the report files, equal budgets, resume (finished runs skipped) and ``rlpp report``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time

import pytest
import yaml
from ablate_helpers import png_size

BUDGET, STEP = 320, 64  # 8 problems x 8 samples a step: 5 steps a run


def rlpp(*args, timeout=2400) -> subprocess.CompletedProcess:
    """Run the CLI; past ``timeout`` stop it with SIGTERM, which it passes on to its runs."""
    # One torch thread per process: on a busy 2-core machine spinning thread pools slow a run many-fold.
    proc = subprocess.Popen([sys.executable, "-m", "rlpp.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=120)
        pytest.fail(f"rlpp {' '.join(args)} ran past {timeout} s:\n{err[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_miniature_ablation(tmp_path, small_run):
    out = tmp_path / "out"
    common = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in small_run) if k != "log.progress_bar"}
    common.update({"trainer.eval_every": 2, "learner.lr": 1e-3, "rollout.torch_threads": 1, "learner.torch_threads": 1})
    spec = {"base": "configs/tiny.yaml", "budget_rollouts": BUDGET, "seeds": [0, 1], "output_dir": str(out), "parallel": 2,
            "overrides": common,
            "arms": {"prioritized": {"buffer.sampler": "prioritized"}, "uniform": {"buffer.sampler": "uniform"}}}
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(spec))

    proc = rlpp("ablate", str(path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("report.md", "summary.csv", "runs.csv", "ablation.yaml"):
        assert (out / name).stat().st_size > 200, name
    pngs = {p.name: p for p in (out / "plots").glob("*.png")}
    assert set(pngs) == {"accuracy.png", "zero_variance.png", "mean_abs_adv.png", "pools.png",
                         "heatmap_prioritized.png", "heatmap_uniform.png"}
    for p in pngs.values():
        assert png_size(p) == (800, 500) and p.stat().st_size > 10_000, p.name

    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 4 and all(r["status"] == "finished" for r in runs)
    used = {int(r["rollouts"]) for r in runs}
    assert len(used) == 1 and BUDGET <= used.pop() < BUDGET + STEP  # equal budgets across arms and seeds
    assert all(r["budget_ok"] == "True" for r in runs)
    with open(out / "summary.csv") as f:
        arms = {r["arm"]: r for r in csv.DictReader(f)}
    assert set(arms) == {"prioritized", "uniform"} and arms["uniform"]["seeds_finished"] == "2"
    report = (out / "report.md").read_text()
    assert "Budget check: equal." in report and "## Findings" in report and "**prioritized**" in report

    t0 = time.perf_counter()
    again = rlpp("ablate", str(path))
    assert again.returncode == 0, again.stderr[-4000:]
    assert time.perf_counter() - t0 < 120  # nothing trained again
    for arm in ("prioritized", "uniform"):
        for seed in (0, 1):
            assert f"skip {arm}/seed_{seed}: finished" in again.stderr
    assert "start " not in again.stderr

    (out / "report.md").unlink()
    for p in pngs.values():
        p.unlink()
    assert rlpp("report", str(out)).returncode == 0
    assert (out / "report.md").read_text().count("| finished |") == 4
    assert all(p.is_file() for p in pngs.values())
