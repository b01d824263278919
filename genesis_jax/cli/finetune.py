"""`genesis-jax finetune`: fine-tune for a target task from Genesis weights or from scratch into a workdir; resumes
there (calls genesis_jax.train.finetune.finetune)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from genesis_jax.cli.pretrain import add_dataset_flags, add_distributed_flags

    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a segmentation or classification network; rerun with the same --workdir to resume",
        description="Example: genesis-jax finetune --config=finetune/lcs:tiny --workdir=/tmp/lcs "
        "--init=scratch  (--init=<weights dir or pre-training workdir> for Genesis weights)",
    )
    p.add_argument("--config", required=True,
                   help="fine-tuning config, path.py[:variant]; --config.x=y overrides follow")
    p.add_argument("--workdir", required=True, help="checkpoints, logs, weights, predictions and summary.json go here")
    p.add_argument(
        "--init",
        default=None,
        help="'scratch', or a weights directory / training workdir to transfer from (default: config.init.checkpoint)",
    )
    add_dataset_flags(p)
    add_distributed_flags(p)
    p.set_defaults(func=run, accepts_config_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.train.distributed import DistributedError, initialize

    try:  # before anything touches a JAX backend
        initialize(args.coordinator_address, args.num_processes, args.process_id)
    except DistributedError as err:
        print(f"genesis-jax finetune: {err}", file=sys.stderr)
        return 2

    import jax

    from genesis_jax.cli._logging import setup_logging
    from genesis_jax.cli._summaries import metrics_text
    from genesis_jax.config_loader import load_config
    from genesis_jax.models.weights import CheckpointError
    from genesis_jax.train.finetune import finetune
    from genesis_jax.train.loop import TrainingDiverged
    from genesis_jax.train.transfer import TransferError

    from genesis_jax.data.dataset_flag import finetune_with_dataset

    config = finetune_with_dataset(load_config(args.config, overrides), args.dataset, args.label)
    if args.init is not None:
        config.init.checkpoint = args.init
    setup_logging()
    init = config.get("init")
    checkpoint = init.get("checkpoint") if hasattr(init, "get") else None  # another kind of config: finetune says so
    if checkpoint not in ("", "scratch", None) and jax.process_index() == 0:
        from genesis_jax.pretext.gate import weights_warning

        if warning := weights_warning(checkpoint):
            print(warning, file=sys.stderr)
    try:
        summary = finetune(config, args.workdir)
    except TrainingDiverged as err:
        print(f"genesis-jax finetune: stopped: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, TransferError) as err:
        print(f"genesis-jax finetune: {err}", file=sys.stderr)
        return 2
    if jax.process_index() != 0:
        return 0
    test = summary.get("test", {})
    headline = test.get("set", test)
    best = summary["best"]
    print(f"finetune {summary['stopped']}: {summary['epochs']} epochs, {summary['step']} steps, best val loss "
          f"{best['val_loss']:.4g} at step {best['step']}; test {metrics_text(headline)}; weights "
          f"{summary['workdir']}/weights; details in {summary['workdir']}/summary.json")
    return 0
