"""The one human line each command prints when it finishes: what it did, the headline numbers and where the
details are (the JSON stays in files: ``summary.json``, ``metrics.json``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def metrics_text(metrics: Mapping[str, Any], digits: int = 4) -> str:
    """``{'dice': 0.81234, 'hd95': 4.5}`` as ``dice 0.8123, hd95 4.5`` (numbers only; nested blocks left out)."""
    shown = [f"{name} {value:.{digits}g}" for name, value in metrics.items()
             if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)]
    return ", ".join(shown) or "no metric"


def pretrain_line(summary: Mapping[str, Any], path: Path) -> str:
    """A finished (or preempted) pre-training; everything else is in ``summary.json`` at ``path``."""
    best = (f"best val loss {summary['best_val_loss']:.4g} at step {summary['best_step']}"
            if summary.get("best_val_loss") is not None else "no validation yet")
    resumed = f", resumed from step {summary['resumed_from']}" if summary.get("resumed_from") is not None else ""
    weights = f"weights {summary['weights']}" if summary.get("weights") else "no weights exported (rerun to finish)"
    return (f"pretrain {summary['stopped']}: step {summary['step']} (epoch {summary['epoch']}){resumed}, {best}, "
            f"{summary['seconds']:.0f} s; {weights}; params {summary['params_fingerprint'][:16]}; details in {path}")
