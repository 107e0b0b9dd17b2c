"""The ``rlpp`` command. Arguments are parsed before anything heavy is imported, so ``--help`` and
config errors answer at once."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlpp", description="Ray-based RL post-training with prioritized replay.")
    p.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    # Also accepted after the command; SUPPRESS keeps a subcommand from resetting `rlpp --debug CMD`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the Python traceback too")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("train", "run GRPO training (default: the built-in tiny CPU task)"),
                        ("config", "validate a config and print it fully resolved")):
        c = sub.add_parser(name, help=help_, parents=[common])
        c.add_argument("config", nargs="?", help="YAML file (default: the built-in defaults, = configs/tiny.yaml)")
        c.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. buffer.sampler=uniform")
    e = sub.add_parser("eval", parents=[common],
                       help="greedy accuracy and pass@k (95%% CIs) of a model or checkpoint; prints a table, writes JSON")
    e.add_argument("model", help="a checkpoint folder written by rlpp train, an HF model folder or hub name, or a .gguf")
    e.add_argument("config", nargs="?", help="YAML file for data, engine, reward (default: a checkpoint's own run "
                   "config, else the built-in defaults)")
    e.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.k=[1,4,8] eval.split=dev")
    pl = sub.add_parser("plot", parents=[common], help="write PNG plots of one run into RUN_DIR/plots")
    pl.add_argument("run_dir", help="a run's trainer.output_dir")
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
    try:
        return _run(args)
    except Exception as e:  # noqa: BLE001 - user errors become one line; anything else is re-raised
        kind = _user_error_kind(e)
        if kind is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"rlpp {args.command}: {kind} error: {_one_line(e)}", file=sys.stderr)
        return 2


def _user_error_kind(e: BaseException) -> str | None:
    """``config``, ``data``, ... for the errors a user causes and can fix; None for bugs and crashes.
    Classes are looked up only where their module is already loaded (nothing heavy is imported here)."""
    kinds = [("rlpp.config.base", "ConfigError", "config"), ("rlpp.data.readers", "DataError", "data"),
             ("rlpp.models", "ModelError", "model"), ("rlpp.checkpoint", "CheckpointError", "checkpoint"),
             ("rlpp.distributed.placement", "PlacementError", "placement"),
             ("rlpp.reward.registry", "RewardError", "reward"), ("rlpp.metrics", "TrackerError", "tracker"),
             ("rlpp.plot", "RunFolderError", "run")]
    for module, name, kind in kinds:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return kind
    return None


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "") if lines else type(e).__name__


def _config_and_overrides(args) -> tuple[str | None, list[str]]:
    """The optional CONFIG argument and the overrides (a first ``key=value`` is an override, not a file)."""
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config:  # only overrides were given
        config, overrides = None, [config, *overrides]
    return config, overrides


def _run(args) -> int:
    if args.command == "plot":
        from rlpp.plot import plot_run

        for path in plot_run(args.run_dir):
            print(path)
        return 0
    if args.command == "eval":
        from rlpp.evaluation import main_eval

        return main_eval(args.model, *_config_and_overrides(args))
    if args.command == "ablate":
        from rlpp.ablate.runner import main_ablate

        return main_ablate(args.spec, args.overrides)
    if args.command == "report":
        from rlpp.ablate.report import main_report

        return main_report(args.run_dir)
    if args.command == "scale":
        return _scale(args)
    from rlpp.config.loader import load_config, to_yaml

    cfg = load_config(*_config_and_overrides(args))
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

    from rlpp.metrics import check_trackers

    check_trackers(cfg.log)  # a tracker package missing fails now, not after the warm start and the actors
    from rlpp.preflight import check_inputs

    check_inputs(cfg)  # before Ray starts: a bad reward, resume path or GGUF file fails in seconds
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _start_ray_while_importing(cfg)
    from rlpp.trainer import Trainer, TrainingStopped

    try:
        with Trainer(cfg) as trainer:  # every actor is torn down however the run ends
            summary = trainer.fit()
    except TrainingStopped as e:
        print(f"rlpp train: stopped: {e}", file=sys.stderr)
        return 1
    print("\n" + format_summary(summary))
    try:
        from rlpp.plot import plot_run

        plots = plot_run(cfg.trainer.output_dir)
        if plots:
            print(f"  plots                        {Path(plots[0]).parent}")
    except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
        logging.getLogger(__name__).warning("plots not written: %s", e)
    return 0


def _start_ray_while_importing(cfg) -> None:
    """Start (or join) Ray while the trainer's modules load in a thread: ``ray.init`` mostly waits on the
    processes it starts, the imports (torch, transformers: seconds) mostly compute, so the two overlap.
    An import error is raised here as it would be by a plain import."""
    import threading

    from rlpp.distributed.local import init_ray

    failed: list[BaseException] = []

    def load() -> None:
        try:
            import rlpp.trainer  # noqa: F401
        except BaseException as e:  # noqa: BLE001 - re-raised on the main thread
            failed.append(e)

    loader = threading.Thread(target=load, name="rlpp-imports", daemon=True)
    loader.start()
    try:
        init_ray(cfg)
    finally:
        loader.join()
    if failed:
        raise failed[0]


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
