"""`genesis-jax pretrain`: self-supervised pre-training (the pretext ``config.pretext.name`` picks: Models Genesis
restoration, masked image modelling, both) from a config into a workdir; resumes there."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genesis_jax.cli._summaries import pretrain_line
from genesis_jax.workdir import write_file_atomically


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-host (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
    g.add_argument("--coordinator_address", default=None, help="host:port of process 0, e.g. 10.0.0.1:1234")
    g.add_argument("--num_processes", type=int, default=None)
    g.add_argument("--process_id", type=int, default=None)


def add_dataset_flags(p: argparse.ArgumentParser, label: bool = True) -> None:
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="a dataset folder prepared by `genesis-jax data prepare --dataset=DIR` (or its name): its "
                   "recorded data settings are used")
    if label:
        p.add_argument("--label", default=None, metavar="NAME",
                       help="with --dataset: the label trained, by its dataset.json name (binary); several "
                       "comma-separated, or none for every label (multi-class, softmax)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="self-supervised pre-training (Genesis restoration, masked image modelling, ...); rerun with the same "
        "--workdir to resume",
        description="Example: genesis-jax pretrain --config=pretrain/genesis_chest_ct:tiny "
        "--workdir=/tmp/genesis_tiny [--config.optimizer.learning_rate=0.5 ...]",
    )
    p.add_argument("--config", required=True, help="pre-training config, path.py[:arg]; --config.x=y overrides follow")
    p.add_argument("--workdir", required=True, help="checkpoints, logs, previews and the exported weights go here")
    add_dataset_flags(p, label=False)
    add_distributed_flags(p)
    p.set_defaults(func=run, accepts_config_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.train.distributed import DistributedError, initialize

    try:  # before anything touches a JAX backend
        initialize(args.coordinator_address, args.num_processes, args.process_id)
    except DistributedError as err:
        print(f"genesis-jax pretrain: {err}", file=sys.stderr)
        return 2

    import jax

    from genesis_jax.config_loader import load_config
    from genesis_jax.data.builders import DatasetError
    from genesis_jax.models.weights import CheckpointError
    from genesis_jax.train.pretrain import TrainingDiverged, pretrain

    from genesis_jax.data.dataset_flag import pretrain_with_dataset
    from genesis_jax.data.prepare import prepare

    config = pretrain_with_dataset(load_config(args.config, overrides), args.dataset)
    try:
        if args.dataset is not None and jax.process_index() == 0:
            cubes = prepare(config.data)  # the cubes of this rule, cut once from the prepared volumes
            print(f"pretrain: cubes {cubes.dataset_dir} ({', '.join(f'{k} {v}' for k, v in cubes.examples.items())}"
                  f"{'; reused' if cubes.reused else ''}; {len(cubes.skipped)} scan(s) skipped"
                  + "".join(f"\n  - {reason}" for _, reason in cubes.skipped) + ")")
        if args.dataset is not None and jax.process_count() > 1:  # the other processes read what process 0 wrote
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("genesis_jax pretrain --dataset cubes")
        summary = pretrain(config, args.workdir)
    except TrainingDiverged as err:
        print(f"genesis-jax pretrain: stopped: {err}", file=sys.stderr)
        return 1
    except (CheckpointError, DatasetError) as err:  # e.g. a dataset prepared with other settings
        print(f"genesis-jax pretrain: {err}", file=sys.stderr)
        return 2
    if jax.process_index() == 0:
        path = write_file_atomically(Path(summary["workdir"]) / SUMMARY_FILE,
                                     (json.dumps(summary, indent=2) + "\n").encode())
        print(pretrain_line(summary, path))
    return 0


SUMMARY_FILE = "summary.json"
