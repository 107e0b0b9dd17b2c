"""Prioritized replay where replay can pay (issue 19): the draws-per-problem axis.

D = budget / (G x pool), the times each problem is drawn on average. Every run spends 51,200 rollouts
(G = 8, 400 steps at B = 16) and D is varied by the size of the training pool: the first 400, 1,600 or
4,000 problems of one 4,000-problem split (``data.synthetic.num_train=4000``, ``data.max_problems``),
so D = 16, 4 or 1.6 with the same warm model, the same dev and held-out problems and the same level mix
in every cell. At a fixed budget a larger D is what multi-epoch training is: fewer problems, each seen
more often. Cells: ``capable`` and ``mixed`` at D = 1.6, 4, 16; ``rare`` at D = 16.

    .venv/bin/python benchmarks/replay_study.py sweep            # 1. configs/ablate/replay-sweep.yaml
    .venv/bin/rlpp ablate configs/ablate/replay-sweep.yaml       # 2. (B, lr) per arm on capable's dev split, D = 16
    .venv/bin/python benchmarks/replay_study.py write            # 3. configs/ablate/replay-<regime>-d<D>.yaml
    .venv/bin/rlpp ablate configs/ablate/replay-capable-d16.yaml # 4. each cell (resumable; run alone); then
    .venv/bin/python benchmarks/replay_study.py write            #    again: random_skip gets its rate from
    .venv/bin/rlpp ablate configs/ablate/replay-capable-d16.yaml #    the cell's skipping arms, and runs
    .venv/bin/python benchmarks/replay_study.py collect          # 5. benchmarks/results/replay/ (tables, plots)

Runs go two at a time with one torch thread per actor (``parallel: 2``): on two cores that is ~1.5x the
throughput of one run with two threads; it changes no arm's numbers relative to another's, and wall times
in these reports are those of runs sharing the machine.

Arms: ``uniform``; ``paper``, ``prop``, ``mopps``, ``greso`` and ``hier`` (mopps with the cluster prior:
informed first draws), each at a fixed B and with ``trainer.fill=signal`` (``_fill``: every step trained
on B signal-carrying groups, every generated rollout charged); ``screen`` (in-step screening with 4
rollouts, after SPEED-RL); ``oracle`` and ``oracle_fill`` (selection by pass rates measured with 16
uncharged rollouts per problem every 25 steps: the bound); ``random_skip`` (the share of draws the best
skipping arm of the cell skipped, skipped at random from a fixed subset: does skipping gain from
prediction?). The candidate default, named before any result of this study was seen: ``hier_fill``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prioritization_study import CAPABLE_WARMSTART, REGIMES  # noqa: E402

BUDGET = 51_200
POOL = 4000
POOLS = {16: 400, 4: 1600, 1.6: 4000}
"""D -> training problems (the first that many of the 4,000)."""
CELLS = [("capable", 16), ("mixed", 16), ("rare", 16), ("capable", 1.6), ("mixed", 1.6), ("capable", 4), ("mixed", 4)]
CANDIDATE = "hier_fill"
"""The arm expected to win, named in the commit that wrote this file, before any result of the study."""
SEEDS, FIVE = [0, 1, 2], [0, 1, 2, 3, 4]
BATCHES = [8, 16, 32]
LRS = [1e-5, 3e-5, 1e-4]
COMMON = {"data.synthetic.num_train": POOL, "trainer.eval_every": 25, "rollout.torch_threads": 1,
          "learner.torch_threads": 1}
PROP = {"buffer.sampler": "prioritized", "buffer.prioritized.selection": "proportional",
        "buffer.prioritized.priority": "posterior", "buffer.prioritized.park_after": 2, "buffer.retest.mode": "scaled"}
SELECTING = {
    "paper": {"buffer.sampler": "paper"},
    "prop": PROP,
    "mopps": {"buffer.sampler": "mopps"},
    "greso": {"buffer.sampler": "greso"},
    "hier": {"buffer.sampler": "mopps", "buffer.prior.mode": "cluster"},
    "oracle": {"buffer.sampler": "oracle"},
}
FILL = {"trainer.fill": "signal"}
ARMS = {
    "uniform": {"buffer.sampler": "uniform"},
    **SELECTING,
    **{f"{a}_fill": {**s, **FILL} for a, s in SELECTING.items()},
    "screen": {"buffer.sampler": "uniform", "trainer.fill": "screen", "trainer.screen_rollouts": 4},
    "random_skip": {"buffer.sampler": "random_skip"},
}
SKIPPING = ("greso", "greso_fill")
"""The skipping arms random_skip is matched to (the better of the two in each cell by final accuracy)."""
SWEEP_FILE = Path("configs/ablate/replay-sweep.yaml")
SWEEP_DIR = Path("runs/ablate/replay-sweep")


def regime_overrides(regime: str, d: float) -> dict:
    return {**COMMON, **REGIMES[regime], "data.max_problems": POOLS[d]}


def sweep() -> None:
    """The (B, lr) sweep: every arm but random_skip (matched to greso, it takes greso's) at 3 x 3 settings,
    seed 0, on capable at D = 16, judged on the dev split."""
    arms = {f"{arm}_b{b}_lr{lr:g}": {**ov, "trainer.batch_size": b, "learner.lr": lr}
            for arm, ov in ARMS.items() if arm != "random_skip" for b in BATCHES for lr in LRS}
    spec = {
        "base": "configs/tiny.yaml",
        "description": (f"(B, lr) sweep of the replay study (issue 19): every arm at B in {BATCHES} x lr in {LRS}, "
                        "seed 0, on the capable regime at D = 16 (400 problems, 51,200 rollouts); each arm takes the "
                        "setting with the best final dev accuracy, reused in every cell."),
        "budget_rollouts": BUDGET,
        "seeds": [0],
        "parallel": 2,
        "output_dir": str(SWEEP_DIR),
        "overrides": {**regime_overrides("capable", 16), "trainer.eval_dev": True},
        "arms": arms,
    }
    header = ("# GENERATED by benchmarks/replay_study.py sweep. The replay study's (B, lr) sweep; run alone:\n"
              f"#   .venv/bin/rlpp ablate {SWEEP_FILE}\n")
    SWEEP_FILE.write_text(header + yaml.safe_dump(spec, sort_keys=False, width=120))
    print(f"wrote {SWEEP_FILE}: {len(arms)} runs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("sweep",))
    args = ap.parse_args()
    {"sweep": sweep}[args.what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
