"""`genesis-jax demo`: the whole story on a small network in a few CPU minutes (real sample CT, pre-training,
preview, liver fine-tuning from the pre-trained weights, test Dice on another patient's scan and an overlay PNG)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="sample CT -> tiny restoration pre-training -> preview PNG -> liver fine-tuning -> test Dice on another "
             "patient + overlay PNG; a few CPU minutes (synthetic phantoms only when the samples cannot be fetched)",
        description="Example: genesis-jax demo --workdir=/tmp/genesis_demo",
    )
    p.add_argument("--workdir", default="genesis_demo", help="where everything is written (default ./genesis_demo)")
    p.add_argument("--pretrain-steps", type=int, default=30)
    p.add_argument("--finetune-steps", type=int, default=60)
    p.add_argument("--no-finetune", action="store_true", help="stop after pre-training and the preview")
    p.add_argument("--phantoms", action="store_true",
                   help="synthetic CT phantoms instead of the sample CTs (also: GENESIS_JAX_DEMO_PHANTOMS=1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.train.demo import run_demo

    summary = run_demo(args.workdir, pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps,
                       finetune=not args.no_finetune, phantoms=args.phantoms)
    print(json.dumps(summary, indent=2, default=str))
    return 0
