"""Sliding-window inference over whole volumes (or whole images), and writing the result as NIfTI.

Windows tile the volume with a configurable overlap (the last window on each axis is aligned with the volume's
end, so every voxel is covered); a volume smaller than the window is padded and the padding cropped away again.
All windows of a volume are predicted in ONE jitted function: a ``lax.scan`` over batches of window origins
extracts the windows with ``dynamic_slice``, runs the network on the batch, weights each prediction by the blending
importance (Gaussian, centre-weighted as in nnU-Net, or constant) and adds it into an accumulator on the device.
The result is the weighted average: a probability map on the volume's own grid, so it can be written with the
input's affine (:func:`save_nifti`). The jitted function is compiled once per volume shape and reused.

Networks whose BatchNorm always uses batch statistics (the ``pytorch`` Genesis variant, as published) depend on
the other windows of the batch; the last batch is filled with repeats of real windows (given zero weight) so the
statistics stay those of real data.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genesis_jax.workdir import atomic_file

Blend = Literal["gaussian", "constant"]
PredictFn = Callable[[Any, jax.Array], jax.Array]


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Origins of windows of length ``window`` covering ``[0, size)`` with the given fractional overlap; the last
    window ends at ``size``. ``size`` must be >= ``window`` (pad first)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if window > size:
        raise ValueError(f"window {window} is larger than the axis ({size}); pad the volume first")
    step = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Centre-weighted blending map: a Gaussian with sigma = ``sigma_scale`` * window per axis, scaled to a maximum
    of 1, with its zeros lifted to the smallest positive value (so every voxel keeps a weight)."""
    grids = np.meshgrid(*[np.arange(w, dtype=np.float64) for w in window], indexing="ij")
    exponent = np.zeros(tuple(window))
    for grid, w in zip(grids, window):
        centre, sigma = (w - 1) / 2.0, max(w * sigma_scale, 1e-6)
        exponent += ((grid - centre) / sigma) ** 2
    g = np.exp(-0.5 * exponent)
    g /= g.max()
    g[g == 0] = g[g > 0].min()
    return g.astype(np.float32)


class SlidingWindow:
    """A reusable sliding-window predictor.

    Args:
      predict_fn: ``predict_fn(variables, windows) -> probabilities``: windows (B, *window, C) to (B, *window, K),
        e.g. ``model.apply``. It is traced once per volume shape, inside this object's jitted function.
      window: spatial window size (length 2 or 3; the volume has the same number of spatial axes).
      overlap: fraction of the window shared by neighbours along each axis (0.5: half a window).
      batch_size: windows per network call.
      blend: 'gaussian' (centre-weighted) or 'constant' (plain average).
      pad_value: value used to pad a volume smaller than the window (0 = air after the [0, 1] CT normalisation).
      num_classes: K, the channels ``predict_fn`` returns.
    """

    def __init__(
        self,
        predict_fn: PredictFn,
        window: Sequence[int],
        overlap: float = 0.5,
        batch_size: int = 4,
        blend: Blend = "gaussian",
        pad_value: float = 0.0,
        num_classes: int = 1,
        sigma_scale: float = 0.125,
    ):
        if blend not in ("gaussian", "constant"):
            raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.window = tuple(int(w) for w in window)
        self.overlap = float(overlap)
        self.batch_size = int(batch_size)
        self.pad_value = float(pad_value)
        self.num_classes = int(num_classes)
        self.importance = (
            gaussian_importance(self.window, sigma_scale) if blend == "gaussian" else np.ones(self.window, np.float32)
        )
        self._predict_fn = predict_fn
        self._jitted = jax.jit(self._accumulate)
        window_starts(max(self.window), max(self.window), self.overlap)  # validates the overlap early

    def _accumulate(self, variables: Any, volume: jax.Array, starts: jax.Array, valid: jax.Array) -> jax.Array:
        """volume (*spatial, C); starts (n_batches, B, ndim) int32; valid (n_batches, B) float32 -> (*spatial, K)."""
        ndim = len(self.window)
        channels = volume.shape[-1]
        importance = jnp.asarray(self.importance)[..., None]
        zero = jnp.zeros((), jnp.int32)

        def extract(start):
            return jax.lax.dynamic_slice(volume, (*start, zero), (*self.window, channels))

        def body(carry, batch):
            acc, weight = carry
            batch_starts, batch_valid = batch
            windows = jax.vmap(extract)(batch_starts)
            probs = self._predict_fn(variables, windows).astype(jnp.float32)
            if probs.shape != (*windows.shape[:-1], self.num_classes):
                raise ValueError(
                    f"predict_fn returned shape {probs.shape} for windows {windows.shape}; expected "
                    f"{(*windows.shape[:-1], self.num_classes)} (num_classes={self.num_classes})"
                )
            w = importance[None] * batch_valid.reshape((-1,) + (1,) * (ndim + 1))
            probs = probs * w

            def add(i, state):
                a, wt = state
                origin = (*batch_starts[i], zero)
                window = jax.lax.dynamic_slice(a, origin, probs.shape[1:])
                a = jax.lax.dynamic_update_slice(a, window + probs[i], origin)
                wt = jax.lax.dynamic_update_slice(wt, jax.lax.dynamic_slice(wt, origin, w.shape[1:]) + w[i], origin)
                return a, wt

            return jax.lax.fori_loop(0, batch_starts.shape[0], add, (acc, weight)), None

        acc0 = jnp.zeros((*volume.shape[:-1], self.num_classes), jnp.float32)
        weight0 = jnp.zeros((*volume.shape[:-1], 1), jnp.float32)
        (acc, weight), _ = jax.lax.scan(body, (acc0, weight0), (starts, valid))
        return acc / jnp.maximum(weight, 1e-8)

    def plan(self, spatial_shape: Sequence[int]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        """(padded shape, window origins (n_batches, B, ndim), validity (n_batches, B)) for a volume shape."""
        if len(spatial_shape) != len(self.window):
            raise ValueError(
                f"the volume has {len(spatial_shape)} spatial axes {tuple(spatial_shape)} but the window "
                f"{self.window} has {len(self.window)}"
            )
        padded = tuple(max(s, w) for s, w in zip(spatial_shape, self.window))
        origins = list(
            itertools.product(*[window_starts(s, w, self.overlap) for s, w in zip(padded, self.window)])
        )
        n = len(origins)
        n_batches = -(-n // self.batch_size)
        fill = n_batches * self.batch_size - n
        # Fill the last batch with repeats of real windows (zero weight): batch statistics stay those of real data.
        origins = origins + [origins[i % n] for i in range(fill)]
        valid = np.array([1.0] * n + [0.0] * fill, np.float32)
        starts = np.asarray(origins, np.int32).reshape(n_batches, self.batch_size, len(self.window))
        return padded, starts, valid.reshape(n_batches, self.batch_size)

    def __call__(self, variables: Any, volume: np.ndarray | jax.Array) -> np.ndarray:
        """Probability map (*spatial, K) for ``volume`` of shape (*spatial) or (*spatial, C)."""
        volume = jnp.asarray(volume, jnp.float32)
        if volume.ndim == len(self.window):
            volume = volume[..., None]
        if volume.ndim != len(self.window) + 1:
            raise ValueError(
                f"volume of shape {tuple(volume.shape)} does not match a {len(self.window)}D window {self.window} "
                "(expected (*spatial) or (*spatial, channels))"
            )
        spatial = tuple(volume.shape[:-1])
        padded, starts, valid = self.plan(spatial)
        if padded != spatial:
            pads = [(0, p - s) for p, s in zip(padded, spatial)] + [(0, 0)]
            volume = jnp.pad(volume, pads, constant_values=self.pad_value)
        probs = self._jitted(variables, volume, jnp.asarray(starts), jnp.asarray(valid))
        crop = tuple(slice(0, s) for s in spatial)
        return np.asarray(probs[crop])


def slicewise(predict_fn: PredictFn) -> PredictFn:
    """Run a 2D network over a 3D volume: ``SlidingWindow(slicewise(model.apply), (wx, wy, 1))`` feeds it windows of
    one axial slice, (B, wx, wy, 1, C) -> (B, wx, wy, C), and puts the slice axis back on its output, so all slices
    of a volume go through one compiled function in batches."""

    def predict(variables: Any, windows: jax.Array) -> jax.Array:
        return predict_fn(variables, windows[..., 0, :])[..., None, :]

    return predict


def sliding_window_inference(
    predict_fn: PredictFn,
    variables: Any,
    volume: np.ndarray | jax.Array,
    window: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    blend: Blend = "gaussian",
    pad_value: float = 0.0,
    num_classes: int = 1,
) -> np.ndarray:
    """One-off form of :class:`SlidingWindow` (build the class once to reuse its compilation across volumes)."""
    return SlidingWindow(predict_fn, window, overlap, batch_size, blend, pad_value, num_classes)(variables, volume)


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write ``array`` (e.g. a probability map on the input's grid; a trailing channel axis of 1 is dropped) as
    NIfTI with the input volume's ``affine``, so it overlays the original scan in any viewer."""
    import nibabel as nib

    array = np.asarray(array, np.float32)
    if array.ndim >= 3 and array.shape[-1] == 1:
        array = array[..., 0]
    affine = np.asarray(affine, np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"save_nifti: affine must be 4x4, got shape {affine.shape}")
    path = Path(path)
    with atomic_file(path) as tmp:  # a full disk or a kill leaves no partial file at ``path``
        nib.save(nib.Nifti1Image(array, affine), str(tmp))
    return path
