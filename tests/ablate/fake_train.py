"""Stands in for ``python -m rlpp.cli train BASE key=value...`` in the runner tests: writes a finished
run folder for the overrides it is given in a fraction of a second, or fails for ``buffer.sampler=per``."""

import sys
from pathlib import Path

from ablate_helpers import write_run

if __name__ == "__main__":
    base, overrides = sys.argv[2], sys.argv[3:]
    args = dict(o.split("=", 1) for o in overrides)
    print("fake train:", " ".join(overrides), flush=True)
    if args.get("buffer.sampler") == "per":
        print("Traceback: the per arm crashed on purpose", file=sys.stderr)
        sys.exit(3)
    budget, seed = int(args["trainer.max_rollouts"]), int(args["seed"])
    per_step = 16
    steps = -(-budget // per_step)
    accuracy = [0.2 + 0.01 * seed + 0.02 * k for k in range(steps // 2 + 1)]
    write_run(Path(args["trainer.output_dir"]), overrides, accuracy, eval_every=2, base=base)
