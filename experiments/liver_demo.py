"""Liver segmentation on real CT, in 2D: scratch vs Genesis-2D pre-trained, same budget, paired seeds.

The successor of the 3D liver demo, which took about an hour of the shared 2-core CPU: it is now the all-slices
point of the 2D annotation-efficiency study and runs the same code (experiments/_study.py; the runs are cached, so
running either script first makes the other cheaper). Data: the TotalSegmentator 2.18.0 sample CTs (PyPI sdist,
fetched by genesis_jax.data.samples) at 3 mm; fine-tuning on the axial liver slices of `ct_abdomen` (every fourth
block of 3 slices held out for validation), test on the whole `ct_dicom` volume (another patient, slice by slice).
Pre-training: Genesis-2D restoration on unlabelled 64x64x8 cubes of `ct_abdomen` (validation `ct_chest`); the
test scan is never seen. Both arms use the same network (Genesis U-Net, keras variant, base width 8, depth 3, 2D),
optimiser, slices, seed and number of steps; only the initial weights differ. BatchNorm statistics are
re-estimated with the final weights on unlabelled training batches before validation, test and export
(genesis_jax.train.precise_bn), so no run reports the Dice 0 of stale running averages.

Run (CPU):
  python experiments/liver_demo.py [--seeds 0 1 2 3 4] [--steps 200] [--min-epochs 100] [--pretrain-steps 300]
                                   # 10 runs of 850 steps: ~15 min
Each run trains for max(--steps, ceil(--min-epochs * 34 / 4)) steps, 850 at the defaults (100 passes over the 34
slices): the post-hoc convergence rule of annotation_efficiency.py, whose docstring says why and how it was chosen.
  python experiments/liver_demo.py --tiny     # a smoke run of the same path (tiny network, 2 steps)
Writes experiments/results/liver_demo.{md,csv,json}; the last printed line is
  liver_dice: scratch=<mean>+-<sd> pretrained=<mean>+-<sd>
Limits (say them with the numbers): the labels are TotalSegmentator's model outputs, not manual annotations; one
training and one test patient; a tiny 2D network and budget on a CPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

import _study as S  # noqa: E402
from annotation_efficiency import add_study_arguments, min_epochs, pretrained, resolve  # noqa: E402

from genesis_jax.data.samples import SampleDataUnavailable, fetch_samples  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    d = resolve(args)
    S.setup_jax(d["workdir"])
    try:
        fetch_samples()
    except SampleDataUnavailable as err:
        print(f"liver_demo: the sample CTs are not available: {err}", file=sys.stderr)
        return 2
    init, pre = pretrained(d)
    runs, data = S.study_runs("liver", [None], d["seeds"], d["steps"], d["steps_per_epoch"], init,
                              pre.get("params_fingerprint", ""), d["workdir"] / "runs", d["model"],
                              min_epochs(d, "liver"))
    stats = {arm: S.mean_sd([r["dice"] for r in runs if r["arm"] == arm]) for arm in ("scratch", "pretrained")}
    by_seed = {(r["seed"], r["arm"]): r for r in runs}
    diff = S.paired_bootstrap([by_seed[s, "pretrained"]["dice"] - by_seed[s, "scratch"]["dice"] for s in d["seeds"]])
    header = ["init", "Dice mean+-sd", "IoU mean+-sd", "HD95 mm mean+-sd", "per-seed Dice"]
    rows = []
    for arm in ("scratch", "pretrained"):
        mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        rows.append([arm, S.fmt(*stats[arm]), S.fmt(*S.mean_sd([r["iou"] for r in mine])),
                     S.fmt(*S.mean_sd([r["hd95_mm"] for r in mine]), digits=1),
                     " ".join(f"{r['dice']:.3f}" for r in mine)])
    command = " ".join(argv if argv is not None else sys.argv[1:]).strip()
    notes = [
        f"Command: `python experiments/liver_demo.py{' ' + command if command else ''}`",
        (f"Machine: {S.machine()}; CPU only, 2D Genesis U-Net {d['model']}, {runs[0]['steps']} fine-tuning "
         f"steps of batch 4 x 64x64 slices per run (at least {d['steps']} and {min_epochs(d, 'liver')} passes "
         f"over the labelled slices), seeds {d['seeds']} (paired)."),
        f"Paired pretrained-minus-scratch Dice: {S.fmt_ci(diff)} (bootstrap over seeds).",
        (f"Pre-training: Genesis-2D, {pre.get('step')} steps on unlabelled cubes of ct_abdomen (validation "
         "ct_chest); the test scan is never used before testing."),
        (f"Train: all {len(data.train_z)} liver slices of ct_abdomen outside the {len(data.val_z)} validation "
         "slices; test: whole ct_dicom (another patient, 3 mm, 13 slices), Dice/IoU at threshold 0.5, HD95."),
        "BatchNorm statistics re-estimated on unlabelled training batches with the final weights (precise BN).",
        "Labels are TotalSegmentator's model outputs, not manual annotations: a small real demonstration.",
    ]
    paths = S.write_table("liver_demo", header, rows, notes,
                          {"runs": runs, "pretrain": pre, "seeds": d["seeds"], "paired_diff": diff},
                          d["results"])
    print("\n".join(Path(paths[0]).read_text().splitlines()))
    print(f"liver_dice: scratch={S.fmt(*stats['scratch'])} pretrained={S.fmt(*stats['pretrained'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
