"""`genesis-jax summary`: a per-layer table of a model config's network, computed with jax.eval_shape; for a training
config (one with ``per_device_batch_size`` and ``optimizer``), also an estimate of the memory a training step needs
per device: parameters, gradients, optimizer state (``jax.eval_shape`` of the optimizer's init), the layers' outputs
for the per-device batch (what the backward pass keeps, roughly) and the input batch; with ``--cost``, what one
training step of it costs (FLOPs, bytes, memory, from XLA: genesis_jax.train.cost)."""

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
                   help="the step to cost (default: the config's kind decides: a pre-training config's restoration "
                        "step, a fine-tuning config's task; a model config: a classifier's, else pre-training)")
    p.set_defaults(func=run, accepts_config_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import load_config
    from genesis_jax.models import build_model, summarize

    config = load_config(args.config, overrides)
    model = build_model(config.model)
    input_shape = (config.get("batch_size", 1), *config.input_shape)
    print(summarize(model, input_shape))
    if config.get("per_device_batch_size") and config.get("optimizer"):
        print(memory_estimate(model, config))
    if args.cost:
        from genesis_jax.config_checks import config_kind
        from genesis_jax.train.cost import StepSpec, describe, step_cost
        from genesis_jax.train.finetune_steps import augment_settings
        from genesis_jax.train.mesh import make_mesh

        task = args.task or default_task(config)
        augment = augment_settings(config) if task != "pretrain" and config_kind(config) == "fine-tuning" else None
        spec = StepSpec(config.model.to_dict(), tuple(config.input_shape), args.batch, task, augment)
        print(describe(step_cost(spec, make_mesh(1))))
    return 0


def default_task(config) -> str:
    """The step ``--cost`` compiles unless ``--task`` says, from the config's kind: a pre-training config's
    restoration step, a fine-tuning config's ``task``; a model config (no training fields): a classifier's (the
    network's spec says it is one), else the restoration pre-training step."""
    from genesis_jax.config_checks import config_kind
    from genesis_jax.models import contract

    kind = config_kind(config)
    if kind == "pre-training":
        return "pretrain"
    if kind == "fine-tuning":
        return str(config.task)
    return "classification" if contract(config.model.to_dict()).task == "classification" else "pretrain"


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def memory_estimate(model, config) -> str:
    """Lines estimating a training step's memory per device (see the module docstring)."""
    import jax
    import numpy as np

    from genesis_jax.models.summary import abstract_variables, layer_output_bytes
    from genesis_jax.train.schedules import build_optimizer

    def nbytes(tree) -> int:
        return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))

    batch = int(config.per_device_batch_size)
    params = abstract_variables(model, (1, *config.input_shape))["params"]
    tx = build_optimizer(**config.optimizer.to_dict())
    parts = {
        "parameters": nbytes(params),
        "gradients": nbytes(params),
        "optimizer state": nbytes(jax.eval_shape(tx.init, params)),
        "layer outputs": layer_output_bytes(model, (batch, *config.input_shape)),
        "input batch": batch * int(np.prod(config.input_shape)) * 4,
    }
    return "\n".join([
        f"Memory per device (estimate, jax.eval_shape; per-device batch {batch} of {tuple(config.input_shape)}, "
        f"compute dtype {config.model.get('dtype') or 'float32'}):",
        "  " + ", ".join(f"{name} {_gib(size)}" for name, size in parts.items()),
        f"  total {_gib(sum(parts.values()))} (XLA's buffer reuse and fusions change the real figure: measure it)",
    ])
