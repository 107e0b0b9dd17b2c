"""The ``rlpp`` command. Arguments are parsed before anything heavy is imported, so ``--help`` and
config errors answer at once."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlpp", description="Ray-based RL post-training with prioritized replay.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("train", "run GRPO training (default: the built-in tiny CPU task)"),
                        ("config", "validate a config and print it fully resolved")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("config", nargs="?", help="YAML file (default: the built-in defaults, = configs/tiny.yaml)")
        c.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. buffer.sampler=uniform")
    a = sub.add_parser("ablate", help="run every arm x seed of an ablation at an equal rollout budget, then report")
    a.add_argument("spec", help="ablation YAML (e.g. configs/ablate/tiny.yaml)")
    a.add_argument("overrides", nargs="*", metavar="key=value",
                   help="spec keys (budget_rollouts=2048 seeds=[0]), train.KEY=V for every arm, arms.NAME.KEY=V")
    r = sub.add_parser("report", help="(re)generate an ablation's report.md, CSVs and plots from its logs")
    r.add_argument("run_dir", help="the ablation's output_dir")
    s = sub.add_parser("scale", help="resize the rollout pool of a running job (applied between steps)")
    s.add_argument("run", help="the job's trainer.output_dir (holds control.json while it runs)")
    s.add_argument("--rollout-actors", type=int, required=True, metavar="N", help="rollout actors wanted (>= 1)")
    s.add_argument("--address", default="", help="the cluster's address, when RUN is not a folder on this machine")
    s.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                   help="wait this long for the job to apply it (0: file the request and return)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "ablate":
        from rlpp.ablate.runner import main_ablate

        return main_ablate(args.spec, args.overrides)
    if args.command == "report":
        from rlpp.ablate.report import main_report

        return main_report(args.run_dir)
    if args.command == "scale":
        return _scale(args)
    from rlpp.config.loader import load_config, to_yaml
    from rlpp.config.schema import ConfigError

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    try:
        cfg = load_config(config, overrides)
    except ConfigError as e:
        print(f"rlpp: config error: {e}", file=sys.stderr)
        return 2
    if args.command == "config":
        sys.stdout.write(to_yaml(cfg))
        return 0
    return _train(cfg)


def _scale(args) -> int:
    if args.rollout_actors < 1:
        print(f"rlpp scale: --rollout-actors must be >= 1, got {args.rollout_actors}", file=sys.stderr)
        return 2
    from rlpp.distributed.control import ScaleError, request_scale

    try:
        status = request_scale(args.run, args.rollout_actors, address=args.address, wait_s=args.wait)
    except ScaleError as e:
        print(f"rlpp scale: {e}", file=sys.stderr)
        return 1
    if args.wait:
        print(f"rlpp scale: {args.run}: {status['rollout_actors']} rollout actors (applied at step {status['step']})")
    else:
        print(f"rlpp scale: {args.run}: requested {args.rollout_actors} rollout actors; the job applies it between steps")
    return 0


def _train(cfg) -> int:
    import logging

    from rlpp.checkpoint import CheckpointError
    from rlpp.trainer import Trainer, TrainingStopped

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trainer = Trainer(cfg)
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
    except (TrainingStopped, CheckpointError) as e:
        print(f"rlpp train: stopped: {e}", file=sys.stderr)
        return 1
    print("\n" + format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    rows = [("held-out accuracy before RL", pct(s["initial_accuracy"])),
            ("held-out accuracy after RL", pct(s["final_accuracy"])),
            ("best held-out accuracy", f"{pct(s['best_accuracy'])} (step {s['best_step']})"),
            ("warm-start dev accuracy", pct(s.get("warmstart_dev_accuracy"))),
            ("steps / rollouts", f"{s['steps']} / {s['rollouts']}"),
            ("wall time", f"{s['seconds']:.0f} s"),
            ("run folder", s["output_dir"])]
    width = max(len(k) for k, _ in rows)
    return "rlpp train: done\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


if __name__ == "__main__":
    sys.exit(main())
