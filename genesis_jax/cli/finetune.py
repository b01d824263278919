"""`genesis-jax finetune`: fine-tune for a target task from Genesis weights or from scratch (calls
genesis_jax.train.finetune.finetune)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a segmentation or classification network (resumes from --workdir)",
        description="Example: genesis-jax finetune --config=configs/finetune/lcs.py:tiny --workdir=/tmp/lcs "
        "--init=scratch  (--init=<weights dir or pre-training workdir> for Genesis weights)",
    )
    p.add_argument("--config", required=True, help="fine-tuning config, path.py[:variant]; --config.x=y overrides follow")
    p.add_argument("--workdir", required=True, help="run directory: checkpoints, logs, best weights, summary.json")
    p.add_argument(
        "--init",
        default=None,
        help="'scratch', or a weights directory / pre-training workdir to transfer from (default: config.init.checkpoint)",
    )
    p.set_defaults(func=run, accepts_config_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.cli._logging import setup_logging
    from genesis_jax.config_loader import load_config
    from genesis_jax.train.finetune import finetune

    config = load_config(args.config, overrides)
    if args.init is not None:
        config.init.checkpoint = args.init
    setup_logging()
    summary = finetune(config, args.workdir)
    test = summary.get("test", {})
    headline = test.get("set", test.get("mean", test))
    shown = {k: round(v, 4) for k, v in headline.items() if isinstance(v, float)}
    status = "preempted (resume with the same command)" if summary["preempted"] else "done"
    print(f"finetune {status}: {summary['epochs']} epochs, {summary['steps']} steps, best epoch {summary['best_epoch']}, "
          f"test {shown}; summary in {summary['workdir']}/summary.json")
    return 0
