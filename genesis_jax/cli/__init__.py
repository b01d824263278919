"""The ``genesis-jax`` command line: one sub-command per module of this package.

Each module of this package (not starting with ``_``) is one sub-command and defines ``register(subparsers)``;
they are discovered, so adding a command is adding a module. Commands only string the library's entry functions
together (``demo`` the longest: data, pre-training, fine-tuning and test with packaged configs). ``main`` parses
the command, loads the config (``--config=path.py[:arg]`` plus ``--config.x=y`` overrides) and calls one library
entry function. No logic of its own lives in ``main`` but the error boundary: an exception that reaches ``main`` is printed as one line on stderr
(``genesis-jax <command>: error: <message naming the file or field>``) with a non-zero exit status; ``--debug``
(before or after the command) lets it propagate with its traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence


def command_modules() -> list[str]:
    """The sub-command modules of this package, alphabetically."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genesis-jax",
        description="Models Genesis, UNet++ and active fine-tuning on JAX/Flax.",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _one_line(err: BaseException) -> str:
    """The error's message on one line (multi-line library messages joined with '; ')."""
    text = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = f"missing key {err.args[0]!r}"
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:  # a wrapped error (a config file's get_config raising)
        lines = [lines[0].rstrip(":"), lines[-1]]
    return "; ".join(lines) or type(err).__name__


def _exit_status(err: BaseException) -> int:
    from genesis_jax.config_loader import ConfigError
    from genesis_jax.workdir import WorkdirError

    if isinstance(err, WorkdirError):  # busy (another writer holds the lock) or unwritable
        return 3
    return 2 if isinstance(err, ConfigError) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    debug = args.debug or "--debug" in rest  # also accepted after the command
    rest = [r for r in rest if r != "--debug"]
    if args.command is None:
        parser.print_help()
        return 2
    if rest and not getattr(args, "accepts_config_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from genesis_jax.runtime import tune_cpu_runtime

    tune_cpu_runtime()  # before the subcommand's first JAX computation
    from genesis_jax.cli._logging import quiet_libraries

    quiet_libraries()
    command = " ".join(filter(None, (args.command, getattr(args, "al_command", None),
                                     getattr(args, "data_command", None))))
    try:
        return int(args.func(args, rest) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"genesis-jax {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the error boundary: one line, the traceback only with --debug
        if debug:
            raise
        # Library errors (ValueError and its subclasses: ConfigError, DatasetError, ...) and OSError carry a
        # message for the user; anything else is named by its type, as it is probably a bug.
        expected = isinstance(err, (ValueError, OSError, RuntimeError))
        kind = "error" if expected else type(err).__name__
        hint = "" if expected else " (rerun with --debug for the traceback)"
        print(f"genesis-jax {command}: {kind}: {_one_line(err)}{hint}", file=sys.stderr)
        return _exit_status(err)


if __name__ == "__main__":
    sys.exit(main())
