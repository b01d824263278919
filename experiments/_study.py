"""Shared pieces of the CPU studies (annotation_efficiency.py, pretext_comparison.py, liver_demo.py through
_protocol.py, which owns their protocol).

- The 2D study setting: the network (a tiny Genesis U-Net, keras variant, on 64x64 axial slices at 3 mm), the
  fine-tuning data config of the sample CTs (``finetune_config_2d``), nested labelled subsets, JAX's caches.
- Statistics of paired studies: mean/sd, the Student-t interval (its quantile computed here, no scipy needed), the
  exact sign-flip p, the area under a learning curve; result tables (Markdown + CSV + JSON).
"""

from __future__ import annotations

import csv
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


def finetune_config_2d(organ: str, steps: int, steps_per_epoch: int, model: dict[str, Any] = STUDY_MODEL):
    """finetune/liver_sample:binary as a 2D slice task for ``organ`` (a TotalSegmentator class of both sample
    CTs): a fixed budget of ``steps``, validation every ``steps_per_epoch``, the final weights evaluated."""
    from genesis_jax.config_loader import load_config

    c = load_config("finetune/liver_sample:binary")
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


def labelled_subset(train_z: Sequence[int], k: int | None, seed: int) -> list[int]:
    """The first k slices of a seeded permutation (nested in k for a seed; k=None: all of them)."""
    order = np.random.default_rng(seed).permutation(len(train_z))
    return sorted(int(train_z[i]) for i in order[: len(order) if k is None else k])
