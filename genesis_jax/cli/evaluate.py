"""`genesis-jax evaluate`: evaluate trained weights on a config's test set; writes metrics JSON and, for
segmentation, overlay PNGs (and optionally NIfTI probability maps on the input grid)."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate weights on a config's test set: metrics JSON, overlay PNGs, optional NIfTI predictions",
        description="Example: genesis-jax evaluate --config=finetune/lcs:tiny --weights=/tmp/lcs "
        "--out=/tmp/lcs_eval [--save-nifti] [--config.eval.prune_level=2]",
    )
    p.add_argument("--config", required=True, help="the fine-tuning config whose data and eval sections apply")
    p.add_argument("--weights", required=True,
                   help="a weights directory, or a training workdir (a fine-tuning workdir's evaluated weights/, "
                   "else its best checkpoint)")
    p.add_argument("--out", required=True, help="output directory for metrics.json and the PNG/NIfTI files")
    p.add_argument("--save-nifti", action="store_true", help="also write probability maps as NIfTI")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay PNGs")
    from genesis_jax.cli.pretrain import add_dataset_flags

    add_dataset_flags(p)  # --label defaults to the labels the weights were trained on
    p.set_defaults(func=run, accepts_config_overrides=True)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.config_loader import load_config
    from genesis_jax.train.config_checks import validate_finetune_config
    from genesis_jax.workdir import full_disk_named, hold

    from genesis_jax.data.dataset_flag import finetune_with_dataset, label_from_weights
    from genesis_jax.models.weights import is_weights_dir, load_weights

    config = load_config(args.config, overrides)
    label = args.label
    if args.dataset is not None and label is None:
        weights = Path(args.weights) / "weights" if is_weights_dir(Path(args.weights) / "weights") else \
            Path(args.weights)
        label = label_from_weights(load_weights(weights)[2]) if is_weights_dir(weights) else ""
    config = finetune_with_dataset(config, args.dataset, label)
    validate_finetune_config(config, command="evaluate")
    with hold(args.out, "evaluate"), full_disk_named(args.out, "the evaluation's files were not all written "
                                                     "(none is left half-written)"):
        return _evaluate(args, config)


def _evaluate(args: argparse.Namespace, config) -> int:
    import json
    from pathlib import Path

    from genesis_jax.cli._logging import setup_logging
    from genesis_jax.cli._summaries import metrics_text
    from genesis_jax.workdir import write_file_atomically
    from genesis_jax.evaluation.evaluate import export_predictions
    from genesis_jax.models.weights import is_weights_dir
    from genesis_jax.pretext.gate import weights_warning
    from genesis_jax.train.checkpointing import load_init_weights
    from genesis_jax.train.config_checks import check_weights_for_task
    from genesis_jax.evaluation.test_set import evaluate_test_set
    from genesis_jax.data.task_data import load_task_data

    setup_logging()
    weights = Path(args.weights)
    if is_weights_dir(weights / "weights"):  # a fine-tuning workdir: the weights its summary.json reports
        weights = weights / "weights"
    variables, model_config, metadata = load_init_weights(weights)
    check_weights_for_task(config, model_config, metadata, weights)
    if warning := weights_warning(weights):  # weights fine-tuned from pre-training that failed the quality gate
        print(warning, file=sys.stderr)
    if not model_config:
        model_config = config.model.to_dict()  # a workdir checkpoint without its network's config: use the config's
    data = load_task_data(config, parts=("test",))
    segmentation = config.task == "segmentation"
    export = segmentation and bool(data.test_volumes) and (args.save_nifti or not args.no_overlays)
    results = evaluate_test_set(config, model_config, variables, data, keep_probabilities=export)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if export:
        files = export_predictions(results.pop("probabilities"), data.test_volumes, out, nifti=args.save_nifti,
                                   overlays=not args.no_overlays, threshold=config.eval.threshold,
                                   overlay_class=results.get("overlay_class"))
    report = {"weights": str(weights), "weights_metadata": metadata, "data": data.description,
              "eval": config.eval.to_dict(), "metrics": results}
    write_file_atomically(out / "metrics.json", json.dumps(report, indent=2, default=float).encode())
    headline = results.get("set", results)
    print(f"evaluate: {metrics_text(headline)}; wrote {out / 'metrics.json'} and {len(files)} files")
    return 0
