"""Shared code of the CPU studies (liver_demo.py, annotation_efficiency.py, active_learning_sim.py).

- The 2D study setting: a tiny Genesis U-Net (keras variant) on 64x64 axial slices of the TotalSegmentator sample
  CTs at 3 mm; ``pretrained_2d`` runs Genesis-2D restoration pre-training once on unlabelled cubes of ct_abdomen
  (train) and ct_chest (validation), never the test scan ct_dicom, and caches the weights for every study;
  ``slice_study_data`` cuts the labelled training scan into organ slices (a training and a validation block) and
  ``finetune_slices`` fine-tunes on k of them and tests on the whole ct_dicom volume.
- Statistics: mean/sd, paired bootstrap confidence intervals, area under a learning curve;
  result tables (Markdown + CSV + JSON); a run cache shared by the studies.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of the finite values."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if vals.size == 0:
        return float("nan"), float("nan")
    return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0


def fmt(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f}+-{sd:.{digits}f}"


def machine() -> str:
    """The device the numbers were measured on, in words."""
    import jax

    devices = jax.devices()
    kind = devices[0].device_kind if devices else "?"
    cpu = platform.processor() or platform.machine()
    return f"{platform.node() or 'host'}: {len(devices)} x {devices[0].platform} ({kind}), {cpu}"


def write_table(name: str, header: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str],
                raw: dict[str, Any], out_dir: Path = RESULTS_DIR) -> list[Path]:
    """``<name>.md`` (table + notes), ``<name>.csv`` and ``<name>.json`` (``raw``) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|"]
    md += [f"| {' | '.join(str(c) for c in row)} |" for row in rows]
    md += [""] + [f"- {n}" for n in notes]
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.csv", out_dir / f"{name}.json"]
    paths[0].write_text("\n".join(md) + "\n")
    with paths[1].open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    paths[2].write_text(json.dumps(raw, indent=2, default=float))
    return paths


# -- statistics of paired studies ------------------------------------------------------------------------------
def paired_bootstrap(diffs: Sequence[float], n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5%, 97.5%) of the mean of paired differences, resampling the pairs (seeds) with replacement."""
    d = np.asarray([v for v in diffs if v is not None and math.isfinite(v)], np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)): the density integrated by
    Simpson's rule on a fine grid and the CDF inverted by interpolation (relative error < 1e-6 for df >= 1, p <= 0.995)."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: p={p} must be in (0.5, 1) and df={df} >= 1")
    upper = 10.0 ** np.linspace(-6, 4, 200_001)
    x = np.concatenate([[0.0], upper])
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
    cdf = 0.5 + np.concatenate([[0.0], np.cumsum(np.diff(x) * (density[1:] + density[:-1]) / 2)])
    return float(np.interp(p, cdf, x))


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): the paired t confidence interval of the mean difference (nan for fewer than 2)."""
    d = np.asarray([v for v in diffs if v is not None and math.isfinite(v)], np.float64)
    if d.size < 2:
        return (float(d.mean()) if d.size else float("nan")), float("nan"), float("nan")
    half = t_quantile(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def sign_flip_p(diffs: Sequence[float], max_n: int = 24) -> float:
    """The exact two-sided sign-flip (paired permutation) p-value of the mean difference: the share of all 2^n sign
    patterns whose |sum| is at least the observed |sum| (the observed pattern counts). Vectorised in chunks."""
    d = np.asarray([v for v in diffs if v is not None and math.isfinite(v)], np.float64)
    n = d.size
    if n == 0:
        return float("nan")
    if n > max_n:
        raise ValueError(f"sign_flip_p: {n} pairs make 2^{n} patterns; at most {max_n} are enumerated")
    observed = abs(d.sum()) * (1 - 1e-12)
    bits = np.arange(n, dtype=np.int64)
    hits = 0
    for start in range(0, 2 ** n, 2 ** 16):
        patterns = np.arange(start, min(start + 2 ** 16, 2 ** n), dtype=np.int64)
        signs = 1.0 - 2.0 * ((patterns[:, None] >> bits) & 1)
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed))
    return hits / 2 ** n


def paired_summary(diffs: Sequence[float]) -> dict[str, Any]:
    """The study's paired statistics of pretrained-minus-scratch differences: mean, 95% t-interval, exact
    sign-flip p, n."""
    mean, lo, hi = t_interval(diffs)
    return {"mean": mean, "lo": lo, "hi": hi, "p": sign_flip_p(diffs), "n": len(diffs)}


def fmt_ci(stat: tuple[float, float, float], digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    m, lo, hi = (scale * v for v in stat)
    return f"{m:+.{digits}f}{unit} (95% CI {lo:+.{digits}f}{unit} to {hi:+.{digits}f}{unit})"


def area_under_curve(x: Sequence[float], y: Sequence[float]) -> float:
    """Trapezoidal area under (x, y), divided by the x range: the mean height of the learning curve."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.trapezoid(y, x) / (x[-1] - x[0])) if len(x) > 1 else float(y[0])


# -- the 2D study setting ----------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
SLICE_SHAPE = (64, 64)
SPACING_MM = (3.0, 3.0, 3.0)
# Genesis U-Net, keras variant (BatchNorm momentum 0.99, running averages at inference), CPU width.
STUDY_MODEL = dict(name="genesis_unet", variant="keras", ndim=2, base_width=8, depth=3, in_channels=1,
                   num_classes=1, head_activation="sigmoid", dtype="float32")


def setup_jax(workdir: Path) -> None:
    """The persistent compilation cache (every run compiles the same graphs) and the fast-compiling PRNG."""
    import jax

    jax.config.update("jax_default_prng_impl", "rbg")
    jax.config.update("jax_compilation_cache_dir", str(Path(workdir) / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pretrain_config_2d(steps: int, model: dict[str, Any] = STUDY_MODEL):
    """Genesis-2D restoration (pretrain/genesis_2d) on 64x64x8 cubes of the sample CTs at 3 mm: train
    ct_abdomen, validation ct_chest; the test scan ct_dicom is never read."""
    from genesis_jax.config_loader import load_config

    c = load_config("pretrain/genesis_2d:tiny,keras")
    c.model.update({k: v for k, v in model.items() if k in c.model})
    c.input_shape = (*SLICE_SHAPE, 1)
    samples = load_config("data/genesis_cubes:samples").data
    samples.samples = dict(train=("ct_abdomen",), validation=("ct_chest",), test=())
    samples.target_spacing = SPACING_MM
    samples.cubes.cube_shape = (*SLICE_SHAPE, 8)
    samples.cubes.margins = (8, 8, 4)
    samples.cubes.cubes_per_scan = 64
    samples.cubes.max_attempts = 3200
    c.data = samples
    c.global_batch_size = 16
    c.num_devices = 1
    c.steps_per_epoch = min(25, steps)
    c.max_steps = steps
    c.max_epochs = max(1, steps // c.steps_per_epoch)
    c.validation_batches = 4
    c.precise_bn.num_batches = 16  # the exported weights' BatchNorm statistics: 256 deformed training slices
    c.early_stopping.patience = 10_000  # a fixed budget
    c.checkpoint.every_steps = steps
    c.logging.preview_every_steps = steps
    c.logging.progress = False
    return c


def pretrained_2d(workdir: Path, steps: int, model: dict[str, Any] = STUDY_MODEL) -> tuple[str, dict[str, Any]]:
    """The Genesis-2D weights directory under ``workdir`` (pre-trained once, then reused by every study while the
    recipe is unchanged) and the pre-training summary."""
    import shutil

    from genesis_jax.train.pretrain import pretrain

    workdir = Path(workdir)
    config = pretrain_config_2d(steps, model)
    stamp = {"steps": steps, "model": model, "slice": SLICE_SHAPE, "spacing": SPACING_MM,
             "precise_bn": config.get("precise_bn", {}) and config.precise_bn.to_dict()}
    stamp_file, summary_file = workdir / "study_recipe.json", workdir / "study_summary.json"
    if summary_file.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == json.loads(
            json.dumps(stamp)):
        summary = json.loads(summary_file.read_text())
        if summary.get("weights") and (Path(summary["weights"]) / "model_config.json").is_file():
            print(f"pre-trained weights (cached): {summary['weights']}", flush=True)
            return summary["weights"], summary
    if workdir.exists():  # another recipe: start over
        shutil.rmtree(workdir)
    print(f"Genesis-2D pre-training ({steps} steps) ...", flush=True)
    summary = pretrain(config, workdir)
    if summary["weights"] is None:
        raise SystemExit(f"pre-training stopped ({summary['stopped']}) without weights; rerun to resume")
    summary_file.write_text(json.dumps(summary, indent=1, default=str))
    stamp_file.write_text(json.dumps(stamp))
    print(f"pre-trained weights: {summary['weights']} ({summary['seconds']:.0f} s, best validation loss "
          f"{summary['best_val_loss']})", flush=True)
    return summary["weights"], summary


def finetune_config_2d(organ: str, steps: int, steps_per_epoch: int, model: dict[str, Any] = STUDY_MODEL):
    """finetune/liver_sample as a 2D slice task for ``organ`` (a TotalSegmentator class of both sample
    CTs): a fixed budget of ``steps``, validation every ``steps_per_epoch``, the final weights evaluated."""
    from genesis_jax.config_loader import load_config

    c = load_config("finetune/liver_sample")
    c.model.update(model)
    c.input_shape = (*SLICE_SHAPE, 1)
    c.data.organ = organ
    c.global_batch_size = 4
    c.max_steps = steps
    c.steps_per_epoch = steps_per_epoch
    c.select_best = False
    c.early_stopping.patience = 0
    c.logging.progress = False
    c.logging.tensorboard = False
    c.sampling.validation_patches = 32
    c.precise_bn.num_batches = 16  # 64 unlabelled training patches per re-estimation (CPU budget)
    c.eval.window = SLICE_SHAPE  # slice by slice over the test volume
    c.eval.overlays = False
    return c


@dataclasses.dataclass
class SliceStudyData:
    """The labelled training scan cut into organ slices: ``train_z`` (what a labelled subset is drawn from) and
    ``val_z`` (validation only), plus the test volumes (the whole ct_dicom scan)."""

    image: np.ndarray  # (X, Y, Z) of the training scan, as the fine-tuning data holds it
    label: np.ndarray
    train_z: list[int]
    val_z: list[int]
    test_volumes: list
    description: str

    def task(self, z_train: Sequence[int]):
        from genesis_jax.data.sources import ListSource
        from genesis_jax.data.task_data import TaskData

        def slices(zs):
            return ListSource({"image": self.image[:, :, z:z + 1], "label": self.label[:, :, z:z + 1]} for z in zs)

        return TaskData("segmentation", slices(z_train), slices(self.val_z), SLICE_SHAPE,
                        test_volumes=self.test_volumes,
                        description=f"{self.description}; {len(z_train)} labelled training slices")


def slice_study_data(config, block: int = 3) -> SliceStudyData:
    """The axial slices of the training scan that hold the organ, in blocks of ``block`` consecutive slices:
    every fourth block is validation, the rest the labelled training pool (no slice in both)."""
    from genesis_jax.data.task_data import load_task_data

    data = load_task_data(config)
    volume = data.train[0]
    image, label = np.asarray(volume["image"]), np.asarray(volume["label"])
    zs = [int(z) for z in np.flatnonzero(label.any(axis=(0, 1)))]
    if len(zs) < 8:
        raise ValueError(f"the training scan has only {len(zs)} slices with {config.data.organ!r}")
    val = [z for i, z in enumerate(zs) if (i // block) % 4 == 3]
    train = [z for z in zs if z not in val]
    return SliceStudyData(image, label, train, val, data.test_volumes,
                          f"{config.data.organ}: train/validation slices of ct_abdomen, test ct_dicom (3 mm)")


def labelled_subset(train_z: Sequence[int], k: int | None, seed: int) -> list[int]:
    """The first k slices of a seeded permutation (nested in k for a seed; k=None: all of them)."""
    order = np.random.default_rng(seed).permutation(len(train_z))
    return sorted(int(train_z[i]) for i in order[: len(order) if k is None else k])


def validation_curve(run_dir: Path) -> list[dict[str, float]]:
    """The validation rows (step, val_loss, val_dice, ...) a fine-tuning run wrote."""
    path = Path(run_dir) / "validation.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def finetune_slices(config, data: SliceStudyData, z_train: Sequence[int], init: str, seed: int,
                    workdir: Path) -> dict[str, Any]:
    """One fine-tuning run on the labelled slices ``z_train`` from ``init`` ('scratch' or a weights directory):
    test Dice/IoU on the whole test volume and the validation curve."""
    from genesis_jax.train.finetune import finetune

    config.seed, config.init.checkpoint = seed, init
    summary = finetune(config, workdir, data=data.task(z_train))
    vol = summary["test"]["per_volume"][0]
    return {"dice": float(vol["dice"]), "iou": float(vol["iou"]), "hd95_mm": float(vol["hd95"]),
            "seconds": float(summary["seconds"]), "steps": int(summary["step"]),
            "validation": validation_curve(workdir)}


def cached_run(run_dir: Path, key: dict[str, Any], run: Any) -> tuple[dict[str, Any], bool]:
    """(``run(run_dir)``'s result, whether it came from the cache), the result stored as ``run_dir/result.json``
    with ``key``; a later call with the same key (the same organ, labelled slices, seed, initial weights and
    recipe) reads it instead of training again, so the liver demo and the annotation study share their identical
    runs. A different key starts the run over."""
    import shutil

    run_dir = Path(run_dir)
    path = run_dir / "result.json"
    key = json.loads(json.dumps(key, default=str))
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["result"], True
    if run_dir.exists():
        shutil.rmtree(run_dir)  # never resume a run of another recipe
    result = run(run_dir)
    path.write_text(json.dumps({"key": key, "result": result}, default=float))
    return result, False


def run_steps(n_labelled: int, steps: int, min_epochs: int, batch_size: int) -> int:
    """The step budget of a run on ``n_labelled`` slices: ``steps``, or ``min_epochs`` passes over the labelled
    slices (``ceil(min_epochs * n / batch_size)`` steps) when that is more; ``min_epochs=0``: always ``steps``.
    A post-hoc convergence rule (annotation_efficiency.py says why and how it was chosen)."""
    if min(n_labelled, steps, batch_size) < 1 or min_epochs < 0:
        raise ValueError(f"run_steps: n_labelled={n_labelled}, steps={steps}, batch_size={batch_size} must be >= 1 "
                         f"and min_epochs={min_epochs} >= 0")
    return max(steps, math.ceil(min_epochs * n_labelled / batch_size))


def study_runs(organ: str, ks: Sequence[int | None], seeds: Sequence[int], steps: int, steps_per_epoch: int,
               init: str, init_tag: str, workdir: Path, model: dict[str, Any] = STUDY_MODEL,
               min_epochs: int = 0) -> tuple[list[dict], SliceStudyData]:
    """Scratch and pretrained fine-tuning of ``organ`` for every k (labelled slices; None = all) and seed, paired:
    both arms of a (k, seed) train on the same slices with the same seed and budget (``run_steps``: ``steps``, or
    ``min_epochs`` passes over the k slices when that is more). ``init_tag`` identifies the pre-trained weights
    (their fingerprint) in the run cache."""
    base = finetune_config_2d(organ, steps, steps_per_epoch, model)
    data = slice_study_data(base)
    runs = []
    for k in ks:
        n = len(data.train_z) if k is None else k
        k_steps = run_steps(n, steps, min_epochs, int(base.global_batch_size))
        config = base if k_steps == steps else finetune_config_2d(organ, k_steps, steps_per_epoch, model)
        for seed in seeds:
            z = labelled_subset(data.train_z, k, seed)
            for arm, source in (("scratch", "scratch"), ("pretrained", init)):
                key = {"organ": organ, "slices": z, "seed": seed, "init": source,
                       "init_tag": init_tag if arm == "pretrained" else "", "steps": k_steps,
                       "steps_per_epoch": steps_per_epoch, "model": model, "val_z": data.val_z}
                name = f"{organ}_{'all' if k is None else k}_{arm}_seed{seed}"
                result, cached = cached_run(Path(workdir) / name, key,
                                    lambda d, z=z, source=source, seed=seed, config=config:
                                    finetune_slices(config, data, z, source, seed, d))
                runs.append({"organ": organ, "k": len(z), "all": k is None, "seed": seed, "arm": arm, **result})
                print(f"{organ:6s} {len(z):3d} slices seed {seed} {arm:10s}: test Dice {result['dice']:.4f} "
                      f"({result['seconds']:.0f} s{', cached' if cached else ''})", flush=True)
    return runs, data
