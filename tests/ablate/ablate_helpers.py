"""Shared helpers for the ablation tests: a small training config and fake run folders written the way
``rlpp train`` writes them (config.yaml, metrics.jsonl, summary.json, buffer snapshots), no training."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

SMALL = {"data.synthetic.num_train": 60, "data.synthetic.num_dev": 20, "data.synthetic.num_eval": 20,
         "trainer.batch_size": 4, "rollout.group_size": 4, "buffer.retest.per_round": 2}
"""Training overrides that keep a fake run's snapshots small (4 problems x 4 samples = 16 rollouts a step)."""


def spec_text(out: Path, arms: dict[str, str], budget: int = 160, seeds=(0, 1), extra: str = "") -> str:
    """An ablation YAML over configs/tiny.yaml with the SMALL overrides and one sampler per arm."""
    arm_lines = "\n".join(f"  {name}: {{buffer.sampler: {sampler}}}" for name, sampler in arms.items())
    common = ", ".join(f"{k}: {v}" for k, v in SMALL.items())
    return (f"base: configs/tiny.yaml\nbudget_rollouts: {budget}\nseeds: {list(seeds)}\noutput_dir: {out}\n"
            f"overrides: {{{common}}}\narms:\n{arm_lines}\n{extra}")


def write_run(folder: Path, overrides: list[str], accuracy: list[float], *, eval_every: int = 2,
              generated: list[int] | None = None, zero_var: float = 0.5, abs_adv: float = 0.4,
              forgotten: int = 1, unlocked: int = 2, seconds: float = 3.0, base: str = "configs/tiny.yaml",
              summary_extra: dict | None = None, skipped: int = 0) -> None:
    """A finished run folder: ``accuracy[k]`` is the held-out accuracy at evaluation k (step k * eval_every,
    the last one at the final step); ``generated`` the rollouts of each step (default B x G every step);
    the logged zero-variance share and mean |adv| are over the training batch of B groups."""
    from rlpp.config.loader import load_config, to_yaml

    cfg = load_config(base, overrides)
    folder = Path(folder)
    (folder / "buffer").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    b, g, n = cfg.trainer.batch_size, cfg.rollout.group_size, cfg.data.synthetic.num_train
    steps = (len(accuracy) - 1) * eval_every
    generated = generated or [b * g] * steps
    assert len(generated) == steps
    rollouts = np.cumsum(generated).tolist()
    rng = np.random.default_rng(len(accuracy))
    records, evals = [], {0: 0}
    evals.update({k * eval_every: rollouts[k * eval_every - 1] for k in range(1, len(accuracy))})
    for i, step in enumerate(evals):
        records.append({"step": step, "eval/accuracy": accuracy[i], "rollouts": evals[step],
                        "eval/accuracy_level0": accuracy[i]})
        p_hat = np.where(rng.random(n) < min(1.0, 0.2 + 0.1 * i), rng.random(n), np.nan).astype(np.float32)
        np.savez_compressed(folder / "buffer" / f"step_{step:06d}.npz", p_hat=p_hat, visits=np.zeros(n, np.int64),
                            pool=np.zeros(n, np.int8))
    for step in range(1, steps + 1):
        records.append({"step": step, "rollout/zero_variance_frac": zero_var, "rollout/mean_abs_adv": abs_adv,
                        "train/sequences": int(round((1 - zero_var) * b * g)), "rollout/pass_rate": 0.5,
                        "buffer/heap": n - 10, "buffer/solved": 5, "buffer/unsolved": 5, "buffer/in_flight": 0,
                        "buffer/forgotten": forgotten, "buffer/unlocked": unlocked, "rollouts": rollouts[step - 1],
                        "buffer/skipped": skipped * step, "buffer/updates": b * step,
                        "train/loss": 0.0})
    records.sort(key=lambda r: (r["step"], "eval/accuracy" in r))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"initial_accuracy": accuracy[0], "final_accuracy": accuracy[-1], "best_accuracy": max(accuracy),
               "best_step": int(np.argmax(accuracy)) * eval_every, "steps": steps, "rollouts": rollouts[-1],
               "seconds": seconds, "output_dir": str(folder), "warmstart_dev_accuracy": 0.3, **(summary_extra or {})}
    (folder / "summary.json").write_text(json.dumps(summary))


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its header."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])
