"""`genesis-jax configs`: list the packaged experiment configs with the first line of each docstring."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("configs", help="list the packaged configs (with --show NAME: its full docstring)")
    p.add_argument("--show", default=None, metavar="NAME",
                   help="print the whole docstring of one config (a packaged name such as finetune/lcs, or a file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import config_docstring, list_configs

    if args.show:
        print(config_docstring(args.show))
        return 0
    entries = list_configs()
    width = max((len(name) for name, _ in entries), default=10) + 2
    for name, line in entries:
        print(f"{name:<{width}}{line}")
    return 0
