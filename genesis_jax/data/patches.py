"""Fixed-size patches from volumes: centred crops with padding, and foreground-aware random patches.

``crop_centered`` serves the candidate builders (a crop around a world coordinate, padded with air beyond the
scan); ``sample_patch`` serves fine-tuning: with probability ``foreground_fraction`` the patch is centred on a
random foreground voxel, otherwise it is placed uniformly, so small structures (nodules, tumours, a liver in a
large field of view) are seen often enough. Both are plain NumPy on host data.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def crop_centered(array: np.ndarray, centre: Sequence[int], shape: Sequence[int], pad_value: float = 0) -> np.ndarray:
    """``shape`` crop of ``array`` centred on voxel ``centre`` (start = centre - shape // 2), padded beyond it."""
    shape = tuple(int(s) for s in shape)
    start = np.asarray(centre, dtype=np.int64) - np.asarray(shape) // 2
    out = np.full(shape, pad_value, dtype=array.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + shape, array.shape)
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = array[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
    return out


def pad_to_at_least(array: np.ndarray, shape: Sequence[int], pad_value: float = 0) -> np.ndarray:
    """Pad (at the high end) so every axis is at least ``shape``."""
    pad = [(0, max(0, int(s) - n)) for s, n in zip(shape, array.shape)]
    return np.pad(array, pad, constant_values=pad_value) if any(p for _, p in pad) else array


def sample_patch(image: np.ndarray, label: np.ndarray, patch_shape: Sequence[int], rng: np.random.Generator, *,
                 foreground_fraction: float = 0.5, foreground: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A random (image, label) patch of ``patch_shape``; centred on foreground with prob. ``foreground_fraction``.

    ``foreground``: precomputed (n, 3) coordinates of label > 0 (saves a scan of the label per call). Volumes
    smaller than the patch are padded with zeros.
    """
    patch = np.asarray([int(s) for s in patch_shape])
    image = pad_to_at_least(image, patch)
    label = pad_to_at_least(label, patch)
    shape = np.asarray(image.shape)
    if foreground is None:
        foreground = np.argwhere(label > 0)
    if len(foreground) and rng.random() < foreground_fraction:
        centre = foreground[rng.integers(len(foreground))]
        corner = np.clip(centre - patch // 2, 0, shape - patch)
    else:
        corner = rng.integers(0, shape - patch + 1)
    box = tuple(slice(int(c), int(c + p)) for c, p in zip(corner, patch))
    return image[box], label[box]
