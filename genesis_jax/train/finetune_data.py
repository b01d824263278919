"""Fine-tuning data as in-memory arrays: training samplers, a fixed validation set and the test set.

Two training samplers, both deterministic functions of (seed, step), so a resumed run sees exactly the batches an
uninterrupted run would (no iterator state to save):

* :class:`ArrayPool`: a fixed pool of labelled samples (published NCS crops, NCC/ECC candidates, or patches cut once
  from labelled volumes), drawn epoch by epoch without replacement. ``subset(fraction)`` keeps a seeded, nested
  share of the pool: the annotation-efficiency study's "x% of the labels".
* :class:`VolumePatchSampler`: patches cut on the fly from whole labelled volumes (LiTS, BraTS), centred on a random
  foreground voxel with probability ``foreground_prob`` and anywhere otherwise; a 2D patch shape samples axial
  slices. ``subset(fraction)`` keeps a share of the volumes.

Both can flip samples along each spatial axis (the published "random flipping" augmentation), jointly for image and
label. Images come normalised (CT: HU clipped to [-1000, 1000] -> [0, 1]); labels are binary masks or class ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def _flip(rng: np.random.Generator, x: np.ndarray, y: np.ndarray | None, spatial_axes: Sequence[int]):
    for axis in spatial_axes:
        if rng.random() < 0.5:
            x = np.flip(x, axis)
            if y is not None:
                y = np.flip(y, axis)
    return x, y


def _with_channel(x: np.ndarray, spatial_ndim: int) -> np.ndarray:
    """(N, *spatial) -> (N, *spatial, 1); (N, *spatial, C) unchanged."""
    return x[..., None] if x.ndim == spatial_ndim + 1 else x


@dataclass
class ArrayPool:
    """Labelled samples ``x`` (N, *spatial[, C]) with ``y`` (N, *spatial[, 1]) masks or (N,)/(N, K) class labels."""

    x: np.ndarray
    y: np.ndarray
    spatial_ndim: int
    augment_flips: bool = False
    segmentation: bool = True

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"ArrayPool: {len(self.x)} images but {len(self.y)} labels")
        if len(self.x) == 0:
            raise ValueError("ArrayPool: no samples")
        self.x = _with_channel(np.asarray(self.x, np.float32), self.spatial_ndim)
        y = np.asarray(self.y, np.float32)
        self.y = _with_channel(y, self.spatial_ndim) if self.segmentation else (y[:, None] if y.ndim == 1 else y)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, fraction: float, seed: int = 0) -> "ArrayPool":
        """The first ceil(fraction * N) samples of a seeded permutation (nested across fractions for one seed)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
        keep = max(1, math.ceil(fraction * len(self)))
        idx = np.sort(np.random.default_rng([seed, 7919]).permutation(len(self))[:keep])
        return ArrayPool(self.x[idx], self.y[idx], self.spatial_ndim, self.augment_flips, self.segmentation)

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch number ``step``: samples step*B .. step*B+B-1 of the endless sequence of seeded epochs."""
        n = len(self)
        xs, ys = [], []
        rng = np.random.default_rng([seed, step, 1])
        perms: dict[int, np.ndarray] = {}
        for i in range(step * batch_size, (step + 1) * batch_size):
            epoch, pos = divmod(i, n)
            if epoch not in perms:
                perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
            j = perms[epoch][pos]
            x, y = self.x[j], self.y[j]
            if self.augment_flips:
                x, flipped = _flip(rng, x, y if self.segmentation else None, range(self.spatial_ndim))
                y = flipped if self.segmentation else y
            xs.append(x)
            ys.append(y)
        return np.stack(xs), np.stack(ys)


@dataclass
class LabelledVolume:
    """A whole volume with its label map on the same grid; ``affine`` and ``spacing`` place it in the world."""

    image: np.ndarray
    label: np.ndarray
    name: str = "volume"
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        self.image = np.asarray(self.image, np.float32)
        self.label = np.asarray(self.label)
        if self.image.shape[: self.label.ndim] != self.label.shape:
            raise ValueError(f"{self.name}: image {self.image.shape} and label {self.label.shape} grids differ")


def crop_with_padding(array: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float = 0.0) -> np.ndarray:
    """``array[start : start + size]`` over the leading axes, padded with ``pad_value`` where it leaves the array."""
    out = np.full(tuple(size) + array.shape[len(size):], pad_value, array.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, array.shape):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


class VolumePatchSampler:
    """Foreground-aware patches from labelled volumes (see the module docstring)."""

    def __init__(
        self,
        volumes: Sequence[LabelledVolume],
        patch_shape: Sequence[int],
        foreground_prob: float = 0.5,
        augment_flips: bool = False,
        max_foreground_points: int = 200_000,
    ):
        if not volumes:
            raise ValueError("VolumePatchSampler: no volumes")
        if len(patch_shape) not in (2, 3):
            raise ValueError(f"patch_shape must have 2 or 3 axes, got {tuple(patch_shape)}")
        self.volumes = list(volumes)
        self.patch_shape = tuple(int(p) for p in patch_shape)
        self.spatial_ndim = len(self.patch_shape)
        self.foreground_prob = float(foreground_prob)
        self.augment_flips = augment_flips
        self._fg = []
        rng = np.random.default_rng(0)
        for v in self.volumes:
            points = np.argwhere(v.label > 0)
            if len(points) > max_foreground_points:
                points = points[rng.choice(len(points), max_foreground_points, replace=False)]
            self._fg.append(points)

    def __len__(self) -> int:
        return len(self.volumes)

    def subset(self, fraction: float, seed: int = 0) -> "VolumePatchSampler":
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
        keep = max(1, math.ceil(fraction * len(self)))
        idx = np.sort(np.random.default_rng([seed, 7919]).permutation(len(self))[:keep])
        return VolumePatchSampler([self.volumes[i] for i in idx], self.patch_shape, self.foreground_prob, self.augment_flips)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One (image (*patch, C), label (*patch, 1)) pair."""
        k = int(rng.integers(len(self.volumes)))
        vol, fg = self.volumes[k], self._fg[k]
        shape3 = vol.label.shape
        if len(fg) and rng.random() < self.foreground_prob:
            centre = fg[int(rng.integers(len(fg)))]
        else:
            centre = np.array([rng.integers(d) for d in shape3])
        if self.spatial_ndim == 3:
            start = [int(c) - p // 2 for c, p in zip(centre, self.patch_shape)]
            x = crop_with_padding(vol.image, start, self.patch_shape)
            y = crop_with_padding(vol.label, start, self.patch_shape)
        else:  # an axial slice: the patch lies in the (x, y) plane at the centre's z
            start = [int(c) - p // 2 for c, p in zip(centre[:2], self.patch_shape)]
            z = int(centre[2])
            x = crop_with_padding(vol.image[:, :, z], start, self.patch_shape)
            y = crop_with_padding(vol.label[:, :, z], start, self.patch_shape)
        x = x if x.ndim == self.spatial_ndim + 1 else x[..., None]
        y = (y > 0).astype(np.float32)[..., None]
        if self.augment_flips:
            x, y = _flip(rng, x, y, range(self.spatial_ndim))
        return x, y

    def batch(self, step: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, step])
        pairs = [self.sample(rng) for _ in range(batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def fixed_set(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` patches drawn once with ``seed`` (no flips): a validation set or a labelled pool."""
        rng = np.random.default_rng([seed, 104729])
        flips, self.augment_flips = self.augment_flips, False
        try:
            pairs = [self.sample(rng) for _ in range(n)]
        finally:
            self.augment_flips = flips
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@dataclass
class TaskData:
    """Everything a fine-tuning run reads: the training sampler, a fixed validation set, and the test set (whole
    volumes for sliding-window segmentation, or arrays of crops / candidates)."""

    task: str
    train: ArrayPool | VolumePatchSampler
    validation: tuple[np.ndarray, np.ndarray]
    test_volumes: list[LabelledVolume] = field(default_factory=list)
    test_arrays: tuple[np.ndarray, np.ndarray] | None = None
    description: str = ""
