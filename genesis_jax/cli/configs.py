"""`genesis-jax configs`: list the experiment configs with the first line of each docstring."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("configs", help="list the configs in configs/ (with --show PATH: the full docstring)")
    p.add_argument("--show", default=None, help="print the whole docstring of one config file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import config_docstring, list_configs, resolve_config_path

    if args.show:
        path, _ = resolve_config_path(args.show)
        print(config_docstring(path))
        return 0
    entries = list_configs()
    width = max((len(p) for p, _ in entries), default=10) + 2
    for path, line in entries:
        print(f"{path:<{width}}{line}")
    return 0
