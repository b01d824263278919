"""Overlay PNGs of a segmentation: CT slices with the reference outline (green) and the prediction (red)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def pick_slices(label: np.ndarray, prob: np.ndarray, count: int = 3, threshold: float = 0.5) -> list[int]:
    """Axial (last-axis) slice indices spread over the slices that hold reference or predicted foreground (the
    middle slices of the volume when there is none)."""
    depth = label.shape[-1]
    present = np.nonzero(((label > 0) | (prob > threshold)).reshape(-1, depth).any(0))[0]
    pool = present if len(present) else np.arange(depth)
    quantiles = np.linspace(0.2, 0.8, count) if count > 1 else [0.5]
    return sorted({int(pool[int(round(q * (len(pool) - 1)))]) for q in quantiles})


def save_overlay(
    image: np.ndarray,
    label: np.ndarray,
    prob: np.ndarray,
    path: str | Path,
    slices: Sequence[int] | None = None,
    threshold: float = 0.5,
    title: str = "",
) -> Path:
    """One row of panels (one per axial slice) of ``image`` (X, Y, Z) with the label outline in green and the
    thresholded prediction in red. Returns the PNG path."""
    # A pyplot-free Figure: no global backend switch, so a notebook's inline plotting keeps working.
    from matplotlib.figure import Figure

    image = np.asarray(image)
    image = image[..., 0] if image.ndim == 4 else image
    label, prob = np.asarray(label), np.asarray(prob)
    if not image.shape == label.shape == prob.shape:
        raise ValueError(f"save_overlay: image {image.shape}, label {label.shape}, prediction {prob.shape} differ")
    if image.ndim == 2:  # a single 2D image
        image, label, prob = image[..., None], label[..., None], prob[..., None]
    slices = list(slices) if slices is not None else pick_slices(label, prob, threshold=threshold)
    fig = Figure(figsize=(3.2 * len(slices), 3.4))
    axes = fig.subplots(1, len(slices), squeeze=False)
    for ax, z in zip(axes[0], slices):
        # rows of the array are x (towards the patient's right, RAS): transpose so x runs left to right and y
        # (anterior) up: the neurological view of an axial slice
        ax.imshow(image[:, :, z].T, cmap="gray", origin="lower", vmin=0.0, vmax=1.0)
        if (label[:, :, z] > 0).any():
            ax.contour((label[:, :, z] > 0).T.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        if (prob[:, :, z] > threshold).any():
            ax.contour((prob[:, :, z] > threshold).T.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(f"z={z}", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(f"{title}  (green: reference, red: prediction)", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
