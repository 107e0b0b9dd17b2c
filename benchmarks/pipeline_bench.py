"""Pipelined against sync training on the tiny default: steps/s and rollouts/s, measured in one run.

Each configuration runs ``rlpp train`` (tiny default, warm start cached) for ``--steps`` steps, the
configurations alternating, ``--reps`` times each; a run's figure is the median of its logged
``time/step`` (the driver's wall time per step, evaluation excluded) over the steps after the first
``--skip``. Reports the median over reps of steps/s and rollouts/s, each configuration's ratio to sync
measured in the same run, and the learner/rollout idle fractions the runs logged.

    python benchmarks/pipeline_bench.py --steps 40 --reps 3

Run it alone on the machine. Each mode runs at its automatic torch thread count (2 per actor in sync
mode, 1 per actor in pipelined mode on this machine's CPU reservations); ``sync_1thread`` and
``pipelined_k1_2threads`` swap them, ``--threads N`` forces N everywhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"sync": ["trainer.mode=sync"],
           "sync_1thread": ["trainer.mode=sync", "learner.torch_threads=1", "rollout.torch_threads=1"],
           "pipelined_k1": ["trainer.mode=pipelined", "trainer.max_staleness=1"],
           "pipelined_k2": ["trainer.mode=pipelined", "trainer.max_staleness=2"],
           "pipelined_k1_2threads": ["trainer.mode=pipelined", "trainer.max_staleness=1", "learner.torch_threads=2",
                                     "rollout.torch_threads=2"]}
"""Each mode at its automatic thread count (``Config.torch_threads``: 2 per actor in sync mode, the actor's CPU
reservation, 1 here, in pipelined mode), and each at the other's count."""


def one_run(name: str, steps: int, skip: int, threads: int | None, out: Path) -> dict:
    extra = [f"learner.torch_threads={threads}", f"rollout.torch_threads={threads}"] if threads else []  # last wins
    cmd = [sys.executable, "-m", "rlpp.cli", "train", str(ROOT / "configs/tiny.yaml"), *CONFIGS[name], *extra,
           f"trainer.steps={steps}", "trainer.eval_every=0", f"trainer.output_dir={out}", "log.progress_bar=false",
           "log.tensorboard=false", "log.buffer_snapshots=false"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    from rlpp.metrics import read_metrics

    rows = [r for r in read_metrics(out / "metrics.jsonl") if "time/step" in r][skip:]
    step_s = statistics.median(r["time/step"] for r in rows)
    rollouts = [b["rollouts"] - a["rollouts"] for a, b in zip(rows, rows[1:])]
    per_step = statistics.median(rollouts) if rollouts else float("nan")
    return {"steps_per_s": 1.0 / step_s, "rollouts_per_s": per_step / step_s, "process_wall_s": wall,
            "learner_idle": statistics.median(r.get("time/learner_idle_frac", float("nan")) for r in rows),
            "rollout_idle": statistics.median(r.get("time/rollout_idle_frac", float("nan")) for r in rows),
            "staleness": statistics.mean(r.get("rollout/staleness", 0.0) for r in rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=3, help="first steps left out (caches warm up)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per actor in every config (0: each config's)")
    ap.add_argument("--configs", default="sync,pipelined_k1,pipelined_k2", help=f"any of {', '.join(CONFIGS)}")
    ap.add_argument("--json")
    args = ap.parse_args()
    names = args.configs.split(",")
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for name in names:  # alternating, so drift over the run hits every configuration alike
                res = one_run(name, args.steps, args.skip, args.threads or None, Path(tmp) / f"{name}_{rep}")
                results[name].append(res)
                print(f"rep {rep} {name}: {res['steps_per_s']:.2f} steps/s, learner idle {res['learner_idle']:.2f}, "
                      f"rollout idle {res['rollout_idle']:.2f}", flush=True)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    base = med.get("sync")
    print(f"\n{args.steps} steps x {args.reps} reps (medians), threads per actor: {args.threads or 'config'}")
    print("| config | steps/s | rollouts/s | × sync | learner idle | rollout idle | mean staleness |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, m in med.items():
        ratio = m["steps_per_s"] / base["steps_per_s"] if base else float("nan")
        print(f"| {n} | {m['steps_per_s']:.2f} | {m['rollouts_per_s']:.0f} | {ratio:.2f}× | {m['learner_idle']:.2f} "
              f"| {m['rollout_idle']:.2f} | {m['staleness']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": med, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
