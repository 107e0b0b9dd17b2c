"""What an ablation's run folders hold, read back for the report: per-run evaluations, per-step series
and summaries, from ``metrics.jsonl``, ``summary.json``, ``config.yaml`` and ``run.json``.

Signal per generated rollout. The trainer logs ``rollout/zero_variance_frac`` and
``rollout/mean_abs_adv`` over the groups of the training batch. A sampler that discards groups before
the batch is formed (``dapo_filter``) generates more than it trains on, so the report charges every
generated rollout: a discarded group counts as zero-variance and as advantage 0. Per step, with
``gen`` rollouts generated, ``n`` samples in the batch (``train/sequences``, divided by the share of
groups kept when zero-variance groups are dropped), zero-variance share ``z`` and mean |advantage| ``a``
over the batch:  zero-variance share of generated = 1 − (1 − z)·n / gen;  mean |adv| per generated
rollout = a·n / gen. When every generated group reaches the batch (n = gen) these are the logged values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rlpp.metrics import read_metrics

POOLS = ("heap", "solved", "unsolved", "in_flight")


@dataclass
class RunResult:
    """One (arm, seed) of an ablation; ``status`` is ``finished``, ``failed`` or ``missing``."""

    arm: str
    seed: int
    folder: Path
    status: str
    summary: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    evals: dict[str, np.ndarray] = field(default_factory=dict)  # step, rollouts, accuracy
    steps: dict[str, np.ndarray] = field(default_factory=dict)  # step, rollouts, generated, zero_var, abs_adv, pools
    seconds: float = math.nan  # wall time of the whole `rlpp train` process (else of its training loop)

    @property
    def log_path(self) -> Path:
        return self.folder / "run.log"

    @property
    def final_rollouts(self) -> int:
        return int(self.summary.get("rollouts", self.steps["rollouts"][-1] if len(self.steps.get("rollouts", [])) else 0))

    @property
    def step_cost(self) -> int:
        """The most rollouts one step of this run generated."""
        gen = self.steps.get("generated")
        return int(gen.max()) if gen is not None and len(gen) else 0

    def last(self, key: str) -> float:
        values = self.steps.get(key)
        return float(values[-1]) if values is not None and len(values) else math.nan

    def zero_var_frac(self) -> float:
        """Zero-variance share of all rollouts generated (discarded groups count as zero-variance)."""
        gen = self.steps["generated"].sum()
        return float(1.0 - self.steps["useful"].sum() / gen) if gen else math.nan

    def total(self, key: str) -> float:
        """Sum of a per-step series over the run (``tokens``: generated, ``trained_tokens``: trained on)."""
        values = self.steps.get(key)
        return float(np.nansum(values)) if values is not None else math.nan

    def draws_per_problem(self) -> float:
        """D = budget / (G x pool): the rollouts spent over the rollouts of one group per training problem."""
        pool, g = self.summary.get("num_problems"), self.summary.get("group_size")
        return self.final_rollouts / (g * pool) if pool and g else math.nan

    def diagnostic(self, key: str) -> float:
        """One of the buffer's end-of-run diagnostics (``summary.json``'s ``diagnostics``), NaN when absent;
        ``skipped_share`` is the share of draws a skipping sampler passed over."""
        if key == "skipped_share":
            skipped, served = self.last("skipped"), self.last("updates")
            return skipped / (skipped + served) if np.isfinite(skipped) and skipped + served > 0 else math.nan
        if key.startswith("pass@"):
            return float(self.summary.get(f"final_{key}", math.nan))
        return float(self.summary.get("diagnostics", {}).get(key, math.nan))

    def mean_abs_adv(self) -> float:
        """Mean |advantage| per rollout generated (discarded groups count as 0)."""
        gen = self.steps["generated"].sum()
        return float(self.steps["sum_abs_adv"].sum() / gen) if gen else math.nan


def load_run(folder: Path, arm: str, seed: int) -> RunResult:
    """Read one run folder; a folder without ``summary.json`` is ``failed`` (or ``missing`` if empty)."""
    folder = Path(folder)
    finished = (folder / "summary.json").is_file()
    metrics = folder / "metrics.jsonl"
    if not finished:
        return RunResult(arm, seed, folder, "failed" if (folder / "run.log").is_file() else "missing")
    run = RunResult(arm, seed, folder, "finished", summary=json.loads((folder / "summary.json").read_text()))
    if (folder / "config.yaml").is_file():
        run.config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    records = read_metrics(metrics) if metrics.is_file() else []
    run.evals = _evals(records)
    run.steps = _steps(records, drop_zero_variance=run.config.get("algo", {}).get("drop_zero_variance", True))
    info = folder / "run.json"
    run.seconds = json.loads(info.read_text())["seconds"] if info.is_file() else float(run.summary.get("seconds", math.nan))
    return run


def _evals(records: list[dict]) -> dict[str, np.ndarray]:
    rows = sorted((r["rollouts"], r["step"], float(r["eval/accuracy"])) for r in records if "eval/accuracy" in r)
    return {"rollouts": np.array([r[0] for r in rows], float), "step": np.array([r[1] for r in rows], int),
            "accuracy": np.array([r[2] for r in rows], float)}


def _steps(records: list[dict], drop_zero_variance: bool) -> dict[str, np.ndarray]:
    rows = [r for r in records if "rollout/pass_rate" in r]
    step = np.array([r["step"] for r in rows], int)
    rollouts = np.array([r["rollouts"] for r in rows], float)
    generated = np.diff(rollouts, prepend=0.0)
    z = np.array([_num(r.get("rollout/zero_variance_frac")) for r in rows])
    a = np.array([_num(r.get("rollout/mean_abs_adv")) for r in rows])
    if all("train/sequences" in r for r in rows):
        seq = np.array([r["train/sequences"] for r in rows], float)
        with np.errstate(divide="ignore", invalid="ignore"):
            n = np.where(z < 1.0, seq / (1.0 - z), 0.0) if drop_zero_variance else seq
        n = np.minimum(np.round(n), generated)
    else:  # without the batch size every generated group is taken to be in the batch
        n = generated
    useful, sum_abs_adv = (1.0 - z) * n, a * n
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"step": step, "rollouts": rollouts, "generated": generated, "useful": useful, "sum_abs_adv": sum_abs_adv,
               "zero_var": 1.0 - useful / generated, "abs_adv": sum_abs_adv / generated}
    out["tokens"] = np.array([_num(r.get("rollout/tokens", 0.0)) for r in rows])
    out["trained_tokens"] = np.array([_num(r.get("train/tokens", 0.0)) for r in rows])
    for key in (*POOLS, "forgotten", "unlocked", "skipped", "updates"):
        out[key] = np.array([_num(r.get(f"buffer/{key}")) for r in rows])
    return out


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def buffer_snapshots(folder: Path) -> list[tuple[int, dict[str, np.ndarray]]]:
    """The ``buffer/step_N.npz`` snapshots of a run, in step order."""
    out = []
    for path in sorted(Path(folder, "buffer").glob("step_*.npz")):
        with np.load(path) as z:
            out.append((int(path.stem.split("_")[1]), {k: z[k] for k in z.files}))
    return out
