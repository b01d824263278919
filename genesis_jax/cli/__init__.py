"""The ``genesis-jax`` command line: one sub-command per module of this package.

Each sub-command module defines ``register(subparsers)``; ``main`` parses the command, loads the config
(``--config=path.py[:arg]`` plus ``--config.x=y`` overrides) and calls one library entry function. No logic of
its own lives here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Sub-command modules, in the order `genesis-jax --help` lists them.
COMMANDS = ("summary", "configs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genesis-jax",
        description="Models Genesis, UNet++ and active fine-tuning on JAX/Flax.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"genesis_jax.cli.{name.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from genesis_jax.config_loader import ConfigError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if rest and not getattr(args, "accepts_config_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args, rest) or 0)
    except ConfigError as err:
        print(f"genesis-jax {args.command}: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
