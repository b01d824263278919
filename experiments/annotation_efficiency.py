"""Annotation efficiency: fine-tune with 5, 10, 25, 50 and 100% of the labels, scratch vs Genesis-pretrained,
several seeds; a PNG plot and a table (the published form of "Models Genesis reduce annotation efforts by at least
30%": the share of labels with which the pretrained model matches scratch trained on all of them).

What "x% of the labels" means (``--unit``):
  patches   the training volumes are cut once into a pool of ``--pool-size`` labelled patches (foreground-aware, as
            the fine-tuning pipeline samples them); a run keeps a seeded, nested x% of the pool. For the sample data:
            one labelled training scan, so the share of annotated patches is the variable.
  examples  ``config.label_fraction``: x% of the dataset's training examples (scans for LiTS/BraTS, crops for
            LIDC, candidates for LUNA16): the published study on the real datasets.
Every run of a given fraction uses the same labelled subset for both arms (the subset depends on the fraction
only), and the same fine-tuning budget.

Run:
  python experiments/annotation_efficiency.py --tiny
      the liver sample CTs (train ct_abdomen, test ct_dicom), tiny budget; the pre-trained weights of
      experiments/liver_demo.py when present (runs/liver_demo/pretrain/weights), else a short pre-training first.
  python experiments/annotation_efficiency.py --config=finetune/lcs --unit=examples \
      --init=<Genesis weights> --seeds 0 1 2 3 4      # LiTS prepared by genesis-jax data prepare (GPU)
Writes experiments/results/annotation_efficiency.{md,csv,json,png}; the last printed line is
  annotation_saving: pretrained matches scratch@100% with <x>% of the labels
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _study import fmt, fraction_to_match, machine, mean_sd, write_table  # noqa: E402

from genesis_jax.config_loader import load_config  # noqa: E402
from genesis_jax.data.pipeline import finetune_dataset  # noqa: E402
from genesis_jax.data.sources import ArraySource  # noqa: E402
from genesis_jax.train.finetune import finetune  # noqa: E402
from genesis_jax.data.task_data import TaskData, load_task_data  # noqa: E402

FRACTIONS = (0.05, 0.10, 0.25, 0.50, 1.00)


def patch_pool(source, count: int, patch_shape, foreground_fraction: float, seed: int) -> ArraySource:
    """``count`` labelled patches cut once from the volumes of ``source`` (the fine-tuning pipeline's sampling)."""
    it = iter(finetune_dataset(source, batch_size=1, seed=seed, patch_shape=patch_shape,
                               foreground_fraction=foreground_fraction, patches_per_volume=count))
    batches = [next(it) for _ in range(count)]
    return ArraySource(image=np.concatenate([b["image"][..., 0] for b in batches]),
                       label=np.concatenate([b["label"][..., 0] for b in batches]).astype(np.uint8))


def study_data(config, unit: str, pool_size: int) -> TaskData:
    data = load_task_data(config)
    if unit == "examples":
        return data
    if data.patch_shape is None:
        raise ValueError("--unit=patches needs a whole-volume task (sampling.mode='patches'); use --unit=examples")
    shape = tuple(int(s) for s in config.input_shape[:-1])
    fg = config.sampling.foreground_fraction
    train = patch_pool(data.train, pool_size, shape, fg, seed=1000)
    val = patch_pool(data.validation, max(config.global_batch_size, config.sampling.validation_patches), shape, fg,
                     seed=2000)
    return TaskData(config.task, train, val, None, test_volumes=data.test_volumes, test_arrays=data.test_arrays,
                    description=f"{data.description}; a pool of {pool_size} labelled patches")


def score(summary: dict, task: str) -> float:
    test = summary["test"]
    if task == "classification":
        return float(test["auc"])
    return float(test["mean"]["dice"])


def plot(fractions, curves: dict, metric: str, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = 100 * np.asarray(fractions)
    for arm, style in (("scratch", "s--"), ("pretrained", "o-")):
        means = np.array([m for m, _ in curves[arm]])
        sds = np.array([s for _, s in curves[arm]])
        ax.errorbar(x, means, yerr=sds, fmt=style, capsize=3, label=arm)
    ax.axhline(curves["scratch"][-1][0], color="gray", lw=0.8, ls=":", label="scratch, 100% of labels")
    ax.set_xlabel("labelled training data (%)")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pretrained_weights(args, config) -> str:
    if args.init:
        return args.init
    demo = REPO / "runs" / "liver_demo" / "pretrain" / "weights"
    if (demo / "model_config.json").is_file() and not args.tiny:
        return str(demo)
    from liver_demo import pretrain_config

    from genesis_jax.train.pretrain import pretrain

    steps = 20 if args.tiny else 300
    print(f"pre-training ({steps} steps) ...", flush=True)
    summary = pretrain(pretrain_config(steps, config), Path(args.workdir) / "pretrain")
    if summary["weights"] is None:
        raise SystemExit(f"annotation_efficiency: pre-training stopped ({summary['stopped']}) without weights")
    return summary["weights"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="finetune/liver_sample")
    p.add_argument("--init", default=None, help="pre-trained weights (default: the liver demo's, or pre-train)")
    p.add_argument("--unit", choices=("patches", "examples"), default="patches")
    p.add_argument("--pool-size", type=int, default=80, help="--unit=patches: labelled patches at 100%%")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps per run (the same for every run)")
    p.add_argument("--workdir", default=str(REPO / "runs" / "annotation_efficiency"))
    p.add_argument("--results", default=str(REPO / "experiments" / "results"))
    p.add_argument("--tiny", action="store_true", help="CI scale: 4 steps per run, 2 seeds, a 40-patch pool")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.tiny:
        args.steps, args.seeds, args.pool_size = 4, args.seeds[:2], 40
    workdir = Path(args.workdir)
    jax.config.update("jax_compilation_cache_dir", str(workdir / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    config = load_config(args.config)
    config.max_steps = args.steps
    config.steps_per_epoch = max(1, min(config.steps_per_epoch, args.steps // 2))
    config.select_best = False  # a fixed budget for every run (no selection on validation)
    config.early_stopping.patience = 0
    config.logging.progress = False
    init = pretrained_weights(args, config)
    data = study_data(config, args.unit, args.pool_size)
    fractions = sorted(args.fractions)

    runs = []
    for fraction in fractions:
        for seed in args.seeds:
            for arm, source in (("scratch", "scratch"), ("pretrained", init)):
                config.seed, config.init.checkpoint, config.label_fraction = seed, source, fraction
                summary = finetune(config, workdir / f"{arm}_{fraction:g}_seed{seed}", data=data)
                value = score(summary, config.task)
                runs.append({"fraction": fraction, "seed": seed, "arm": arm, "value": value,
                             "train_examples": summary["train_examples"], "seconds": summary["seconds"]})
                print(f"{100 * fraction:5.1f}% seed {seed} {arm:10s}: {value:.4f} "
                      f"({summary['train_examples']} labelled examples, {summary['seconds']:.0f} s)", flush=True)

    metric = "test AUC" if config.task == "classification" else "test Dice"
    curves = {arm: [mean_sd([r["value"] for r in runs if r["arm"] == arm and r["fraction"] == f]) for f in fractions]
              for arm in ("scratch", "pretrained")}
    full_scratch = curves["scratch"][-1][0]
    match = fraction_to_match(fractions, [m for m, _ in curves["pretrained"]], full_scratch)
    header = ["labels", "examples", f"scratch {metric}", f"pretrained {metric}"]
    rows = []
    for i, f in enumerate(fractions):
        n = next(r["train_examples"] for r in runs if r["fraction"] == f)
        rows.append([f"{100 * f:g}%", n, fmt(*curves["scratch"][i]), fmt(*curves["pretrained"][i])])
    saving = (f"pretrained matches scratch@100% with {100 * match:.0f}% of the labels" if match is not None and
              math.isfinite(full_scratch) else "pretrained does not reach scratch@100% at the fractions tried")
    notes = [
        "Command: `python experiments/annotation_efficiency.py " + " ".join(argv if argv is not None else sys.argv[1:])
        + "`",
        f"Machine: {machine()}; config {args.config}; unit {args.unit}"
        + (f" (a pool of {args.pool_size} patches)" if args.unit == "patches" else "")
        + f"; {args.steps} fine-tuning steps per run; seeds {args.seeds}; pre-trained weights {init}.",
        f"Saving: {saving} (linear interpolation between the fractions tried).",
        f"Data: {data.description}.",
    ]
    out = Path(args.results)
    png = plot(fractions, curves, metric, out / "annotation_efficiency.png",
               f"{Path(args.config).stem}: scratch vs Genesis-pretrained ({len(args.seeds)} seeds)")
    write_table("annotation_efficiency", header, rows, notes,
                {"runs": runs, "curves": curves, "match_fraction": match, "plot": str(png)}, out)
    print("\n".join(f"| {' | '.join(str(c) for c in row)} |" for row in [header, *rows]))
    print(f"plot: {png}")
    print(f"annotation_saving: {saving}")
    return 0


if __name__ == "__main__":
    jax.config.update("jax_default_prng_impl", "rbg")  # much faster compiles on CPU; every run alike
    sys.exit(main())
