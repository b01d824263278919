"""Shared helpers of the fine-tuning studies (liver_demo.py, annotation_efficiency.py): summary statistics, result
tables (Markdown + CSV + JSON) and the label-saving estimate. Plain numbers in, files out; no training here."""

from __future__ import annotations

import csv
import json
import math
import platform
from pathlib import Path
from typing import Any, Sequence

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


def fraction_to_match(fractions: Sequence[float], curve: Sequence[float], target: float) -> float | None:
    """The smallest label fraction at which ``curve`` (means, one per fraction, fractions ascending) reaches
    ``target``, interpolating linearly between measured fractions; None when it never does."""
    f = np.asarray(fractions, np.float64)
    c = np.asarray(curve, np.float64)
    if c[0] >= target:
        return float(f[0])
    for i in range(1, len(f)):
        if c[i] >= target:
            t = (target - c[i - 1]) / (c[i] - c[i - 1])
            return float(f[i - 1] + t * (f[i] - f[i - 1]))
    return None
