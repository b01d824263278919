"""Sliding-window inference over whole volumes (or whole images), and writing the result as NIfTI.

Windows tile the volume with a configurable overlap (the last window on each axis is aligned with the volume's
end, so every voxel is covered); a volume smaller than the window is padded and the padding cropped away again.
All windows of a volume are predicted in ONE jitted function: a ``lax.scan`` over batches of window origins
extracts the windows with ``dynamic_slice``, runs the network on the batch, weights each prediction by the blending
importance (Gaussian, centre-weighted as in nnU-Net, or constant) and adds it into an accumulator on the device.
The result is the weighted average: a probability map on the volume's own grid, so it can be written with the
input's affine (:func:`save_nifti`). The jitted function is compiled once per volume shape and reused.

Test-time mirroring (``mirror_axes``, nnU-Net's "mirroring"): every window is also predicted flipped along each
combination of those axes, flipped back, and the predictions averaged (2^n network calls per window).
Progress (``progress=`` a callback): the same scan runs in at most 50 chunks of batches, one jitted call each with
the accumulators donated back to the device, so a caller can show windows done and an ETA; the result is the same.

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


IMPORTANCE_FLOOR = 1e-6  # the least weight of a window voxel; see gaussian_importance
PROGRESS_STEPS = 50  # with a progress callback, a volume's windows run in at most this many jitted calls


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Centre-weighted blending map: a Gaussian with sigma = ``sigma_scale`` * window per axis, scaled to a maximum
    of 1, with values below ``IMPORTANCE_FLOOR`` raised to it. The floor matters: a 64x64x32 window's corners weigh
    exp(-23) ~ 1e-10, below the accumulator's guard against division by zero (1e-8), so a voxel covered only by
    window corners (a volume's corners) came out with its probability scaled down ~100-fold before."""
    grids = np.meshgrid(*[np.arange(w, dtype=np.float64) for w in window], indexing="ij")
    exponent = np.zeros(tuple(window))
    for grid, w in zip(grids, window):
        centre, sigma = (w - 1) / 2.0, max(w * sigma_scale, 1e-6)
        exponent += ((grid - centre) / sigma) ** 2
    g = np.exp(-0.5 * exponent)
    g /= g.max()
    return np.maximum(g, IMPORTANCE_FLOOR).astype(np.float32)


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
      mirror_axes: spatial axes to mirror at test time (e.g. (0, 1, 2)); () = off.
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
        mirror_axes: Sequence[int] = (),
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
        self.mirror_axes = tuple(sorted({int(a) for a in mirror_axes}))
        if any(not 0 <= a < len(self.window) for a in self.mirror_axes):
            raise ValueError(f"mirror_axes {tuple(mirror_axes)} must be spatial axes of the {len(self.window)}D window")
        self._predict_fn = predict_fn
        self._jitted = jax.jit(self._accumulate)
        self._chunk = jax.jit(self._accumulate_batches, donate_argnums=(2,))
        self._finish = jax.jit(lambda carry: carry[0] / jnp.maximum(carry[1], 1e-8))
        window_starts(max(self.window), max(self.window), self.overlap)  # validates the overlap early

    def _predict_mirrored(self, variables: Any, windows: jax.Array) -> jax.Array:
        """``predict_fn`` on the windows, averaged over every flip combination of ``mirror_axes`` (flipped back)."""
        combos = itertools.chain.from_iterable(
            itertools.combinations(self.mirror_axes, n) for n in range(len(self.mirror_axes) + 1))
        total = None
        for axes in combos:
            batch_axes = tuple(a + 1 for a in axes)  # axis 0 is the batch
            flipped = jnp.flip(windows, batch_axes) if axes else windows
            probs = self._predict_fn(variables, flipped).astype(jnp.float32)
            probs = jnp.flip(probs, batch_axes) if axes else probs
            total = probs if total is None else total + probs
        return total / (2 ** len(self.mirror_axes))

    def _add_batch(self, variables: Any, volume: jax.Array, carry: tuple[jax.Array, jax.Array],
                   batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """Add one batch of windows (starts (B, ndim) int32, valid (B,)) into (accumulator, weight)."""
        ndim = len(self.window)
        channels = volume.shape[-1]
        importance = jnp.asarray(self.importance)[..., None]
        zero = jnp.zeros((), jnp.int32)
        batch_starts, batch_valid = batch

        def extract(start):
            return jax.lax.dynamic_slice(volume, (*start, zero), (*self.window, channels))

        windows = jax.vmap(extract)(batch_starts)
        probs = self._predict_mirrored(variables, windows)
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

        return jax.lax.fori_loop(0, batch_starts.shape[0], add, carry)

    def _zeros(self, volume: jax.Array) -> tuple[jax.Array, jax.Array]:
        return (jnp.zeros((*volume.shape[:-1], self.num_classes), jnp.float32),
                jnp.zeros((*volume.shape[:-1], 1), jnp.float32))

    def _accumulate_batches(self, variables: Any, volume: jax.Array, carry: tuple[jax.Array, jax.Array],
                            starts: jax.Array, valid: jax.Array) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
        """Scan batches of windows (starts (n, B, ndim), valid (n, B)) into ``carry``; also returns one of its voxels,
        a small value to wait for."""

        def body(c, batch):
            return self._add_batch(variables, volume, c, batch), None

        carry, _ = jax.lax.scan(body, carry, (starts, valid))
        return carry, carry[1][(0,) * carry[1].ndim]

    def _accumulate(self, variables: Any, volume: jax.Array, starts: jax.Array, valid: jax.Array) -> jax.Array:
        """volume (*spatial, C); starts (n_batches, B, ndim) int32; valid (n_batches, B) float32 -> (*spatial, K)."""
        (acc, weight), _ = self._accumulate_batches(variables, volume, self._zeros(volume), starts, valid)
        return acc / jnp.maximum(weight, 1e-8)

    def _accumulate_in_chunks(self, variables: Any, volume: jax.Array, starts: np.ndarray, valid: np.ndarray,
                              progress: Callable[[int], None]) -> jax.Array:
        """The same scan in at most ``PROGRESS_STEPS`` chunks of equal length (the last filled with zero-weight
        windows), one jitted call each, ``progress(real windows)`` after each."""
        per_chunk = -(-len(starts) // PROGRESS_STEPS)
        fill = -len(starts) % per_chunk
        starts = np.concatenate([starts, np.repeat(starts[:1], fill, axis=0)])
        valid = np.concatenate([valid, np.zeros((fill, *valid.shape[1:]), valid.dtype)])
        carry = jax.jit(self._zeros)(volume)
        pending: tuple[jax.Array, int] | None = None
        for i in range(0, len(starts), per_chunk):
            chunk_valid = valid[i: i + per_chunk]
            carry, token = self._chunk(variables, volume, carry, jnp.asarray(starts[i: i + per_chunk]),
                                       jnp.asarray(chunk_valid))
            # One chunk stays queued while the one before is waited for: the device never idles for the host, and
            # the progress (and its ETA) follows the device rather than the dispatch.
            done, pending = pending, (token, int(chunk_valid.sum()))
            if done is not None:
                done[0].block_until_ready()
                progress(done[1])
        if pending is not None:
            pending[0].block_until_ready()
            progress(pending[1])
        return self._finish(carry)

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

    def num_windows(self, spatial_shape: Sequence[int]) -> int:
        """How many windows (network inputs, before mirroring) cover a volume of this spatial shape."""
        return int(self.plan(spatial_shape)[2].sum())

    def __call__(self, variables: Any, volume: np.ndarray | jax.Array,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Probability map (*spatial, K) for ``volume`` of shape (*spatial) or (*spatial, C). ``progress``, when
        given, is called with the number of windows done after each batch (the volume then runs batch by batch)."""
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
        if progress is None:
            probs = self._jitted(variables, volume, jnp.asarray(starts), jnp.asarray(valid))
        else:
            probs = self._accumulate_in_chunks(variables, volume, starts, valid, progress)
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
