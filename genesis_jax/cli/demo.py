"""`genesis-jax demo`: the whole story on a small network in a few CPU minutes (data, pre-training, preview,
fine-tuning from the pre-trained weights)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="sample CT (or phantoms) -> tiny restoration pre-training -> preview PNG -> fine-tuning; a few CPU minutes",
        description="Example: genesis-jax demo --workdir=/tmp/genesis_demo",
    )
    p.add_argument("--workdir", default="genesis_demo", help="where everything is written (default ./genesis_demo)")
    p.add_argument("--pretrain-steps", type=int, default=30)
    p.add_argument("--finetune-steps", type=int, default=4)
    p.add_argument("--no-finetune", action="store_true", help="stop after pre-training and the preview")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.train.demo import run_demo

    summary = run_demo(args.workdir, pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                       finetune=not args.no_finetune)
    print(json.dumps(summary, indent=2, default=str))
    return 0
