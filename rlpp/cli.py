"""The ``rlpp`` command. Arguments are parsed before anything heavy is imported, so ``--help`` and
config errors answer at once."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlpp", description="Ray-based RL post-training with prioritized replay.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("config", help="validate a config and print it fully resolved")
    c.add_argument("config", nargs="?", help="YAML file (default: the built-in defaults)")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. buffer.sampler=uniform")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
