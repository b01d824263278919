"""`genesis-jax summary`: a per-layer table of a model config's network, computed with jax.eval_shape."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "summary",
        help="per-layer table (output shapes, parameters) of a model config; nothing is run",
        description="Example: genesis-jax summary --config=models/unet3d:pytorch",
    )
    p.add_argument("--config", required=True, help="model config, path.py[:variant]; --config.x=y overrides follow")
    p.set_defaults(func=run, accepts_config_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import load_config
    from genesis_jax.models import build_model, summarize

    config = load_config(args.config, overrides)
    model = build_model(config.model)
    input_shape = (config.get("batch_size", 1), *config.input_shape)
    print(summarize(model, input_shape))
    return 0
