"""Annotation efficiency in 2D: Genesis-2D pre-trained vs scratch with 2, 4, 8 and all labelled slices, paired.

Protocol (experiments/_protocol.py, shared with pretext_comparison.py): the organ's axial slices of `ct_abdomen`
(non-contrast, 3 mm) in contiguous blocks of 4 with 2-slice gaps, dealt to the labelled pool, validation and the
in-domain test (pattern pool, test, validation, pool); the cross-phase test is the whole `ct_dicom` scan (another
patient, portal-venous contrast, never read before testing). 20 paired replicates per k: replicate r draws its k
slices (nested in k) and its batches, crops and augmentation from seed r in both arms; same network (Genesis U-Net,
keras variant, 2D, base width 8, depth 3), optimiser (Adam 1e-3), batch (4 x 64x64 crops) and step budget (80
steps, validation every 20, best-by-validation weights, precise BatchNorm statistics); only the initial weights
differ. Pre-training: `pretrain/sample_corpus_2d` (Genesis, 2D, Adam, 2,500 steps (3,000 planned, cut at step
~2,400 for CPU time before any fine-tuning used it) on ct_abdomen, ct_chest and ct_lung1; gate on the held-out ct_lung2; never ct_dicom), run once and cached; it is transferred only if it passed
its gate, and the gate of the weights used is the first line printed. Positive control: an init fine-tuned from
scratch on all slices of two pool blocks vs scratch, at k=2 slices drawn from the remaining pool block (disjoint),
to show the protocol can detect an initialisation that certainly helps. Statistics: per k the paired mean
difference (pre-trained minus scratch) with its 95% t-interval and the exact two-sided sign-flip p over all 2^20
sign patterns; the area under the learning curve (Dice over log2 k) per replicate, compared the same way. The
step budget (80) was fixed from the CPU time available before any test number was seen (a short budget may favour
the pre-trained arm, which starts nearer a solution); the validation curves
and the best-by-validation steps are reported to judge it.

EXPECTED OUTCOME (written and committed before the full run; issue 24): in-domain, pre-trained minus scratch Dice
about +0.02 to +0.08 at 2 to 8 labelled slices, its 95% CI above 0 at least at k=2, and about 0 (|d| < 0.02) with
all slices; the AULC difference positive. Cross-phase: smaller and noisier (the contrast shift dominates; the
pre-training saw no contrast-enhanced scan). Positive control: clearly positive at k=2 (> +0.05, p < 0.01). What
may defeat it: the labels are TotalSegmentator's model outputs, one training and one test patient, a tiny network
and budget; if the pre-training fails its gate there is no pre-trained arm and the study says so.

Run (the full study, liver: 8 groups of 20 replicates + the control, ~40-60 min of a loaded 2-core CPU; cached per
replicate under --workdir, so the same command resumes; --no-train reports what is cached):
  python experiments/annotation_efficiency.py [--organs liver spleen]
  python experiments/annotation_efficiency.py --tiny      # a smoke run of the same path (tiny network and steps)
  python experiments/annotation_efficiency.py --organs spleen --weights DIR --results DIR2 --workdir DIR3
      # a saved gated weights directory as the pre-trained arm (refused unless its metadata's gate passed)
Writes experiments/results/annotation_efficiency.{md,csv,json,png}; the last line is
  pretrained_minus_scratch_in_domain: k=2 <d> (95% CI <lo> to <hi>, sign-flip p <p>), k=4 ..., k=8 ...
Limits: labels are TotalSegmentator's model outputs; one training and one test patient; tiny networks on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import _study as S  # noqa: E402
import numpy as np  # noqa: E402

KS = (2, 4, 8, None)  # None: every pool slice
FINAL_KS = (2, 4, 8)


def parse(argv=None, doc: str = __doc__) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--organs", nargs="+", default=["liver"], help="TotalSegmentator classes of both sample CTs")
    p.add_argument("--workdir", default=str(P.DEFAULT_WORKDIR), help="pre-training and run cache")
    p.add_argument("--results", default=None, help="default: experiments/results (--tiny: <workdir>/tiny/results)")
    p.add_argument("--no-train", action="store_true", help="report only what the cache holds")
    p.add_argument("--tiny", action="store_true", help="a smoke run (tiny network, 4 steps, 3 replicates)")
    p.add_argument("--weights", default=None, help="a gated pre-trained weights directory as the pre-trained arm "
                   "(instead of the workdir's pre-training); refused unless its metadata's gate record passed")
    args = p.parse_args(argv)
    args.workdir = Path(args.workdir) / ("tiny" if args.tiny else "")
    args.results = Path(args.results) if args.results else (
        args.workdir / "results" if args.tiny else S.REPO / "experiments" / "results")
    args.recipe = P.tiny_recipe() if args.tiny else P.Recipe()
    return args


def transferable(pre: dict, tiny: bool) -> bool:
    """Gated weights are transferred; a smoke run transfers its 8-step weights regardless (to test the path)."""
    return bool(pre["weights"]) and (pre["passed"] or tiny)


def organ_groups(data: P.OrganData, inits: list[P.Init], recipe: P.Recipe, workdir: Path, train: bool,
                 ks=KS) -> dict[str, dict]:
    """{arm: {k: results}} of scratch and the pre-trained inits, smallest k first, scratch first (pretext_comparison
    shares it, and with it the cached scratch and genesis groups)."""
    arms = {"scratch": P.Init("scratch"), **{init.name: init for init in inits}}
    out: dict[str, dict] = {arm: {} for arm in arms}
    for k in ks:
        for arm, arm_init in arms.items():
            res, cached = P.run_arm(data, k, arm_init, recipe, workdir, train=train)
            if res:
                out[arm][k] = res
                print(P.group_line(data.organ, k, arm, res, cached), flush=True)
    return out


def positive_control(data: P.OrganData, recipe: P.Recipe, workdir: Path, train: bool) -> dict | None:
    """A same-organ init (scratch fine-tuned on every slice of the even pool blocks) vs scratch at k=2 slices of
    the odd pool blocks (disjoint from the init's)."""
    blocks = data.blocks["pool"]
    seen = [z for blk in blocks[0::2] for z in blk]
    unseen = [z for blk in blocks[1::2] for z in blk]
    source, _ = P.run_arm(data, None, P.Init("scratch"), dataclasses.replace(recipe, replicates=1), workdir,
                          pool=seen, name="control_source", save_best=True, train=train)
    weights = Path(workdir) / "runs" / data.organ / "control_source_kall.best.msgpack"
    if not source or not weights.is_file():
        return None
    init = P.Init("control", "variables", str(weights), tag=str(source[0]["val_dice"]))
    arms = {}
    for name, arm_init in (("scratch_unseen", P.Init("scratch")), ("control", init)):
        res, cached = P.run_arm(data, 2, arm_init, recipe, workdir, pool=unseen, name=name, train=train)
        print(P.group_line(data.organ, 2, name, res, cached), flush=True) if res else None
        arms[name] = res
    if not all(arms.values()):
        return None
    return {"source_slices": seen, "pool": unseen, "source_val_dice": source[0]["val_dice"],
            **{e: P.paired(arms["control"], arms["scratch_unseen"], e) for e in P.ENDPOINTS}, "runs": arms}


def summarise(groups: dict[str, dict], arm: str) -> dict:
    """Per endpoint: per k the paired arm-minus-scratch statistics, and the AULC comparison."""
    out = {}
    for e in P.ENDPOINTS:
        ks = [k for k in groups["scratch"] if k in groups.get(arm, {})]
        per_k = {k: P.paired(groups[arm][k], groups["scratch"][k], e) for k in ks}
        curve_ks = {(len(groups["scratch"][k][0]["slices"]) if k is None else k): k for k in ks}
        area = None
        if len(curve_ks) > 1:
            area = P.paired(P.aulc({n: groups[arm][k] for n, k in curve_ks.items()}, e),
                            P.aulc({n: groups["scratch"][k] for n, k in curve_ks.items()}, e), e)
        out[e] = {"per_k": per_k, "aulc": area}
    return out


def kname(k) -> str:
    return "all" if k is None else str(k)


def plot(groups_by_organ: dict, summaries: dict, arm: str, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from genesis_jax.visualize import save_png

    organs = list(groups_by_organ)
    fig, axes = plt.subplots(2, 2 * len(organs), figsize=(5 * 2 * len(organs), 8), squeeze=False)
    for col, organ in enumerate(organs):
        groups = groups_by_organ[organ]
        for j, e in enumerate(P.ENDPOINTS):
            ax = axes[0, 2 * col + j]
            for name, style in (("scratch", "s--"), (arm, "o-")):
                ks = [k for k in groups["scratch"] if k in groups.get(name, {})]
                if not ks:
                    continue
                x = [np.log2(len(groups[name][k][0]["slices"])) for k in ks]
                m = [S.mean_sd([r[e] for r in groups[name][k]]) for k in ks]
                ax.errorbar(x, [v[0] for v in m], yerr=[v[1] for v in m], fmt=style, capsize=3,
                            label=f"{name} (mean+-sd)")
            ks = list(groups["scratch"])
            ax.set_xticks([np.log2(len(groups["scratch"][k][0]["slices"])) for k in ks],
                          [kname(k) if k else f"all ({len(groups['scratch'][k][0]['slices'])})" for k in ks])
            ax.set(xlabel="labelled slices", ylabel=f"Dice ({e.replace('_', '-')})", title=f"{organ}: {e}")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            ax = axes[1, 2 * col + j]
            per_k = summaries[organ].get(e, {}).get("per_k", {})
            ks = list(per_k)
            if ks:
                x = np.arange(len(ks))
                m = np.array([per_k[k]["mean"] for k in ks])
                err = np.array([[per_k[k]["mean"] - per_k[k]["lo"], per_k[k]["hi"] - per_k[k]["mean"]] for k in ks]).T
                ax.errorbar(x, m, yerr=err, fmt="o", capsize=4)
                ax.axhline(0, color="k", lw=0.8)
                ax.set_xticks(x, [kname(k) for k in ks])
            ax.set(xlabel="labelled slices", ylabel=f"{arm} - scratch Dice (95% t-CI)", title=f"{organ}: {e}")
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_png(fig, path, dpi=90)  # laid out tightly, parent directories created, written atomically
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.weights:
        try:
            pre = P.given_weights(args.weights, "genesis")
        except ValueError as err:
            print(f"error: --weights: {err}", file=sys.stderr)
            return 2
        if not pre["passed"]:
            print(f"error: --weights refused: {P.gate_line(pre)}", file=sys.stderr)
            return 2
    S.setup_jax(args.workdir)
    if not args.weights:
        pre = P.pretrained_weights("genesis", args.workdir, args.tiny, train=not args.no_train)
    print(P.gate_line(pre), flush=True)
    use = transferable(pre, args.tiny)
    if args.tiny and not pre["passed"]:
        print("(smoke run: the tiny pre-training is transferred despite its gate, to test the path)")
    init = P.weights_init(pre) if use else None
    groups_by_organ, summaries, notes = {}, {}, []
    control = None
    for i, organ in enumerate(args.organs):
        data = P.organ_data(organ)
        print(data.describe(), flush=True)
        notes.append(data.describe())
        groups_by_organ[organ] = organ_groups(data, [init] if init else [], args.recipe, args.workdir, not args.no_train)
        summaries[organ] = summarise(groups_by_organ[organ], "genesis") if use else {}
        if i == 0:
            control = positive_control(data, args.recipe, args.workdir, not args.no_train)

    header = ["organ", "endpoint", "labelled slices", "n", "scratch Dice", "Genesis Dice",
              "Genesis - scratch (95% t-CI, sign-flip p)", "best step median (scratch/Genesis)"]
    rows = []
    for organ, s in summaries.items():
        groups = groups_by_organ[organ]
        for e, es in s.items():
            for k, c in es["per_k"].items():
                steps = "/".join(str(int(np.median([r["best_step"] for r in groups[a][k]])))
                                 for a in ("scratch", "genesis"))
                n_slices = len(groups["scratch"][k][0]["slices"])
                rows.append([organ, e, f"{n_slices}{' (all)' if k is None else ''}", c["n"], S.fmt(*c["reference"]),
                             S.fmt(*c["arm"]), P.fmt_paired(c), steps])
            if es["aulc"]:
                c = es["aulc"]
                rows.append([organ, e, "AULC (log2 k)", c["n"], S.fmt(*c["reference"]), S.fmt(*c["arm"]),
                             P.fmt_paired(c), ""])
    if control:
        for e in P.ENDPOINTS:
            c = control[e]
            rows.append([args.organs[0], e, "2 (positive control: same-organ init vs scratch)", c["n"],
                         S.fmt(*c["reference"]), S.fmt(*c["arm"]), P.fmt_paired(c), ""])
    curves = [f"{organ} {arm} k={kname(k)}: mean validation Dice by step " + " ".join(
        f"{st}:{np.mean([r['val_curve'][i] for r in res]):.3f}" for i, st in enumerate(res[0]["val_steps"]))
        for organ, groups in groups_by_organ.items() for arm, g in groups.items() for k, res in g.items()]
    budget = {organ: {arm: {kname(k): P.best_step_note(res, args.recipe) for k, res in g.items()}
                      for arm, g in groups.items()} for organ, groups in groups_by_organ.items()}
    command = " ".join(argv if argv is not None else sys.argv[1:]).strip()
    notes = [
        f"Command: `python experiments/annotation_efficiency.py{' ' + command if command else ''}`",
        f"Machine: {S.machine()} (shared and loaded: timings are not clean).",
        f"Recipe: {dataclasses.asdict(args.recipe)}; Adam, Dice loss, nnU-Net-style augmentation; best-by-validation "
        "weights with precise BatchNorm statistics; the control columns: 'scratch' = scratch on the control's pool.",
        P.gate_line(pre) + ("" if use else " -> no pre-trained arm"),
        *notes,
        f"Best-by-validation step at the budget's end (replicates): {budget}",
        *curves,
        ("Statistics: paired differences over the replicate seeds; 95% Student-t interval; exact two-sided "
         "sign-flip p (all 2^n sign patterns); AULC = trapezoidal area under Dice over log2(k) / log2 range."),
        ("Positive control: init = scratch fine-tuned on all slices of pool blocks "
         f"{control['source_slices'] if control else '-'} (validation Dice {control['source_val_dice']:.3f})"
         if control else "Positive control: not run (or not finished)."),
        "Labels are TotalSegmentator's model outputs; one training and one test patient; a small CPU study.",
    ]
    out = args.results
    png = plot(groups_by_organ, summaries, "genesis", out / "annotation_efficiency.png",
               f"Genesis-2D vs scratch, {args.recipe.replicates} paired replicates")
    raw = {"pretrain": pre, "recipe": dataclasses.asdict(args.recipe),
           "groups": {o: {a: {kname(k): v for k, v in g.items()} for a, g in gs.items()}
                      for o, gs in groups_by_organ.items()},
           "summaries": {o: {e: {"per_k": {kname(k): v for k, v in es["per_k"].items()}, "aulc": es["aulc"]}
                             for e, es in s.items()} for o, s in summaries.items()},
           "control": control and {k: v for k, v in control.items() if k != "runs"}, "plot": str(png)}
    S.write_table("annotation_efficiency", header, rows, notes, raw, out)
    print("\n".join(f"| {' | '.join(str(c) for c in row)} |" for row in [header, *rows]))
    print("\n".join(curves))
    print(f"results: {out / 'annotation_efficiency.md'}, plot: {png}")
    first = summaries.get(args.organs[0], {}).get("in_domain", {}).get("per_k", {})
    print("pretrained_minus_scratch_in_domain: " + ", ".join(
        f"k={k} " + (P.fmt_paired(first[k]) if k in first else "n/a (no pre-trained arm)") for k in FINAL_KS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
