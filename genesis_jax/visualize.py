"""Matplotlib figures of volumes for notebooks and reports: one slice per panel, in a row or a grid of rows.

Arrays are (X, Y, Z) volumes or (X, Y) images in canonical RAS order, optionally with a trailing channel axis of
size 1; a volume is shown by one slice (the middle one along ``axis`` unless ``index`` says which), transposed so
that x runs left to right and y bottom to top (``origin='lower'``). Only plotting lives here: no computation.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def slice_of(array: Any, axis: int = 2, index: int | None = None) -> np.ndarray:
    """A 2D (X, Y)-ordered slice of ``array``: the image itself when it is 2D, else slice ``index`` (default: the
    middle one) along spatial ``axis``."""
    image = np.asarray(array)
    if image.ndim in (3, 4) and image.shape[-1] == 1 and image.ndim - 1 in (2, 3):
        image = image[..., 0]
    if image.ndim == 2:
        return image
    if image.ndim != 3:
        raise ValueError(f"slice_of: expected an (X, Y) image or an (X, Y, Z) volume, got shape {np.shape(array)}")
    index = image.shape[axis] // 2 if index is None else int(index)
    return np.take(image, index, axis=axis)


def _draw(ax: Any, image: np.ndarray, title: str, cmap: str, vmin: float | None, vmax: float | None,
          overlay: np.ndarray | None) -> None:
    ax.imshow(image.T, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
    if overlay is not None:
        ax.contour(overlay.T.astype(float), levels=[0.5], colors="tab:red", linewidths=1.0, origin="lower")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def show_grid(rows: Sequence[Mapping[str, Any]], *, axis: int = 2, index: int | None = None, cmap: str = "gray",
              vmin: float | None = 0.0, vmax: float | None = 1.0, overlays: Sequence[Any] | None = None,
              row_labels: Sequence[str] | None = None, size: float = 2.2, title: str | None = None) -> Any:
    """A figure with one row per mapping {panel title: array}, one panel per entry (a slice of each array).

    ``overlays``: one binary mask per row (or None) drawn as a red contour on every panel of that row.
    ``vmin``/``vmax`` = None scales each panel to its own range (e.g. HU volumes). Returns the Figure.
    """
    import matplotlib.pyplot as plt

    if not rows or not all(rows):
        raise ValueError("show_grid: expected at least one row with at least one panel")
    if overlays is not None and len(overlays) != len(rows):
        raise ValueError(f"show_grid: {len(overlays)} overlays for {len(rows)} rows")
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(size * ncols, size * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        overlay = None if overlays is None or overlays[r] is None else slice_of(overlays[r], axis, index)
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            name, array = list(row.items())[c]
            _draw(ax, slice_of(array, axis, index), name, cmap, vmin, vmax, overlay)
        if row_labels is not None:
            axes[r][0].set_ylabel(row_labels[r], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_slices(images: Mapping[str, Any], **kwargs: Any) -> Any:
    """One row of panels {title: array}; keyword arguments as :func:`show_grid` (``overlay`` is one mask)."""
    overlay = kwargs.pop("overlay", None)
    return show_grid([images], overlays=None if overlay is None else [overlay], **kwargs)


def show_triplets(inputs: Any, predictions: Any, targets: Any, *, max_rows: int = 4, **kwargs: Any) -> Any:
    """Rows of input | prediction | target for a batch (B, ...) of restorations or segmentations."""
    n = min(len(inputs), len(predictions), len(targets), max_rows)
    rows = [{"input": inputs[i], "prediction": predictions[i], "target": targets[i]} for i in range(n)]
    return show_grid(rows, **kwargs)
