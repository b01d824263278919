"""Liver segmentation on real CT, in 2D: scratch vs Genesis-2D pre-trained on every labelled pool slice, paired.

The all-slices point of the annotation-efficiency study, on the same protocol and cached runs
(experiments/_protocol.py; running either script first makes the other cheaper): 20 paired replicates fine-tuned
on all liver slices of the gapped pool of `ct_abdomen` (3 mm), best-by-validation weights, tested on the held-out
in-domain blocks of the same scan and on the whole `ct_dicom` scan (another patient, contrast-enhanced, 3 mm).
Both arms use the same network (Genesis U-Net, keras variant, base width 8, depth 3, 2D), optimiser, slices, seed
and steps; only the initial weights differ. The pre-trained arm exists only if `pretrain/sample_corpus_2d`
passed its gate (the first line printed).

Run (CPU):
  python experiments/liver_demo.py            # 2 x 20 runs, cached under runs/studies_2d_v2
  python experiments/liver_demo.py --tiny     # a smoke run of the same path
Writes experiments/results/liver_demo.{md,csv,json}; the last printed line is
  liver_dice: scratch=<mean>+-<sd> pretrained=<mean>+-<sd>     (test Dice on ct_dicom, another patient)
Limits (say them with the numbers): the labels are TotalSegmentator's model outputs, not manual annotations; one
training and one test patient; a tiny 2D network and budget on a CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import _study as S  # noqa: E402
import annotation_efficiency as A  # noqa: E402


def main(argv=None) -> int:
    args = A.parse(argv, __doc__)
    logging.basicConfig(level=logging.WARNING)
    S.setup_jax(args.workdir)
    pre = P.pretrained_weights("genesis", args.workdir, args.tiny, train=not args.no_train)
    print(P.gate_line(pre), flush=True)
    init = P.weights_init(pre) if A.transferable(pre, args.tiny) else None
    data = P.organ_data("liver")
    groups = A.organ_groups(data, [init] if init else [], args.recipe, args.workdir, not args.no_train, ks=(None,))
    arms = {arm: g[None] for arm, g in groups.items() if None in g}
    header = ["init", "n", "test Dice ct_dicom (cross-phase)", "in-domain Dice (held-out blocks)", "best step median"]
    rows = [[arm, len(res), S.fmt(*S.mean_sd([r["cross_phase"] for r in res])),
             S.fmt(*S.mean_sd([r["in_domain"] for r in res])),
             sorted(r["best_step"] for r in res)[len(res) // 2]] for arm, res in arms.items()]
    diffs = {e: P.paired(arms["genesis"], arms["scratch"], e) for e in P.ENDPOINTS} if "genesis" in arms else {}
    command = " ".join(argv if argv is not None else sys.argv[1:]).strip()
    notes = [
        f"Command: `python experiments/liver_demo.py{' ' + command if command else ''}`",
        f"Machine: {S.machine()}; recipe {dataclasses.asdict(args.recipe)}.",
        P.gate_line(pre),
        data.describe(),
        *[f"Paired genesis-minus-scratch ({e}): {P.fmt_paired(c)}" for e, c in diffs.items()],
        "Labels are TotalSegmentator's model outputs, not manual annotations: a small real demonstration.",
    ]
    S.write_table("liver_demo", header, rows, notes, {"pretrain": pre, "runs": arms, "paired": diffs}, args.results)
    print("\n".join(f"| {' | '.join(str(c) for c in row)} |" for row in [header, *rows]))
    stats = {arm: S.fmt(*S.mean_sd([r["cross_phase"] for r in res])) for arm, res in arms.items()}
    print(f"liver_dice: scratch={stats.get('scratch', 'n/a (not run)')} "
          f"pretrained={stats.get('genesis', 'n/a (not run or no gated weights)')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
