"""Liver segmentation on real CT: scratch vs Genesis-pretrained, same budget, several seeds.

Data: the TotalSegmentator 2.18.0 sample CTs (PyPI sdist, fetched by genesis_jax.data.samples), resampled to 3 mm.
Fine-tuning trains on `ct_abdomen` and is tested on the whole `ct_dicom` series, another patient
(finetune/liver_sample). Pre-training: a short Models Genesis restoration run with
genesis_jax.train.pretrain on 32x32x16 cubes of `ct_abdomen` (its image only) and `ct_chest` (validation); the test
scan is never seen. Both arms use the same network (Genesis U-Net, keras variant, base width 4, depth 3), optimiser,
patches and number of steps; only the initial weights differ (He-uniform scratch vs the pre-trained encoder-decoder
with a new head).

Run (CPU; about an hour on a shared 2-core machine with the defaults):
  python experiments/liver_demo.py [--seeds 0 1 2] [--pretrain-steps 300] [--finetune-steps 200]
  python experiments/liver_demo.py --tiny     # a few steps, to check the path end to end
Writes experiments/results/liver_demo.{md,csv,json}; the last printed line is
  liver_dice: scratch=<mean>+-<sd> pretrained=<mean>+-<sd>
Limits (say them with the numbers): the labels are TotalSegmentator's model outputs, not manual annotations; one
training scan and one test scan of 13 slices at 3 mm; tiny networks and budgets on a CPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import jax  # noqa: E402
from _study import fmt, machine, mean_sd, write_table  # noqa: E402

from genesis_jax.config_loader import load_config  # noqa: E402
from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples  # noqa: E402
from genesis_jax.train.finetune import finetune  # noqa: E402
from genesis_jax.data.task_data import load_task_data  # noqa: E402
from genesis_jax.train.pretrain import pretrain  # noqa: E402


def pretrain_config(steps: int, finetune_config):
    """The tiny Genesis pre-training recipe on cubes of the sample CTs (same network as the fine-tuning)."""
    c = load_config("pretrain/genesis_chest_ct:tiny,keras")
    c.model.base_width = finetune_config.model.base_width
    c.model.depth = finetune_config.model.depth
    c.input_shape = tuple(finetune_config.input_shape)
    samples = load_config("data/genesis_cubes:samples").data
    samples.samples = dict(train=("ct_abdomen",), validation=("ct_chest",), test=())  # never the test scan
    samples.target_spacing = tuple(finetune_config.data.target_spacing)
    samples.cubes.cube_shape = tuple(finetune_config.input_shape[:-1])
    samples.cubes.margins = (8, 8, 4)
    samples.cubes.cubes_per_scan = 64
    samples.cubes.max_attempts = 3200
    c.data = samples
    c.global_batch_size = 4
    c.num_devices = 1
    c.steps_per_epoch = min(25, steps)
    c.max_steps = steps
    c.max_epochs = max(1, steps // c.steps_per_epoch)
    c.validation_batches = 4
    c.checkpoint.every_steps = 100
    c.logging.preview_every_steps = 100
    return c


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--workdir", default=str(REPO / "runs" / "liver_demo"))
    p.add_argument("--tiny", action="store_true", help="8 fine-tuning and 20 pre-training steps (a smoke run)")
    p.add_argument("--results", default=str(REPO / "experiments" / "results"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.tiny:
        args.pretrain_steps, args.finetune_steps, args.seeds = 20, 8, args.seeds[:2]
    workdir = Path(args.workdir)
    # every run compiles the same graphs: the persistent cache makes the repeats cache hits
    jax.config.update("jax_compilation_cache_dir", str(workdir / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    try:
        fetch_samples()
    except SampleDataUnavailable as err:
        print(f"liver_demo: the sample CTs are not available: {err}", file=sys.stderr)
        return 2

    config = load_config("finetune/liver_sample")
    config.max_steps = args.finetune_steps
    config.steps_per_epoch = max(1, min(config.steps_per_epoch, args.finetune_steps // 2))
    config.logging.progress = False

    print(f"pre-training ({args.pretrain_steps} steps) ...", flush=True)
    pre = pretrain(pretrain_config(args.pretrain_steps, config), workdir / "pretrain")
    if pre["weights"] is None:
        print(f"liver_demo: pre-training stopped ({pre['stopped']}) without weights; rerun to resume", file=sys.stderr)
        return 1
    print(f"pre-trained weights: {pre['weights']} (best validation loss {pre['best_val_loss']})", flush=True)

    data = load_task_data(config)  # read once, shared by every run
    results = {"scratch": [], "pretrained": []}
    runs = []
    for seed in args.seeds:
        for arm, init in (("scratch", "scratch"), ("pretrained", pre["weights"])):
            config.seed = seed
            config.init.checkpoint = init
            summary = finetune(config, workdir / f"{arm}_seed{seed}", data=data)
            vol = summary["test"]["per_volume"][0]
            results[arm].append(vol["dice"])
            runs.append({"arm": arm, "seed": seed, "dice": vol["dice"], "iou": vol["iou"], "hd95_mm": vol["hd95"],
                         "mean_iou": summary["test"]["set"]["mean_iou"], "steps": summary["step"],
                         "seconds": summary["seconds"]})
            print(f"{arm:10s} seed {seed}: dice {vol['dice']:.4f} iou {vol['iou']:.4f} hd95 {vol['hd95']:.1f} mm "
                  f"({summary['seconds']:.0f} s)", flush=True)

    stats = {arm: mean_sd(v) for arm, v in results.items()}
    header = ["init", "Dice mean+-sd", "IoU mean+-sd", "HD95 mm mean+-sd", "per-seed Dice"]
    rows = []
    for arm in ("scratch", "pretrained"):
        mine = [r for r in runs if r["arm"] == arm]
        rows.append([arm, fmt(*stats[arm]), fmt(*mean_sd([r["iou"] for r in mine])),
                     fmt(*mean_sd([r["hd95_mm"] for r in mine]), digits=1),
                     " ".join(f"{r['dice']:.3f}" for r in mine)])
    notes = [
        "Command: `python experiments/liver_demo.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        f"Machine: {machine()}; CPU only, tiny network (Genesis U-Net keras variant, base width "
        f"{config.model.base_width}, depth {config.model.depth}), {args.finetune_steps} fine-tuning steps of batch "
        f"{config.global_batch_size} x {tuple(config.input_shape[:-1])} patches per run, seeds {args.seeds}.",
        f"Pre-training: {pre['step']} steps of Genesis restoration on 32x32x16 cubes of ct_abdomen (validation: "
        "ct_chest); the test scan is never used before testing.",
        "Train: ct_abdomen (3 mm); test: whole ct_dicom series (another patient, resampled to 3 mm, 13 slices); "
        "Dice/IoU at threshold 0.5 and HD95 on the test volume, predicted by Gaussian sliding window.",
        "Labels are TotalSegmentator's own model outputs, not manual annotations; one training and one test scan: "
        "a real but very small demonstration, not a benchmark.",
    ]
    paths = write_table("liver_demo", header, rows, notes, {"runs": runs, "pretrain": pre, "seeds": args.seeds},
                        Path(args.results))
    print("\n".join(Path(paths[0]).read_text().splitlines()))
    print(f"liver_dice: scratch={fmt(*stats['scratch'])} pretrained={fmt(*stats['pretrained'])}")
    return 0


if __name__ == "__main__":
    jax.config.update("jax_default_prng_impl", "rbg")  # much faster compiles on CPU; both arms alike
    sys.exit(main())
