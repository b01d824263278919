"""Simulated active learning: AIFT selection with AFT(LQ) and ACFT(HQ) against random selection (RFT), with an oracle.

Pools (``config.sim.pools``): 'ct_matched' (the study, active/simulation:cpu2d): 2D axial candidates of
the sample CT ct_abdomen (3 mm; TotalSegmentator labels, a model's output), liver (positive) vs other soft-tissue
organs (spleen, kidneys, stomach, pancreas, bowel, muscles, vessels: negatives) whose detection boxes are
resampled to the liver's mean-intensity histogram (genesis_jax.active.pool.matched_organ_pools), pool and test
set from alternating blocks of slices; 'synthetic' and 'ct' (3D, the older :tiny smoke config). M_0 is the
Genesis-2D pre-trained encoder of experiments/_study.py (cached, shared with the fine-tuning studies) with a fresh
head, and the active arms select from the first round on (no random first round), as published. Each seed and
arm starts from the same M_0 and, every round, queries ``budget`` labels, fine-tunes, and measures the
candidate-level ROC AUC on the test set: aift = AIFT scores (entropy + diversity over the patch set, majority
selection, randomised among the top omega*b) + AFT(LQ) (all labels from M_0); acft_hq = the same selection +
continual ACFT(HQ) at 1/10 of the restart learning rate; random = uniform queries + AFT(LQ) (RFT).

The gate (printed and enforced): the raw mean-intensity AUC of the detection boxes (pool and test; near 0.5 means
brightness alone does not separate them), and the headroom (mean test AUC of M_0 fine-tuned on the whole labelled
pool) - (mean AUC of the random arm after its first round), which must reach ``config.sim.min_headroom`` (0.05);
below it the pool is uninformative and no saving is reported.

PRE-REGISTERED (cpu2d, written and committed before the full run; reported whatever comes out): the gate passes;
AIFT selection (aift) reaches the random arm's final mean AUC with fewer labels than random, a saving of about
20-50%, whose 95% CI may include 0 with 10 seeds; its area under the learning curve exceeds random's; acft_hq
lies between aift and random.

Outputs (``config.sim.out``): curves.png (mean +- std test AUC vs labels queried), results.json (every run),
per_seed_<pool>.md. The saving at equal performance: 1 - (labels the arm needs, linear interpolation on its mean
curve, to reach the random arm's final mean AUC) / (labels the random arm needs for it), with a paired bootstrap
95% CI over seeds; ALC = area under the mean learning curve / label range, with the paired CI of its difference.
Last printed line: ``annotation_saving_vs_random: <x>% (95% CI <lo>% to <hi>%)`` (or ``uninformative ...``).

  python experiments/active_learning_sim.py                                           # cpu2d, 10 seeds
  python experiments/active_learning_sim.py --config=active/simulation:cpu2d,tiny    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

from genesis_jax.active.patches import PoolPredictor, make_patch_set
from genesis_jax.active.pool import (
    CandidatePool,
    box_mean_intensity,
    matched_organ_pools,
    organ_cube_pools,
    synthetic_pool,
)
from genesis_jax.active.scores import aift_scores
from genesis_jax.active.selection import select_candidates
from genesis_jax.active.session import build_learner, make_key
from genesis_jax.config_loader import load_config
from genesis_jax.evaluation.metrics import roc_auc


def ct_pools(config) -> tuple[CandidatePool, CandidatePool] | str:
    """Liver vs non-liver cubes of the sample CT (pool and test set from disjoint halves of the scan), or the
    reason they are unavailable."""
    sim = config.sim
    try:
        from genesis_jax.data import samples
        from genesis_jax.data.normalize import normalize_ct

        volume = samples.load_sample(sim.ct_sample)
        liver = samples.liver_mask(sim.ct_sample)
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as err:
        return f"sample CT unavailable ({type(err).__name__}: {err})"
    image01 = normalize_ct(volume.array, sim.ct_hu_min, sim.ct_hu_max)
    return organ_cube_pools(
        image01, liver, volume.array > -500.0, sim.pool_n, sim.test_n, config.pool.context_size,
        config.patches.box_shape[0], sim.ct_positive_fraction, seed=100,
    )


def ct_matched_pools(config) -> tuple[CandidatePool, CandidatePool] | str:
    """The headroom pool: 2D candidates of the sample CT, the positive organ vs other soft-tissue organs matched
    to it in intensity (genesis_jax.active.pool.matched_organ_pools), or the reason it is unavailable."""
    sim = config.sim
    try:
        from genesis_jax.data import samples
        from genesis_jax.data.normalize import normalize_ct

        volume = samples.load_sample(sim.ct_sample)
        labels = samples.load_sample_label(sim.ct_sample).array
        positive = labels == samples.class_id(sim.ct_sample, sim.ct_positive)
        others = [samples.class_id(sim.ct_sample, o.strip()) for o in sim.ct_negatives.split(",") if o.strip()]
    except (ImportError, OSError, RuntimeError, ValueError, KeyError) as err:
        return f"sample CT unavailable ({type(err).__name__}: {err})"
    image01 = normalize_ct(volume.array, sim.ct_hu_min, sim.ct_hu_max)
    return matched_organ_pools(image01, positive, np.isin(labels, others), sim.pool_n, sim.test_n,
                               config.pool.context_size, config.patches.box_shape[0], sim.ct_positive_fraction,
                               seed=100)


def run_arm(learner, evaluator, config, pool, test, seed, selection, strategy, v0, auc0) -> list[tuple[int, float]]:
    """One loop from M_0; returns [(labels queried, test AUC)] starting with (0, AUC of M_0)."""
    sim, sc = config.sim, config.scores
    n = len(pool)
    labelled = np.zeros((0,), np.int64)
    available = np.ones(n, bool)
    variables = v0
    curve = [(0, auc0)]
    for r in range(sim.rounds):
        probs = None
        if selection == "random" or r < sim.initial_random_rounds:
            scores = np.zeros(n, np.float32)
        else:
            probs = learner.predict(variables, pool.contexts)
            scores = np.asarray(aift_scores(probs, sc.alpha, sc.lambda1, sc.lambda2, sc.convention))
        method = "random" if r < sim.initial_random_rounds else selection
        new = select_candidates(make_key(config, seed, r), scores, sim.budget, method, config.selection.omega, available)
        old_probs = probs[labelled] if probs is not None else None
        variables, _, _ = learner.run_round(
            variables, v0, pool.contexts, pool.labels, new, labelled, make_key(config, seed, 1000 + r),
            old_probs, strategy,
        )
        labelled = np.concatenate([labelled, new])
        available[new] = False
        curve.append((len(labelled), evaluate(evaluator, variables, test)))
    return curve


def evaluate(evaluator: PoolPredictor, variables, test: CandidatePool) -> float:
    probs = evaluator(variables, test.contexts).mean(axis=1)
    return roc_auc(test.labels, probs[:, 1])


def labels_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The first x where the piecewise-linear curve (x, y) reaches ``target`` (None if it never does)."""
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0:
                return float(x[0])
            frac = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(x[i - 1] + frac * (x[i] - x[i - 1]))
    return None


def saving(x: np.ndarray, arm: np.ndarray, baseline: np.ndarray) -> dict:
    """Labels each arm needs (mean curves, linear interpolation) to reach the baseline's final mean AUC."""
    arm_mean, base_mean = arm.mean(axis=0), baseline.mean(axis=0)
    target = float(base_mean[-1])
    n_base = labels_to_reach(x, base_mean, target)
    n_arm = labels_to_reach(x, arm_mean, target)
    span = x[-1] - x[0]
    return {
        "target_auc": target,
        "labels_baseline": n_base,
        "labels_arm": n_arm,
        # None: the arm never reached the target within the budget (no saving to report)
        "saving": None if n_arm is None or not n_base else 1.0 - n_arm / n_base,
        # area under the learning curve (the published ALC), normalised by the label range
        "alc_arm": float(np.trapezoid(arm_mean, x) / span),
        "alc_baseline": float(np.trapezoid(base_mean, x) / span),
    }


def parse_arms(spec: str) -> dict[str, tuple[str, str]]:
    arms = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, _, rest = item.partition("=")
        selection, _, strategy = rest.partition("/")
        if not name or not selection or not strategy:
            raise ValueError(f"config.sim.arms: {item!r} is not name=selection/strategy")
        arms[name] = (selection, strategy)
    return arms


def plot(results: dict, baseline: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        x = np.asarray(res["x"])
        for k, (arm, curves) in enumerate(res["auc"].items()):
            y = np.asarray(curves)
            label = arm if arm == baseline else f"{arm} (saving: " + (
                "not reached" if res["saving"][arm]["saving"] is None else f"{100 * res['saving'][arm]['saving']:.0f}%"
            ) + ")"
            ax.plot(x, y.mean(0), "o-", color=f"C{k}", label=label)
            ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), color=f"C{k}", alpha=0.15)
        target = next(iter(res["saving"].values()))["target_auc"]
        ax.axhline(target, color="gray", ls=":", lw=1)
        ax.set(xlabel="labels queried (candidates)", ylabel="test ROC AUC (mean +- std over seeds)", title=name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headroom_gate(full_pool_auc, first_round_auc, min_headroom: float) -> dict:
    """Is the pool informative? (mean full-pool AUC) - (mean AUC after the first random round) must reach
    ``min_headroom``: with less, every arm is already near the ceiling after one round and no selection can show a
    saving, so none is reported."""
    full, first = float(np.mean(full_pool_auc)), float(np.mean(first_round_auc))
    headroom = full - first
    return {"full_pool_auc": full, "first_round_auc": first, "headroom": headroom,
            "min_headroom": float(min_headroom), "informative": bool(headroom >= min_headroom)}


def saving_ci(x: np.ndarray, arm: np.ndarray, baseline: np.ndarray, n_boot: int = 10_000,
              seed: int = 0) -> dict:
    """``saving`` of the mean curves and its paired bootstrap 95% CI (seeds resampled with replacement, the same
    seeds for both arms; a resample where the arm never reaches the target counts as -inf), plus the per-seed ALC
    difference (arm - baseline) with its CI."""
    from _study import paired_bootstrap

    point = saving(x, arm, baseline)
    rng = np.random.default_rng(seed)
    n = len(arm)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        s = saving(x, arm[idx], baseline[idx])["saving"]
        draws[b] = -np.inf if s is None else s
    lo, hi = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    span = x[-1] - x[0]
    alc = [float(np.trapezoid(a, x) / span - np.trapezoid(r, x) / span) for a, r in zip(arm, baseline)]
    return {**point, "saving_ci": [float(lo), float(hi)], "not_reached_share": float(np.mean(np.isinf(draws))),
            "alc_diff": paired_bootstrap(alc, n_boot, seed)}


def final_line(saving: dict, gate: dict) -> str:
    """The script's last line: the primary arm's saving with its CI, or, when the gate fails, that the pool is
    uninformative (no saving is reported then)."""
    if not gate["informative"]:
        return (f"annotation_saving_vs_random: uninformative (headroom {gate['headroom']:.3f} < "
                f"{gate['min_headroom']}; no saving reported)")
    lo, hi = saving["saving_ci"]
    return f"annotation_saving_vs_random: {pct(saving['saving'])} (95% CI {pct(lo)} to {pct(hi)})"


def pct(v: float | None) -> str:
    return "not reached" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


def initial_model(learner, config, pool: CandidatePool, seed: int) -> dict:
    """M_0 for one seed: ``config.init`` (a weights directory: the Genesis encoder into the classifier's backbone,
    a fresh head) or a fresh network, BatchNorm statistics set to precise statistics of a pool sample."""
    from genesis_jax.active.session import initial_variables

    c = config.copy_and_resolve_references()
    c.seed = seed
    return jax.tree.map(np.asarray, initial_variables(learner, c, pool.contexts))


def resolve_init(config) -> str:
    """``config.sim.init``: 'genesis_2d' = the cached Genesis-2D weights of experiments/_study.py (pre-trained
    there once, shared with the fine-tuning studies), else a weights directory or '' (a fresh M_0)."""
    init = config.sim.get("init", "") or ""
    if init != "genesis_2d":
        return init
    sys.path.insert(0, str(REPO / "experiments"))
    import _study

    _study.setup_jax(REPO / config.sim.study_workdir)
    model = dict(_study.STUDY_MODEL, base_width=config.model.base_width, depth=config.model.depth)
    weights, _ = _study.pretrained_2d(REPO / config.sim.study_workdir / "pretrain", config.sim.pretrain_steps, model)
    return weights


def per_seed_table(res: dict, baseline: str, out: Path, name: str) -> Path:
    x = np.asarray(res["x"])
    target = res["saving"][baseline]["target_auc"]
    header = ["seed", "full-pool AUC"] + [f"{a} {col}" for a in res["auc"] for col in
                                          ("final AUC", "ALC", "labels to target")]
    lines = [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|"]
    for s in range(len(res["full_pool_auc"])):
        row = [str(s), f"{res['full_pool_auc'][s]:.3f}"]
        for curves in res["auc"].values():
            y = np.asarray(curves[s])
            reach = labels_to_reach(x, y, target)
            row += [f"{y[-1]:.3f}", f"{np.trapezoid(y, x) / (x[-1] - x[0]):.3f}",
                    "never" if reach is None else f"{reach:.1f}"]
        lines.append(f"| {' | '.join(row)} |")
    path = out / f"per_seed_{name}.md"
    path.write_text("\n".join(lines) + f"\n\nlabels to target: the first label count where the seed's curve reaches "
                    f"the {baseline} arm's final mean AUC {target:.3f} (linear interpolation).\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="active/simulation:cpu2d")
    args, overrides = parser.parse_known_args(argv)
    config = load_config(args.config, overrides)
    sim = config.sim
    out = Path(sim.out)
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    config.init = resolve_init(config)
    learner = build_learner(config)
    p = config.patches
    eval_set = make_patch_set(p.patch_shape, p.box_shape) if sim.eval_centre_patch_only else learner.patch_set
    evaluator = PoolPredictor(learner.predict_patches, eval_set, config.learner.chunk_size, config.learner.device_batch)
    arms = parse_arms(sim.arms)
    for arm in (sim.baseline_arm, sim.primary_arm):
        if arm not in arms:
            raise ValueError(f"config.sim: arm {arm!r} is not one of config.sim.arms ({sorted(arms)})")
    min_headroom = float(sim.get("min_headroom", 0.05))
    print(f"devices: {jax.devices()}; patches per candidate m={learner.patch_set.m}; "
          f"{sim.seeds} seeds x {sim.rounds} rounds x b={sim.budget}; arms {arms}; "
          f"M_0: {config.init or 'a fresh network'}; random first rounds: {sim.initial_random_rounds}")

    results = {}
    for name in [s.strip() for s in sim.pools.split(",") if s.strip()]:
        if name == "synthetic":
            pc = config.pool
            pool = synthetic_pool(sim.pool_n, pc.context_size, pc.positive_fraction, pc.hard_fraction, seed=100)
            test = synthetic_pool(sim.test_n, pc.context_size, pc.positive_fraction, pc.hard_fraction, seed=200,
                                  prefix="test")
        elif name in ("ct", "ct_matched"):
            made = ct_pools(config) if name == "ct" else ct_matched_pools(config)
            if isinstance(made, str):
                print(f"[{name}] skipped: {made}")
                continue
            pool, test = made
        else:
            raise ValueError(f"config.sim.pools: unknown pool {name!r} (use 'synthetic', 'ct' or 'ct_matched')")
        box = config.patches.box_shape[0]
        raw_auc = {part: roc_auc(c.labels, box_mean_intensity(c.contexts, box)) for part, c in
                   (("pool", pool), ("test", test))}
        print(f"[{name}] pool {len(pool)} candidates ({pool.labels.mean():.0%} positive), test {len(test)}; "
              f"raw mean-intensity AUC of the detection box: pool {raw_auc['pool']:.3f}, test {raw_auc['test']:.3f}")
        auc = {arm: [] for arm in arms}
        full_pool = []
        start = time.time()
        for seed in range(sim.seeds):
            v0 = initial_model(learner, config, pool, seed)
            auc0 = evaluate(evaluator, v0, test)
            everything = np.arange(len(pool))
            v_full, _, _ = learner.run_round(v0, v0, pool.contexts, pool.labels, everything, everything[:0],
                                             make_key(config, seed, 999), None, "aft_lq")
            full_pool.append(evaluate(evaluator, v_full, test))
            print(f"[{name}] seed {seed}: M_0 AUC {auc0:.3f}; fine-tuned on the whole pool: {full_pool[-1]:.3f}")
            for arm, (selection, strategy) in arms.items():
                curve = run_arm(learner, evaluator, config, pool, test, seed, selection, strategy, v0, auc0)
                auc[arm].append([a for _, a in curve])
                x = [n for n, _ in curve]
                print(f"[{name}] seed {seed} {arm:>8s} AUC by labels: "
                      + " ".join(f"{n}:{a:.3f}" for n, a in curve) + f"  ({time.time() - start:.0f}s)", flush=True)
        xs = np.asarray(x)
        gate = headroom_gate(full_pool, [c[1] for c in auc[sim.baseline_arm]], min_headroom)
        savings = {arm: saving_ci(xs, np.asarray(auc[arm]), np.asarray(auc[sim.baseline_arm]),
                                  int(sim.get("bootstrap", 10_000))) for arm in arms}
        results[name] = {"x": x, "auc": auc, "saving": savings, "arms": {a: list(v) for a, v in arms.items()},
                         "full_pool_auc": full_pool, "gate": gate, "raw_intensity_auc": raw_auc}
        for arm in arms:
            print(f"[{name}] mean AUC {arm:>8s}: " + " ".join(f"{v:.3f}" for v in np.mean(auc[arm], axis=0)))
        print(f"[{name}] gate: raw mean-intensity AUC {raw_auc['pool']:.3f} (pool) / {raw_auc['test']:.3f} (test); "
              f"full-pool AUC {gate['full_pool_auc']:.3f} - AUC after the first random round "
              f"{gate['first_round_auc']:.3f} = headroom {gate['headroom']:.3f} "
              f"({'>=' if gate['informative'] else '<'} {min_headroom}: "
              f"{'informative' if gate['informative'] else 'UNINFORMATIVE, no saving reported'})")
        for arm in arms:
            if arm == sim.baseline_arm:
                continue
            s = savings[arm]
            reached = "never" if s["labels_arm"] is None else f"at {s['labels_arm']:.1f} labels"
            m, lo, hi = s["alc_diff"]
            print(f"[{name}] {sim.baseline_arm} reaches its final mean AUC {s['target_auc']:.3f} at "
                  f"{s['labels_baseline']:.1f} labels; {arm} reaches it {reached}; "
                  f"ALC {arm} {s['alc_arm']:.3f} vs {sim.baseline_arm} {s['alc_baseline']:.3f} "
                  f"(paired difference {m:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})")
        print(f"[{name}] per-seed table: {per_seed_table(results[name], sim.baseline_arm, out, name)}")
    if not results:
        print("no pool could be run")
        return 1
    (out / "results.json").write_text(
        json.dumps({"config": config.to_dict(), "results": results}, indent=1, default=str)
    )
    plot(results, sim.baseline_arm, out / "curves.png")
    print(f"wrote {out / 'curves.png'} and {out / 'results.json'}")
    for name, res in results.items():
        for arm, s in res["saving"].items():
            if arm != sim.baseline_arm:
                lo, hi = s["saving_ci"]
                print(f"annotation_saving_vs_random[{name}, {arm}]: {pct(s['saving'])} (95% CI {pct(lo)} to "
                      f"{pct(hi)}){'' if res['gate']['informative'] else ' [uninformative pool]'}")
    primary = sim.primary_pool if sim.primary_pool in results else next(iter(results))
    res = results[primary]
    s, gate = res["saving"][sim.primary_arm], res["gate"]
    print(f"(pool {primary}, arm {sim.primary_arm} vs {sim.baseline_arm}; labels the arm needs to reach the "
          f"{sim.baseline_arm} arm's final mean AUC, against the {sim.baseline_arm} arm's)")
    print(final_line(s, gate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
