"""Overlay PNGs of a segmentation: CT slices with the reference outline (green) and the prediction (red).

Axial slices are shown in the radiological convention, as a scanner console shows them: seen from the feet, the
patient's right on the image's left and anterior at the top, with R/L/A/P markers on every panel. Volumes arrive in
canonical RAS+ order (:mod:`genesis_jax.data.readers`: x towards the patient's right, y towards anterior), so the
x axis is flipped for display and y runs bottom to top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from genesis_jax.visualize import draw_panel, panel_figure, save_png, slice_of


def pick_slices(label: np.ndarray, prob: np.ndarray, count: int = 3, threshold: float = 0.5) -> list[int]:
    """Axial (last-axis) slice indices spread over the slices that hold reference or predicted foreground (the
    middle slices of the volume when there is none)."""
    depth = label.shape[-1]
    present = np.nonzero(((label > 0) | (prob > threshold)).reshape(-1, depth).any(0))[0]
    pool = present if len(present) else np.arange(depth)
    quantiles = np.linspace(0.2, 0.8, count) if count > 1 else [0.5]
    return sorted({int(pool[int(round(q * (len(pool) - 1)))]) for q in quantiles})


AXIAL_MARKERS = {"R": (0.03, 0.5), "L": (0.97, 0.5), "A": (0.5, 0.97), "P": (0.5, 0.03)}  # axes fractions


def radiological(axial: np.ndarray) -> np.ndarray:
    """An axial (X, Y) slice of a RAS+ volume flipped along x, so that drawn with x left to right (and y bottom to
    top) the patient's right lies on the image's left."""
    return np.asarray(axial)[::-1]


def orientation_markers(ax, markers: dict[str, tuple[float, float]] = AXIAL_MARKERS) -> None:
    """R/L/A/P letters at the panel's edges (axes fractions), readable on dark and bright slices."""
    for letter, (x, y) in markers.items():
        ax.text(x, y, letter, transform=ax.transAxes, ha="center", va="center", fontsize=8, fontweight="bold",
                color="yellow", bbox=dict(boxstyle="round,pad=0.1", facecolor="black", alpha=0.5, linewidth=0))


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
    image = np.asarray(image)
    image = image[..., 0] if image.ndim == 4 else image
    label, prob = np.asarray(label), np.asarray(prob)
    if not image.shape == label.shape == prob.shape:
        raise ValueError(f"save_overlay: image {image.shape}, label {label.shape}, prediction {prob.shape} differ")
    if image.ndim == 2:  # a single 2D image
        image, label, prob = image[..., None], label[..., None], prob[..., None]
    slices = list(slices) if slices is not None else pick_slices(label, prob, threshold=threshold)
    fig, axes = panel_figure(1, len(slices), (3.2, 3.4), pyplot=False)
    for ax, z in zip(axes[0], slices):
        draw_panel(ax, radiological(slice_of(image, 2, z)), f"z={z}",
                   contours=[(radiological(slice_of(label, 2, z) > 0), "lime"),
                             (radiological(slice_of(prob, 2, z) > threshold), "red")])
        orientation_markers(ax)
    if title:
        fig.suptitle(f"{title}  (green: reference, red: prediction)", fontsize=9)
    return save_png(fig, path, dpi=90)
