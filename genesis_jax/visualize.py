"""Pictures of volumes, one slice per panel, and of training curves: the one plotting helper of the package. Notebooks (``show_grid``),
training previews (``tile_grid``, :func:`genesis_jax.train.metrics_log.save_preview`), segmentation overlays
(:mod:`genesis_jax.evaluation.overlays`), active-learning thumbnails (:mod:`genesis_jax.active.session`) and
``genesis-jax visualize-transforms`` all draw with it.

Arrays are (X, Y, Z) volumes or (X, Y) images in canonical RAS order, optionally with a trailing channel axis of
size 1; a volume is shown by one slice (the middle one along ``axis`` unless ``index`` says which), transposed so
that x runs left to right and y bottom to top (``origin='lower'``). Only plotting lives here: no computation.
``save_curves`` draws the ``progress.png`` of training work directories (loss and validation curves). Figures for
files are pyplot-free (``panel_figure(..., pyplot=False)``: no global backend switch, so a notebook's
inline plotting keeps working); the notebooks' figures are pyplot ones, shown inline.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from genesis_jax.workdir import write_file_atomically


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


def tile_grid(rows: Sequence[Sequence[Any]], *, axis: int = 2, index: int | None = None, pad: int = 2,
              vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """A grey image in [0, 1] of panels without matplotlib (PNG previews, TensorBoard images): one slice of each
    array (:func:`slice_of`), clipped to [vmin, vmax] and scaled to [0, 1], oriented as the figures show it (x left
    to right, y bottom to top); ``pad`` white pixels between panels and between rows, whose panels match in size."""
    if not rows or not all(rows):
        raise ValueError("tile_grid: expected at least one row with at least one panel")
    lines = []
    for row in rows:
        tiles = [np.clip((slice_of(a, axis, index).astype(np.float32) - vmin) / (vmax - vmin), 0.0, 1.0).T[::-1]
                 for a in row]
        gap = np.ones((tiles[0].shape[0], pad), np.float32)
        lines.append(np.concatenate([part for tile in tiles for part in (gap, tile)][1:], axis=1))
    gap = np.ones((pad, lines[0].shape[1]), np.float32)
    return np.concatenate([part for line in lines for part in (gap, line)][1:], axis=0)


def panel_figure(nrows: int, ncols: int, panel: tuple[float, float] = (2.2, 2.2), *, pyplot: bool = True
                 ) -> tuple[Any, np.ndarray]:
    """(Figure, (nrows, ncols) array of axes), ``panel`` inches per panel. ``pyplot=False``: a Figure outside pyplot
    for files written by library code (no backend switch, nothing left open)."""
    size = (panel[0] * ncols, panel[1] * nrows)
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def draw_panel(ax: Any, image: np.ndarray, title: str = "", *, cmap: str = "gray", vmin: float | None = 0.0,
               vmax: float | None = 1.0, contours: Sequence[tuple[Any, str]] = (), fontsize: float = 9) -> None:
    """One (X, Y) slice on ``ax`` (x left to right, y bottom to top), each (mask, colour) of ``contours`` outlined
    where the mask is set; no ticks. ``vmin``/``vmax`` None: the slice's own range."""
    ax.imshow(np.asarray(image).T, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
    for mask, colour in contours:
        mask = np.asarray(mask, bool)
        if mask.any():  # contour() of an empty mask only warns
            ax.contour(mask.T.astype(float), levels=[0.5], colors=colour, linewidths=1.0)
    if title:
        ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """The figure laid out tightly, as PNG bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as a PNG at ``path`` (parent directories created); returns the path."""
    return write_file_atomically(path, figure_png(fig, dpi))  # a kill mid-write leaves no broken PNG


def show_grid(rows: Sequence[Mapping[str, Any]], *, axis: int = 2, index: int | None = None, cmap: str = "gray",
              vmin: float | None = 0.0, vmax: float | None = 1.0, overlays: Sequence[Any] | None = None,
              row_labels: Sequence[str] | None = None, size: float = 2.2, title: str | None = None,
              pyplot: bool = True) -> Any:
    """A figure with one row per mapping {panel title: array}, one panel per entry (a slice of each array).

    ``overlays``: one binary mask per row (or None) drawn as a red contour on every panel of that row.
    ``vmin``/``vmax`` = None scales each panel to its own range (e.g. HU volumes). ``pyplot=False`` for a figure
    written to a file (:func:`panel_figure`). Returns the Figure.
    """
    if not rows or not all(rows):
        raise ValueError("show_grid: expected at least one row with at least one panel")
    if overlays is not None and len(overlays) != len(rows):
        raise ValueError(f"show_grid: {len(overlays)} overlays for {len(rows)} rows")
    ncols = max(len(r) for r in rows)
    fig, axes = panel_figure(len(rows), ncols, (size, size), pyplot=pyplot)
    for r, row in enumerate(rows):
        overlay = None if overlays is None or overlays[r] is None else slice_of(overlays[r], axis, index)
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            name, array = list(row.items())[c]
            draw_panel(ax, slice_of(array, axis, index), name, cmap=cmap, vmin=vmin, vmax=vmax,
                       contours=() if overlay is None else [(overlay, "tab:red")])
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


def save_curves(path: str | Path, panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], *,
                xlabel: str = "step", title: str = "", log_y: Sequence[str] = ()) -> Path:
    """A PNG with one panel per entry of ``panels`` ({panel title: {curve label: (xs, ys)}}), curves as lines with
    markers (a single point still shows) and a legend; the panels named in ``log_y`` get a log y axis when every
    value is positive. Written atomically."""
    if not panels:
        raise ValueError("save_curves: no panel to draw")
    fig, axes = panel_figure(1, len(panels), (4.2, 3.0), pyplot=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        positive = True
        for label, (xs, ys) in curves.items():
            ys = np.asarray(ys, np.float64)
            ax.plot(np.asarray(xs, np.float64), ys, marker="o" if len(ys) < 30 else None, markersize=3,
                    linewidth=1.2, label=label)
            positive &= bool(len(ys)) and bool(np.all(ys[np.isfinite(ys)] > 0))
        if name in log_y and positive:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path, dpi=90)
