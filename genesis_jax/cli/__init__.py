"""The ``genesis-jax`` command line: one sub-command per module of this package.

Each module of this package (not starting with ``_``) is one sub-command and defines ``register(subparsers)``;
they are discovered, so adding a command is adding a module. ``main`` parses the command, loads the config
(``--config=path.py[:arg]`` plus ``--config.x=y`` overrides) and calls one library entry function. No logic of
its own lives here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence


def command_modules() -> list[str]:
    """The sub-command modules of this package, alphabetically."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genesis-jax",
        description="Models Genesis, UNet++ and active fine-tuning on JAX/Flax.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from genesis_jax.config_loader import ConfigError
    from genesis_jax.workdir import WorkdirError

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if rest and not getattr(args, "accepts_config_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from genesis_jax.runtime import prefer_wide_cpu_vectors

    prefer_wide_cpu_vectors()  # before the subcommand's first JAX computation
    try:
        return int(args.func(args, rest) or 0)
    except ConfigError as err:
        print(f"genesis-jax {args.command}: config error: {err}", file=sys.stderr)
        return 2
    except WorkdirError as err:  # busy or unwritable: raised by every command that writes a workdir or dataset
        print(f"genesis-jax {args.command}: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
