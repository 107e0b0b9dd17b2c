"""Start-up of the tiny default: seconds from process start to its first step, against a baseline commit.

Each run is ``rlpp train configs/tiny.yaml trainer.steps=1`` with the warm start cached (a first,
untimed run caches it). The yardstick is the same for any version of the code: the time from spawning
the process to the log line ``step 0: eval accuracy``, which the trainer writes after the initial
evaluation, right before step 1. Runs of this tree and of ``--baseline`` (a commit, checked out into a
temporary worktree and put first on ``PYTHONPATH``, which the private Ray instance's workers inherit)
alternate ``--reps`` times; the report gives each one's median and this tree / baseline. The phases this
tree logs (``startup/*`` in ``metrics.jsonl``) are shown too.

    python benchmarks/startup_bench.py --reps 5 --baseline 8a524d3

Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "step 0: eval accuracy"


def one_run(tree: Path, out: Path) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", "rlpp.cli", "train", str(tree / "configs/tiny.yaml"), "trainer.steps=1",
           "trainer.eval_every=0", f"trainer.output_dir={out}", "log.progress_bar=false", "log.tensorboard=false"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_step, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if first_step is None and MARK in line:
            first_step = time.perf_counter() - t0
    if proc.wait() != 0 or first_step is None:
        raise RuntimeError(f"run in {tree} failed or never reached its first step:\n{''.join(lines[-30:])}")
    phases: dict = {}
    metrics = out / "metrics.jsonl"
    for row in map(json.loads, metrics.read_text().splitlines()):
        phases.update({k: v for k, v in row.items() if k.startswith("startup/")})
    return first_step, phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--baseline", default="", help="a commit to compare with (default: none)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT}
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                           capture_output=True)
            trees[f"baseline {args.baseline}"] = base
        try:
            one_run(ROOT, Path(tmp) / "warm")  # caches the warm start (same key for both trees)
            times: dict[str, list[float]] = {name: [] for name in trees}
            phases: list[dict] = []
            for rep in range(args.reps):
                for name, tree in trees.items():
                    seconds, ph = one_run(tree, Path(tmp) / f"{rep}-{len(times[name])}-{tree.name}")
                    times[name].append(seconds)
                    if tree == ROOT:
                        phases.append(ph)
                    print(f"  rep {rep}: {name:<22} {seconds:6.2f} s", flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"\nprocess spawn -> first step, tiny default, warm start cached, median of {args.reps}:")
    for name, v in med.items():
        print(f"  {name:<22} {v:6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in times[name])})")
    if args.baseline:
        print(f"  ratio this tree / baseline: {med['this tree'] / med[f'baseline {args.baseline}']:.2f}")
    print("\nthis tree's phases (median s; actors.* are inside actors; process = interpreter, imports, Ray):")
    keys = [k for k in phases[0] if k != "startup/total_s"]
    for k in keys:
        print(f"  {k.removeprefix('startup/').removesuffix('_s'):<28} {statistics.median(p.get(k, 0.0) for p in phases):6.2f}")
    print(f"  {'total (process age)':<28} {statistics.median(p['startup/total_s'] for p in phases):6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"times": times, "median": med, "phases": phases}, indent=1))


if __name__ == "__main__":
    main()
