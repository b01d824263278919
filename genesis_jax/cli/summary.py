"""`genesis-jax summary`: a per-layer table of a model config's network, computed with jax.eval_shape; with
``--cost``, what one training step of it costs (FLOPs, bytes, memory: genesis_jax.train.cost)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "summary",
        help="per-layer table (output shapes, parameters) of a model config; nothing is run",
        description="Example: genesis-jax summary --config=models/unet3d:pytorch --cost",
    )
    p.add_argument("--config", required=True, help="model config, path.py[:variant]; --config.x=y overrides follow")
    p.add_argument("--cost", action="store_true",
                   help="also compile one training step on this host and print XLA's FLOPs, bytes and memory "
                        "(XLA's native convolutions, as on GPU/TPU; a minute or more at full size on a CPU)")
    p.add_argument("--batch", type=int, default=6, help="samples per step for --cost (default 6, the published batch)")
    p.add_argument("--task", default=None, choices=["pretrain", "segmentation", "classification"],
                   help="the step to cost (default: pretrain for a Genesis U-Net, classification for a classifier, "
                        "else segmentation)")
    p.set_defaults(func=run, accepts_config_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import load_config
    from genesis_jax.models import build_model, summarize

    config = load_config(args.config, overrides)
    model = build_model(config.model)
    input_shape = (config.get("batch_size", 1), *config.input_shape)
    print(summarize(model, input_shape))
    if args.cost:
        from genesis_jax.train.cost import StepSpec, describe, step_cost
        from genesis_jax.train.mesh import make_mesh

        name = config.model.name
        task = args.task or ("pretrain" if name == "genesis_unet" else
                             "classification" if name == "genesis_classifier" else "segmentation")
        spec = StepSpec(config.model.to_dict(), tuple(config.input_shape), args.batch, task)
        print(describe(step_cost(spec, make_mesh(1))))
    return 0
