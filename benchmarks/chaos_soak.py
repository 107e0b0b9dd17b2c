"""Chaos soak: a pipelined run (max_staleness 2, 2 rollout actors, 2 reward worker processes each) under
random SIGKILLs, then a check that nothing was lost.

    python benchmarks/chaos_soak.py --minutes 10          # the issue's soak (run alone: it takes both cores)
    python benchmarks/chaos_soak.py --minutes 2 --out /tmp/soak

Every 10-30 s (random) it SIGKILLs a rollout actor or a reward worker of the run (found in the run's own
process tree), and when the run has logged a third and two thirds of its steps it SIGKILLs the driver with
its whole process group and starts it again with ``trainer.resume=auto``. When the run has ended it checks and prints: the
kills survived, by kind; every step trained on exactly B groups; the buffer's visit counts equal the
groups generated and accepted (steps x B); nothing left in flight; every step logged once in
``metrics.jsonl``; the last checkpoint loads (model and buffer) and the buffer's invariants hold. Exit
code 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

B, STEPS_PER_MINUTE = 16, 400
"""Batch size, and the steps a minute of the soak asks for: about what two cores manage under the kills'
restarts, so the soak lasts at least its minutes (it ends at its step count, however long that takes)."""


def train_command(out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlpp.cli", "train", "configs/tiny.yaml", f"trainer.output_dir={out}",
            f"trainer.steps={steps}", f"trainer.batch_size={B}", "trainer.mode=pipelined", "trainer.max_staleness=2",
            "trainer.checkpoint_every=25", "trainer.keep_last=2", "trainer.eval_every=0", "rollout.num_actors=2",
            "rollout.max_restarts=1000", "reward.name=arithmetic", "reward.pooled=true", "reward.num_workers=2",
            # three actors on a two-core machine: declare the CPUs Ray may hand out, one torch thread each
            "ray.num_cpus=3", "rollout.torch_threads=1", "learner.torch_threads=1",
            "log.progress_bar=false", "log.tensorboard=false", "log.buffer_snapshots=false", *extra]


def victims(driver: int) -> dict[str, list[psutil.Process]]:
    """The run's rollout actors and reward workers, from the driver's process tree."""
    found: dict[str, list[psutil.Process]] = {"rollout actor": [], "reward worker": []}
    try:
        tree = psutil.Process(driver).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in tree:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if cmd.startswith("ray::RolloutWorker"):
            found["rollout actor"].append(p)
            for child in p.children():
                try:
                    if "-c" in child.cmdline()[:2]:
                        found["reward worker"].append(child)
                except psutil.Error:
                    pass
    return found


def soak(out: Path, minutes: float, seed: int) -> dict:
    rng = random.Random(seed)
    steps = max(60, int(minutes * STEPS_PER_MINUTE))
    out.mkdir(parents=True, exist_ok=True)
    kills = {"rollout actor": 0, "reward worker": 0, "driver": 0}
    start = time.monotonic()
    driver_kills = [steps // 3, 2 * steps // 3]  # at these logged steps
    log = open(out / "soak.log", "a")
    proc = subprocess.Popen(train_command(out, steps), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    next_kill = time.monotonic() + rng.uniform(10, 30)
    while True:
        code = proc.poll()
        if code is not None:
            if code == 0:
                break
            raise SystemExit(f"the run failed (exit {code}); see {out / 'soak.log'}")
        now = time.monotonic()
        if driver_kills and _logged_step(out) >= driver_kills[0] and any((out / "checkpoints").glob("step_*[0-9]")):
            driver_kills.pop(0)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills["driver"] += 1
            print(f"[{now - start:6.0f} s] SIGKILL driver; resuming", flush=True)
            proc = subprocess.Popen(train_command(out, steps, "trainer.resume=auto"), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            next_kill = time.monotonic() + rng.uniform(10, 30)
        elif now >= next_kill:
            found = victims(proc.pid)
            kinds = [k for k, ps in found.items() if ps]
            if kinds:
                kind = rng.choice(kinds)
                victim = rng.choice(found[kind])
                try:
                    victim.send_signal(signal.SIGKILL)
                    kills[kind] += 1
                    print(f"[{now - start:6.0f} s] SIGKILL {kind} {victim.pid}", flush=True)
                except psutil.NoSuchProcess:
                    pass
            next_kill = now + rng.uniform(10, 30)
        time.sleep(0.2)
    return {"kills": kills, "seconds": round(time.monotonic() - start, 1), "steps": steps, **check(out, steps)}


def _logged_step(out: Path) -> int:
    """The last step the run has logged (0 before the first)."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        tail = f.read().decode(errors="replace").splitlines()[1:] or [""]
    for line in reversed(tail):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def check(out: Path, steps: int) -> dict:
    """The end-of-soak checks; each is (passed, detail)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from rlpp import checkpoint
    from rlpp.buffer import IN_FLIGHT, PriorityBuffer
    from rlpp.config.loader import load_config
    from rlpp.metrics import read_metrics

    records = read_metrics(out / "metrics.jsonl")
    step_rows = [r for r in records if "rollout/pass_rate" in r]
    logged = [r["step"] for r in step_rows]
    groups = [r.get("rollout/groups") for r in step_rows]
    last = checkpoint.complete(checkpoint.root(out))[-1]
    cfg = load_config(out / "config.yaml")
    state = torch.load(last / "buffer.pt", weights_only=False)
    buf = PriorityBuffer(cfg.buffer, state["num_problems"], seed=cfg.seed, group_size=cfg.rollout.group_size)
    buf.load_state_dict(state)
    summary = json.loads((out / "summary.json").read_text())
    visits = int(state["arrays"]["visits"].sum())
    results = {
        "every step logged once": (logged == list(range(1, steps + 1)), f"{len(logged)} step records for {steps} steps"),
        "every step trained on B groups": (all(g == B for g in groups), f"groups per step: {sorted(set(groups))}"),
        "visits = groups generated and accepted": (visits == steps * B == state["counters"]["updates"]
                                                   == summary["rollouts"] // cfg.rollout.group_size,
                                                   f"visits {visits}, updates {state['counters']['updates']}, "
                                                   f"steps x B {steps * B}, rollouts / G {summary['rollouts'] // cfg.rollout.group_size}"),
        "nothing in flight": (int((state["arrays"]["pool"] == IN_FLIGHT).sum()) == 0,
                              f"{int((state['arrays']['pool'] == IN_FLIGHT).sum())} in flight"),
    }
    try:
        buf.check_invariants()
        AutoModelForCausalLM.from_pretrained(last)
        results["last checkpoint loads, invariants hold"] = (True, str(last))
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        results["last checkpoint loads, invariants hold"] = (False, f"{last}: {e}")
    released = int(state["counters"]["released"])
    return {"checks": {k: {"passed": bool(ok), "detail": d} for k, (ok, d) in results.items()},
            "released": released, "final_accuracy": summary["final_accuracy"], "rollouts": summary["rollouts"],
            "visits_hist_max": int(np.max(state["arrays"]["visits"]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("runs/chaos_soak"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    result = soak(args.out, args.minutes, args.seed)
    print(json.dumps(result, indent=1))
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    ok = all(c["passed"] for c in result["checks"].values())
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
