"""Simulated active learning: AIFT scores + ACFT(HQ) against random selection (RFT), with an oracle.

For each pool (a synthetic 3D pool with known difficulty, and liver vs non-liver cubes of the sample CT, 3 mm
TotalSegmentator example, whose liver labels are that model's output, when the sample data is available), each seed and each arm, the loop starts from a fresh M_0 with no labels and, every round,
queries ``budget`` labels from the oracle, fine-tunes, and measures the candidate-level ROC AUC on a held-out test
set. The active arm scores the unlabelled pool (entropy + diversity, majority selection) and draws among the top
omega*b (randomised selection), fine-tuning continually on H u Q; the random arm draws uniformly and fine-tunes
from M_0 on all labels (RFT).

Outputs (``config.sim.out``): curves.png (mean +- std test AUC vs labels queried), results.json (every run).
The saving at equal performance: the labels the active arm needs (linear interpolation on its mean curve) to reach
the random arm's final mean AUC, against the labels the random arm needs for it. Last printed line:
``annotation_saving_vs_random: <percent>%``.

  python experiments/active_learning_sim.py --config=active/simulation:tiny
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

from genesis_jax.active.patches import PoolPredictor, make_patch_set
from genesis_jax.active.pool import CandidatePool, organ_cube_pools, synthetic_pool
from genesis_jax.active.scores import aift_scores
from genesis_jax.active.selection import select_candidates
from genesis_jax.active.session import build_learner, calibration_sample, make_key
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="active/simulation:tiny")
    args, overrides = parser.parse_known_args(argv)
    config = load_config(args.config, overrides)
    sim = config.sim
    out = Path(sim.out)
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    learner = build_learner(config)
    p = config.patches
    eval_set = make_patch_set(p.patch_shape, p.box_shape) if sim.eval_centre_patch_only else learner.patch_set
    evaluator = PoolPredictor(learner.predict_patches, eval_set, config.learner.chunk_size, config.learner.device_batch)
    arms = parse_arms(sim.arms)
    for arm in (sim.baseline_arm, sim.primary_arm):
        if arm not in arms:
            raise ValueError(f"config.sim: arm {arm!r} is not one of config.sim.arms ({sorted(arms)})")
    print(f"devices: {jax.devices()}; patches per candidate m={learner.patch_set.m}; "
          f"{sim.seeds} seeds x {sim.rounds} rounds x b={sim.budget}; arms {arms}")

    results = {}
    for name in [s.strip() for s in sim.pools.split(",") if s.strip()]:
        if name == "synthetic":
            pc = config.pool
            pool = synthetic_pool(sim.pool_n, pc.context_size, pc.positive_fraction, pc.hard_fraction, seed=100)
            test = synthetic_pool(sim.test_n, pc.context_size, pc.positive_fraction, pc.hard_fraction, seed=200,
                                  prefix="test")
        elif name == "ct":
            made = ct_pools(config)
            if isinstance(made, str):
                print(f"[ct] skipped: {made}")
                continue
            pool, test = made
        else:
            raise ValueError(f"config.sim.pools: unknown pool {name!r} (use 'synthetic' and/or 'ct')")
        print(f"[{name}] pool {len(pool)} candidates ({pool.labels.mean():.0%} positive), test {len(test)}")
        auc = {arm: [] for arm in arms}
        start = time.time()
        for seed in range(sim.seeds):
            calibration = calibration_sample(pool.contexts, learner.calibration_size, seed)
            v0 = learner.init(make_key(config, seed), pool.contexts.shape[1:], calibration)
            v0 = jax.tree.map(np.asarray, v0)
            auc0 = evaluate(evaluator, v0, test)
            for arm, (selection, strategy) in arms.items():
                curve = run_arm(learner, evaluator, config, pool, test, seed, selection, strategy, v0, auc0)
                auc[arm].append([a for _, a in curve])
                x = [n for n, _ in curve]
                print(f"[{name}] seed {seed} {arm:>8s} AUC by labels: "
                      + " ".join(f"{n}:{a:.3f}" for n, a in curve) + f"  ({time.time() - start:.0f}s)")
        xs = np.asarray(x)
        savings = {arm: saving(xs, np.asarray(auc[arm]), np.asarray(auc[sim.baseline_arm])) for arm in arms}
        results[name] = {"x": x, "auc": auc, "saving": savings, "arms": {a: list(v) for a, v in arms.items()}}
        for arm in arms:
            print(f"[{name}] mean AUC {arm:>8s}: " + " ".join(f"{v:.3f}" for v in np.mean(auc[arm], axis=0)))
        for arm in arms:
            if arm == sim.baseline_arm:
                continue
            s = savings[arm]
            reached = "never" if s["labels_arm"] is None else f"at {s['labels_arm']:.1f} labels"
            print(f"[{name}] {sim.baseline_arm} reaches its final mean AUC {s['target_auc']:.3f} at "
                  f"{s['labels_baseline']:.1f} labels; {arm} reaches it {reached}; "
                  f"ALC {arm} {s['alc_arm']:.3f} vs {sim.baseline_arm} {s['alc_baseline']:.3f}")
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
                value = "not reached" if s["saving"] is None else f"{100 * s['saving']:.1f}%"
                print(f"annotation_saving_vs_random[{name}, {arm}]: {value}")
    primary = sim.primary_pool if sim.primary_pool in results else next(iter(results))
    s = results[primary]["saving"][sim.primary_arm]
    if s["saving"] is None:
        print(f"(pool {primary}, arm {sim.primary_arm}: it never reached the {sim.baseline_arm} arm's final mean "
              f"AUC within the budget, so there is no saving)")
        print("annotation_saving_vs_random: 0.0%")
    else:
        print(f"(pool {primary}, arm {sim.primary_arm} vs {sim.baseline_arm})")
        print(f"annotation_saving_vs_random: {100 * s['saving']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
