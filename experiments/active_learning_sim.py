"""Simulated active learning: AIFT selection vs random selection, with a stable learner and a positive control.

Design (issue 24, science audit section 4B):
- Pool: candidates on a regular 12 mm grid (the spatial de-duplication) of several sample CTs at 3 mm, contexts in
  the encoder's pre-training window ([-1000, 1000] HU -> [0, 1]): positive = the centre lies in the heart of
  ct_chest; negatives from ct_chest and ct_abdomen (which holds no heart: TotalSegmentator labels none), half of
  them intensity-matched to the positives (hard), half drawn uniformly (easy). 2,000 pool and 1,500 test candidates,
  8% positive, pool and test from alternating z blocks. ct_lung1/ct_lung2 are left out: they hold the heart
  without a heart label. ct_dicom is not used.
- m = 24 patches per candidate (3 scales x 8 flips/rotations, 10% random translations), so alpha = 1/4 scores 6.
- M_0: ``--weights DIR`` (a genesis_jax GenesisUNet weights directory: its encoder, 2D or 3D contexts as it was
  pre-trained) or a randomly initialised encoder (the control arm, the default). Features: the global average
  pool of the bottleneck of every patch, computed once (genesis_jax.active.linear_probe.encode_patch_sets) and
  standardised with the pool's statistics (unlabelled, never the test set's).
- Learner: an L2 softmax head fitted to convergence every round (Newton; genesis_jax.active.linear_probe). A round
  at chance loss or with constant predictions is a training failure: recorded, and the seed leaves the endpoint.
- Protocol: per seed, a random warm start of 32 labels (at least one of each class: a missing class replaces the
  last draw), shared by every arm; then 15 rounds of b = 16. Arms: random; aift (AIFT scores, randomised selection
  among the top omega*b, omega = 5); balanced_oracle (the positive control: b/2 positives and b/2 negatives at
  random, read from the oracle's labels; it shows the setup can detect the class-balancing effect). 30 seeds.
- Primary endpoint (the ONE): the per-seed ALC difference aift - random (ALC: area under the test ROC AUC curve
  over the labels queried after the warm start, divided by their range), mean with a paired t-interval.
  Secondary: the positive control's ALC difference, the positive share of the queried labels, and the saving at
  equal AUC on monotone (running maximum) mean curves with a paired bootstrap CI.

EXPECTED OUTCOME (written before the full run; expected, not promised): aift selects several times more positives
than random, its ALC exceeds random's by about +0.01 to +0.03 with a t-interval that may touch 0 on a random
encoder; the positive control exceeds random clearly. Reported as it comes.

Output (``config.sim.out``): curves.png, results.json, per_seed.md. The line
``alc_difference_aift_minus_random: <d> (95% CI <lo> to <hi>)`` and, last, ``annotation_saving_vs_random: ...``.

  python experiments/active_learning_sim.py [--weights DIR] [--tiny] [--config.sim.seeds=20 ...]
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

from genesis_jax.active.linear_probe import LinearProbe, TrainingFailure, encode_patch_sets, gap_feature_fn
from genesis_jax.active.patches import make_patch_set
from genesis_jax.active.pool import CandidatePool, LabelledScan, box_mean_intensity, multi_scan_pools
from genesis_jax.active.scores import aift_scores
from genesis_jax.active.selection import select_candidates
from genesis_jax.config_loader import load_config
from genesis_jax.evaluation.metrics import roc_auc


# -- data ---------------------------------------------------------------------------------------------------------
def sample_scans(sim) -> list[LabelledScan]:
    """The sample CTs of ``sim.scans`` ('name:organ' or 'name') at ``sim.spacing_mm``, in the HU window."""
    from genesis_jax.data import samples
    from genesis_jax.data.normalize import normalize_ct
    from genesis_jax.data.readers import resample

    scans = []
    for item in (s.strip() for s in sim.scans.split(",") if s.strip()):
        name, _, organ = item.partition(":")
        volume, label = samples.load_sample(name), samples.load_sample_label(name)
        spacing = (float(sim.spacing_mm),) * 3
        if tuple(volume.spacing) != spacing:
            volume, label = resample(volume, spacing), resample(label, spacing, order=0)
        positive = (label.array == samples.class_id(name, organ)) if organ else np.zeros(volume.array.shape, bool)
        scans.append(LabelledScan(name, normalize_ct(volume.array, *sim.hu_window), positive,
                                  volume.array > sim.body_hu))
    return scans


def synthetic_scans(seed: int = 0) -> list[LabelledScan]:
    """Two small phantom scans for the tiny run: a bright ellipsoid (positive) among bright and dim blobs."""
    rng = np.random.default_rng(seed)
    scans = []
    for s in range(2):
        shape = (40, 40, 32)
        grid = np.indices(shape).astype(np.float32)
        image = 0.3 + rng.normal(0, 0.03, shape).astype(np.float32)
        positive = np.zeros(shape, bool)
        if s == 0:
            positive = ((grid[0] - 20) / 9) ** 2 + ((grid[1] - 20) / 7) ** 2 + ((grid[2] - 16) / 12) ** 2 <= 1
            image[positive] += 0.4
        for _ in range(12):  # distractors: compact blobs as bright as the positive, or dimmer
            c = rng.uniform(4, 28, 3)
            blob = ((grid - c[:, None, None, None]) ** 2).sum(0) <= rng.uniform(9, 30)
            image[blob & ~positive] += rng.choice([0.4, 0.2])
        scans.append(LabelledScan(f"phantom{s}", np.clip(image, 0, 1), positive, np.ones(shape, bool)))
    return scans


# -- the encoder M_0 ----------------------------------------------------------------------------------------------
def load_encoder(config, weights: str | None):
    """(model, variables, description) of M_0: a GenesisUNet from a weights directory, or a fresh one."""
    from genesis_jax.models.unet import GenesisUNet

    if weights:
        from genesis_jax.models.weights import load_weights

        variables, model_cfg, metadata = load_weights(weights)
        if model_cfg.get("name", "genesis_unet") != "genesis_unet":
            raise ValueError(f"{weights}: model_config name {model_cfg.get('name')!r}; a GenesisUNet is needed")
        model = GenesisUNet(**{k: v for k, v in model_cfg.items() if k != "name"})
        # pre-training records its restoration quality gate in the weights' metadata as 'pretext_gate'
        gate = metadata.get("pretext_gate", metadata.get("init_gate"))
        desc = f"pre-trained encoder {weights} ({model.ndim}D, width {model.base_width}, depth {model.depth}); "
        desc += ("its metadata records no restoration gate" if gate is None else
                 f"its restoration gate: {json.dumps(gate, default=str)}")
        return model, variables, desc
    cfg = config.encoder.to_dict()
    model = GenesisUNet(**{k: v for k, v in cfg.items() if k != "name"})
    ndim = model.ndim
    patch = config.patches if ndim == 2 else config.patches3d
    dummy = np.zeros((1, *patch.patch_shape, 1), np.float32)
    variables = model.init(jax.random.key(config.seed), dummy, train=False)
    return model, variables, (f"randomly initialised encoder ({ndim}D, width {model.base_width}, depth "
                              f"{model.depth}; the control arm: no --weights given)")


# -- statistics ---------------------------------------------------------------------------------------------------
def alc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under a learning curve divided by the label range: its mean height."""
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def paired_t_interval(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the t-interval of the mean of paired differences."""
    from scipy import stats

    d = np.asarray(diffs, np.float64)
    if d.size < 2:
        return float(d.mean()) if d.size else float("nan"), float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def labels_to_reach(x: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """The first x where the piecewise-linear curve (x, y) reaches ``target`` (None if it never does)."""
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0:
                return float(x[0])
            return float(x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1]))
    return None


def saving(x: np.ndarray, arm: np.ndarray, baseline: np.ndarray) -> float | None:
    """1 - (labels the arm needs) / (labels the baseline needs) to reach the baseline's final mean AUC, on the
    running maximum of the mean curves (monotone, so noise cannot make a curve reach a level twice)."""
    arm_mean, base_mean = np.maximum.accumulate(arm.mean(0)), np.maximum.accumulate(baseline.mean(0))
    target = float(base_mean[-1])
    n_base, n_arm = labels_to_reach(x, base_mean, target), labels_to_reach(x, arm_mean, target)
    return None if n_arm is None or not n_base else 1.0 - n_arm / n_base


def saving_ci(x: np.ndarray, arm: np.ndarray, baseline: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """The saving and its paired bootstrap 95% CI (seeds resampled; a resample never reaching counts as -inf)."""
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, len(arm), len(arm))
        s = saving(x, arm[idx], baseline[idx])
        draws[b] = -np.inf if s is None else s
    lo, hi = np.quantile(draws, [0.025, 0.975], method="inverted_cdf")
    return {"saving": saving(x, arm, baseline), "ci": [float(lo), float(hi)]}


def pct(v: float | None) -> str:
    return "not reached" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


# -- the simulation -----------------------------------------------------------------------------------------------
def warm_start(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """``size`` random candidates with at least one of each class (a missing class replaces the last draws)."""
    picked = rng.choice(len(labels), size, replace=False)
    for c, cls in enumerate(np.unique(labels)):
        if not np.any(labels[picked] == cls):
            picked[-1 - c] = rng.choice(np.flatnonzero(labels == cls))
    return picked


def query(arm: str, probs: np.ndarray, labels: np.ndarray, available: np.ndarray, budget: int, key, config,
          rng: np.random.Generator) -> np.ndarray:
    """The candidates one arm asks the oracle for in one round."""
    if arm == "balanced_oracle":
        picked = []
        for cls, share in ((1, budget // 2), (0, budget - budget // 2)):
            free = np.flatnonzero(available & (labels == cls))
            picked.append(rng.choice(free, min(share, len(free)), replace=False))
        picked = np.concatenate(picked)
        if len(picked) < budget:  # a class ran out: fill at random
            free = np.setdiff1d(np.flatnonzero(available), picked)
            picked = np.concatenate([picked, rng.choice(free, budget - len(picked), replace=False)])
        return picked
    if arm == "random":
        return select_candidates(key, np.zeros(len(labels), np.float32), budget, "random", 1, available)
    if arm == "aift":
        sc = config.scores
        scores = np.asarray(aift_scores(probs.astype(np.float32), sc.alpha, sc.lambda1, sc.lambda2, sc.convention))
        return select_candidates(key, scores, budget, "randomized", config.selection.omega, available)
    raise ValueError(f"config.sim.arms: unknown arm {arm!r} (random, aift, balanced_oracle)")


def run_arm(arm: str, seed: int, probe: LinearProbe, pool_f: np.ndarray, pool_y: np.ndarray, test_f: np.ndarray,
            test_y: np.ndarray, config) -> dict:
    """One arm of one seed: the test AUC after the warm start and after every round, the positives queried."""
    sim = config.sim
    rng = np.random.default_rng([seed, 1])  # the warm start: the same for every arm of a seed
    labelled = warm_start(rng, pool_y, sim.warm_start)
    available = np.ones(len(pool_y), bool)
    available[labelled] = False
    arm_rng = np.random.default_rng([seed, 2])
    curve, xs = [], []
    for r in range(sim.rounds + 1):
        try:
            fit = probe.fit(pool_f[labelled], pool_y[labelled])
        except TrainingFailure as err:
            return {"failure": f"round {r}: {err}", "auc": curve, "x": xs}
        xs.append(len(labelled))
        curve.append(roc_auc(test_y, probe.predict(fit, test_f).mean(axis=1)[:, 1]))
        if r == sim.rounds:
            break
        probs = probe.predict(fit, pool_f) if arm == "aift" else None
        key = jax.random.fold_in(jax.random.key(seed, impl=config.prng_impl), r)
        new = query(arm, probs, pool_y, available, sim.budget, key, config, arm_rng)
        labelled = np.concatenate([labelled, new])
        available[new] = False
    queried = labelled[sim.warm_start:]
    return {"auc": curve, "x": xs, "positive_share": float(pool_y[queried].mean()), "failure": None}


def plot(x: np.ndarray, curves: dict[str, np.ndarray], full_pool_auc: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, (arm, y) in enumerate(curves.items()):
        m, s = y.mean(0), y.std(0, ddof=1) / np.sqrt(len(y))
        ax.plot(x, m, "o-", ms=3, color=f"C{k}", label=f"{arm} (n={len(y)})")
        ax.fill_between(x, m - 1.96 * s, m + 1.96 * s, color=f"C{k}", alpha=0.2)
    ax.axhline(full_pool_auc, color="gray", ls=":", lw=1, label="whole pool labelled")
    ax.set(xlabel="labels (warm start + queried)", ylabel="test ROC AUC (mean, 95% band of the mean)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="active/simulation")
    parser.add_argument("--tiny", action="store_true", help="= --config=active/simulation:tiny (a smoke run)")
    parser.add_argument("--weights", default="", help="a GenesisUNet weights directory for M_0's encoder")
    args, overrides = parser.parse_known_args(argv)
    config = load_config("active/simulation:tiny" if args.tiny else args.config, overrides)
    jax.config.update("jax_default_prng_impl", config.prng_impl)
    sim = config.sim
    out = Path(sim.out) if Path(sim.out).is_absolute() else REPO / sim.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    model, variables, m0 = load_encoder(config, args.weights)
    print(f"M_0: {m0}", flush=True)
    p = config.patches if model.ndim == 2 else config.patches3d
    patch_set = make_patch_set(p.patch_shape, p.box_shape, p.scales, p.translation, p.translation_mode,
                               p.flips_rotations, p.seed)
    context = tuple(int(np.ceil(b * max(p.scales) * (1 + 2 * p.translation))) for b in p.box_shape)
    scans = synthetic_scans() if sim.scans == "synthetic" else sample_scans(sim)
    pool, test = multi_scan_pools(scans, sim.pool_n, sim.test_n, context, tuple(p.box_shape), sim.grid_step,
                                  sim.positive_fraction, sim.hard_fraction, sim.block, seed=100)
    raw = {part: roc_auc(c.labels, box_mean_intensity(c.contexts, p.box_shape[0])) for part, c in
           (("pool", pool), ("test", test))}
    per_scan = {s.name: int(sum(f"-{s.name}-" in i for i in pool.ids)) for s in scans}
    print(f"pool {len(pool)} candidates ({pool.labels.mean():.1%} positive; per scan {per_scan}), test {len(test)} "
          f"({test.labels.mean():.1%} positive); contexts {context}, m = {patch_set.m} patches of {p.patch_shape}; "
          f"raw box-mean intensity AUC: pool {raw['pool']:.3f}, test {raw['test']:.3f}", flush=True)

    feats = {}
    for name, part in (("pool", pool), ("test", test)):
        t0 = time.time()
        feats[name] = encode_patch_sets(gap_feature_fn(model), variables, part.contexts, patch_set,
                                        config.features.chunk_size, config.features.device_batch)
        print(f"features of the {name}: {feats[name].shape} in {time.time() - t0:.0f} s", flush=True)
    mean, std = feats["pool"].mean(axis=(0, 1)), feats["pool"].std(axis=(0, 1)) + 1e-6  # unlabelled pool only
    pool_f, test_f = (feats["pool"] - mean) / std, (feats["test"] - mean) / std

    lc = config.learner
    if lc.kind != "linear_probe":
        raise ValueError(f"config.learner.kind={lc.kind!r}: this simulation runs the 'linear_probe' learner")
    probe = LinearProbe(2, lc.l2, lc.newton_steps, bucket_min=lc.bucket_min, guard_margin=lc.guard_margin,
                        min_spread=lc.min_spread)
    full = probe.fit(pool_f, pool.labels)
    full_auc = roc_auc(test.labels, probe.predict(full, test_f).mean(axis=1)[:, 1])
    print(f"whole pool labelled ({len(pool)}): test AUC {full_auc:.3f} (training loss {full.loss:.3f}, chance "
          f"{full.chance_loss:.3f})", flush=True)

    arms = [a.strip() for a in sim.arms.split(",") if a.strip()]
    runs = {arm: [] for arm in arms}
    for seed in range(sim.seeds):
        for arm in arms:
            res = run_arm(arm, seed, probe, pool_f, pool.labels, test_f, test.labels, config)
            runs[arm].append(res)
            if res["failure"]:
                print(f"seed {seed} {arm}: TRAINING FAILURE {res['failure']}", flush=True)
        print(f"seed {seed}: " + "; ".join(
            f"{arm} AUC {r[-1]['auc'][0]:.3f}->{r[-1]['auc'][-1]:.3f} ALC {alc(np.array(r[-1]['x']), np.array(r[-1]['auc'])):.3f} "
            f"pos {r[-1]['positive_share']:.0%}" if not r[-1]["failure"] else f"{arm} failed"
            for arm, r in runs.items()) + f" ({time.time() - start:.0f} s)", flush=True)

    ok = [s for s in range(sim.seeds) if not any(runs[a][s]["failure"] for a in arms)]
    failures = {a: sum(bool(r["failure"]) for r in runs[a]) for a in arms}
    print(f"training failures (rounds at chance or constant): {failures}; seeds in the endpoint: {len(ok)} of "
          f"{sim.seeds}")
    if len(ok) < 2:
        print("too few seeds without a training failure for an interval")
        print("annotation_saving_vs_random: not computed (training failures)")
        return 1
    x = np.asarray(runs["random"][ok[0]]["x"], np.float64)
    curves = {a: np.array([runs[a][s]["auc"] for s in ok]) for a in arms}
    alcs = {a: np.array([alc(x, c) for c in curves[a]]) for a in arms}
    summary = {"x": x.tolist(), "full_pool_auc": full_auc, "raw_intensity_auc": raw, "m0": m0,
               "training_failures": failures, "seeds_in_endpoint": ok, "arms": {}}
    for a in arms:
        share = float(np.mean([runs[a][s]["positive_share"] for s in ok]))
        summary["arms"][a] = {"mean_auc": curves[a].mean(0).tolist(), "alc": alcs[a].tolist(),
                              "positive_share_of_queries": share}
        print(f"{a:>16s}: mean AUC by labels " + " ".join(f"{int(n)}:{v:.3f}" for n, v in
                                                          zip(x, curves[a].mean(0)))
              + f"; ALC {alcs[a].mean():.4f}; positives among queried labels {share:.1%}")
    for a in arms:
        if a != "random":
            d, lo, hi = paired_t_interval(alcs[a] - alcs["random"])
            summary["arms"][a]["alc_difference_vs_random"] = [d, lo, hi]
            wins = int(np.sum(alcs[a] > alcs["random"]))
            print(f"ALC {a} - random: {d:+.4f} (95% t-interval {lo:+.4f} to {hi:+.4f}); {wins}/{len(ok)} seeds "
                  f"better{' [positive control]' if a == 'balanced_oracle' else ''}")
    rows = ["| seed | " + " | ".join(f"{a} ALC" for a in arms) + " |", "|---|" + "---|" * len(arms)]
    rows += [f"| {s} | " + " | ".join(f"{alcs[a][i]:.4f}" for a in arms) + " |" for i, s in enumerate(ok)]
    (out / "per_seed.md").write_text("\n".join(rows) + "\n")
    plot(x, curves, full_auc, f"AIFT vs random, {len(ok)} seeds; M_0: {'pre-trained' if args.weights else 'random'}",
         out / "curves.png")
    save = saving_ci(x, curves["aift"], curves["random"], int(sim.bootstrap)) if "aift" in arms else None
    summary["saving_aift_vs_random"] = save
    (out / "results.json").write_text(json.dumps({"config": config.to_dict(), "weights": args.weights,
                                                  "summary": summary, "runs": runs}, indent=1, default=str))
    print(f"wrote {out / 'curves.png'}, {out / 'results.json'}, {out / 'per_seed.md'} ({time.time() - start:.0f} s)")
    if "aift" not in arms:
        return 0
    d, lo, hi = summary["arms"]["aift"]["alc_difference_vs_random"]
    print(f"alc_difference_aift_minus_random: {d:+.4f} (95% CI {lo:+.4f} to {hi:+.4f})")
    print(f"annotation_saving_vs_random: {pct(save['saving'])} (95% CI {pct(save['ci'][0])} to "
          f"{pct(save['ci'][1])}; secondary, on monotone mean curves)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
