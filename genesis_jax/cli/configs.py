"""`genesis-jax configs`: list the packaged experiment configs with the first line of each docstring; ``--show NAME``
prints one config's docstring and then every field with its default (what ``--config.FIELD=VALUE`` overrides)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("configs", help="list the packaged configs (with --show NAME: its docstring, fields "
                              "and defaults)")
    p.add_argument("--show", default=None, metavar="NAME",
                   help="print one config's docstring, then its fields and defaults (a packaged name such as "
                   "finetune/lcs or finetune/dataset:tiny, or a file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import config_docstring, config_fields, list_configs, load_config

    if args.show:
        print(config_docstring(args.show))
        fields = config_fields(load_config(args.show))
        print(f"\nFields of {args.show} and their defaults (override with --config.FIELD=VALUE):")
        width = max((len(name) for name, _ in fields), default=10) + 2
        for name, value in fields:
            print(f"  {name:<{width}}{value!r}")
        return 0
    entries = list_configs()
    width = max((len(name) for name, _ in entries), default=10) + 2
    for name, line in entries:
        print(f"{name:<{width}}{line}")
    return 0
