"""Fine-tuning data augmentation on the device: the nnU-Net family of transforms as pure, jit-able JAX functions.

Per sample, each transform is applied with its own probability, in nnU-Net's order: rotation and scaling (one
affine resampling; image linear, label nearest-neighbour, edges replicated), Gaussian noise, Gaussian blur,
brightness (an additive shift), contrast, simulated low resolution, gamma, mirroring (each axis). Mirroring and the
spatial transforms move image and mask together; the intensity transforms touch the image only. Class labels
(classification) are never changed. Inputs are images in [0, 1] (the fine-tuning data's normalised units); after
the intensity transforms the image is clipped back to [0, 1], as the CT window clips HU.

Defaults follow nnU-Net v2's training transforms (probabilities, scale 0.7-1.4, blur sigma 0.5-1 voxel, contrast
0.75-1.25, gamma 0.7-1.5 with the image's mean and std kept, low resolution at zoom 0.5-1, mirroring with p 0.5 per
axis), with these differences: rotation +-30 degrees about each axis in 3D and in-plane in 2D; brightness is an
ADDITIVE shift configured in HU (``brightness_hu``, converted with the data's HU window), since a contrast phase
shifts organs by tens of HU; noise std is configured in HU (drawn uniform in [0, noise_std_hu]); low resolution is
nearest-neighbour down-sampling then LINEAR up-sampling (nnU-Net: cubic); resampling replicates the edge (the
patches are cut at the network's input size, with no margin to rotate into).

Config (``config.augment`` of the fine-tuning configs, :func:`default_config`) -> :class:`AugmentSettings` (frozen,
hashable: a static argument, so equal settings never recompile) by :func:`settings_from_config`. Randomness comes
from one ``jax.random`` key per batch (the train step's), split per sample: the same key gives the same batch.

    images, masks = augment_batch(key, images, masks, settings)        # (B, *spatial, C), (B, *spatial, 1)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.scipy import ndimage

# fold_in tags of one sample's key
_DECIDE, _ANGLES, _SCALE, _NOISE, _NOISE_FIELD, _BLUR, _BRIGHTNESS, _CONTRAST, _LOW_RES, _GAMMA, _MIRROR = range(11)
_DEFAULT_HU_PER_UNIT = 2000.0  # the published CT window [-1000, 1000] HU -> [0, 1]


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """Static augmentation settings in the data's normalised units (see :func:`default_config` for meanings)."""

    mirror_p: float = 0.5
    rotation_p: float = 0.2
    rotation_degrees: tuple[float, float, float] = (30.0, 30.0, 30.0)
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_p: float = 0.1
    noise_std: float = 30.0 / _DEFAULT_HU_PER_UNIT
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness_shift: float = 50.0 / _DEFAULT_HU_PER_UNIT
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_p: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    low_res_p: float = 0.25
    low_res_zoom: tuple[float, float] = (0.5, 1.0)


_PROBABILITIES = ("mirror_p", "rotation_p", "scale_p", "noise_p", "blur_p", "brightness_p", "contrast_p", "gamma_p",
                  "low_res_p")
_RANGES = ("scale_range", "blur_sigma", "contrast_range", "gamma_range", "low_res_zoom")


def default_config(enabled: bool = True) -> ml_collections.ConfigDict:
    """``config.augment``: nnU-Net-style augmentation, per-sample probabilities ``*_p``.

    - enabled: False turns every transform off (the train step then feeds the batch as it comes).
    - mirror_p 0.5: flip probability of each spatial axis (image and mask).
    - rotation_p 0.2, rotation_degrees (30, 30, 30): angle uniform in +-degrees about x, y, z (3D); a 2D network's
      slices rotate in-plane by the z angle.
    - scale_p 0.2, scale_range (0.7, 1.4): isotropic factor by which sampling coordinates are multiplied
      (below 1 enlarges the content).
    - noise_p 0.1, noise_std_hu 30: Gaussian noise with std uniform in [0, noise_std_hu] HU.
    - blur_p 0.2, blur_sigma (0.5, 1.0): Gaussian blur, sigma in voxels.
    - brightness_p 0.15, brightness_hu 50: additive shift uniform in +-brightness_hu HU.
    - contrast_p 0.15, contrast_range (0.75, 1.25): (x - mean) * factor + mean, clipped to the patch's range.
    - low_res_p 0.25, low_res_zoom (0.5, 1.0): nearest down-sampling to zoom x the size, linear up-sampling back.
    - gamma_p 0.3, gamma_range (0.7, 1.5): x ** gamma on the patch's min-max range, mean and std kept.
    - hu_per_unit None: HU per normalised unit, converting *_hu; None = config.data.hu_max - hu_min (2000 for the
      published window). Data without HU (MR, min-max normalised) read the *_hu fields on this same scale.
    """
    s = AugmentSettings()
    return ml_collections.ConfigDict(dict(
        enabled=enabled, mirror_p=s.mirror_p, rotation_p=s.rotation_p, rotation_degrees=s.rotation_degrees,
        scale_p=s.scale_p, scale_range=s.scale_range, noise_p=s.noise_p,
        noise_std_hu=s.noise_std * _DEFAULT_HU_PER_UNIT, blur_p=s.blur_p, blur_sigma=s.blur_sigma,
        brightness_p=s.brightness_p, brightness_hu=s.brightness_shift * _DEFAULT_HU_PER_UNIT,
        contrast_p=s.contrast_p, contrast_range=s.contrast_range, gamma_p=s.gamma_p, gamma_range=s.gamma_range,
        low_res_p=s.low_res_p, low_res_zoom=s.low_res_zoom,
        hu_per_unit=ml_collections.FieldReference(None, field_type=float),
    ))


def settings_from_config(config: Any, hu_per_unit: float | None = None) -> AugmentSettings | None:
    """``config.augment`` (ConfigDict or mapping) -> AugmentSettings, or None when absent or ``enabled`` is False.

    ``hu_per_unit`` converts the HU fields when the config leaves its own ``hu_per_unit`` unset (fine-tuning passes
    ``config.data.hu_max - hu_min``). A bad field raises ValueError naming it (``config.augment.<field>``).
    """
    if config is None:
        return None
    values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    if not values.pop("enabled", True):
        return None
    scale = values.pop("hu_per_unit", None) or hu_per_unit or _DEFAULT_HU_PER_UNIT
    if not float(scale) > 0:
        raise ValueError(f"config.augment.hu_per_unit must be positive, got {scale!r}")
    for hu_name, name in (("noise_std_hu", "noise_std"), ("brightness_hu", "brightness_shift")):
        if hu_name in values:
            value = values.pop(hu_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"config.augment.{hu_name} must be a number >= 0 (HU), got {value!r}")
            values[name] = float(value) / float(scale)
    known = {f.name for f in dataclasses.fields(AugmentSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config.augment: unknown field(s) {unknown}")
    for name in _PROBABILITIES:
        value = values.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"config.augment.{name} must be a probability in [0, 1], got {value!r}")
    for name in _RANGES:
        if name in values:
            pair = tuple(float(v) for v in values[name])
            if len(pair) != 2 or not 0.0 < pair[0] <= pair[1]:
                raise ValueError(f"config.augment.{name} must be (low, high) with 0 < low <= high, got "
                                 f"{values[name]!r}")
            values[name] = pair
    if "rotation_degrees" in values:
        degrees = tuple(float(v) for v in values["rotation_degrees"])
        if len(degrees) != 3 or min(degrees) < 0:
            raise ValueError("config.augment.rotation_degrees must be 3 angles >= 0 (about x, y, z), got "
                             f"{values['rotation_degrees']!r}")
        values["rotation_degrees"] = degrees
    return AugmentSettings(**values)


# --- the transforms, one sample (*spatial, C) --------------------------------------------------------------------


def _uniform(key: jax.Array, tag: int, low: float, high: float, shape: tuple[int, ...] = ()) -> jax.Array:
    return jax.random.uniform(jax.random.fold_in(key, tag), shape, jnp.float32, low, high)


def _below_or_above_one(key: jax.Array, tag: int, low: float, high: float) -> jax.Array:
    """nnU-Net's draw of a contrast factor or gamma: half the time in [low, 1), else in [max(low, 1), high]."""
    u = _uniform(key, tag, 0.0, 1.0, (2,))
    below = low + u[1] * (1.0 - low)
    above = max(low, 1.0) + u[1] * (high - max(low, 1.0))
    return jnp.where((u[0] < 0.5) & (low < 1.0), below, above)


def rotation_matrix(angles: jax.Array, spatial_dims: int) -> jax.Array:
    """Rotation (spatial_dims, spatial_dims) by ``angles`` (radians) about x, y, z; in 2D the z angle, in-plane."""
    if spatial_dims == 2:
        c, s = jnp.cos(angles[2]), jnp.sin(angles[2])
        return jnp.array([[c, -s], [s, c]])
    cx, sx = jnp.cos(angles[0]), jnp.sin(angles[0])
    cy, sy = jnp.cos(angles[1]), jnp.sin(angles[1])
    cz, sz = jnp.cos(angles[2]), jnp.sin(angles[2])
    rx = jnp.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = jnp.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = jnp.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rx @ ry @ rz


def resample(image: jax.Array, matrix: jax.Array, order: int) -> jax.Array:
    """``image`` (*spatial, C) sampled at ``centre + matrix @ (x - centre)`` for every voxel x, edges replicated;
    ``order`` 1 (linear, images) or 0 (nearest neighbour, masks)."""
    spatial = image.shape[:-1]
    centre = jnp.asarray([(n - 1) / 2.0 for n in spatial], jnp.float32)
    grid = jnp.stack(jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in spatial], indexing="ij"))
    offsets = grid.reshape(len(spatial), -1) - centre[:, None]
    coords = (matrix @ offsets + centre[:, None]).reshape(len(spatial), *spatial)
    channels = [ndimage.map_coordinates(image[..., c], list(coords), order=order, mode="nearest")
                for c in range(image.shape[-1])]
    return jnp.stack(channels, axis=-1).astype(image.dtype)


def gaussian_blur(image: jax.Array, sigma: jax.Array, max_sigma: float) -> jax.Array:
    """Separable Gaussian blur of the spatial axes of ``image`` (*spatial, C), ``sigma`` in voxels (traced; the
    kernel radius ceil(3 max_sigma) is static), edges replicated."""
    radius = max(1, math.ceil(3.0 * max_sigma))
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * (taps / sigma) ** 2)
    weights = weights / jnp.sum(weights)
    out = image
    for axis in range(image.ndim - 1):
        n = image.shape[axis]
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = jnp.pad(out, pad, mode="edge")
        out = sum(weights[k] * jax.lax.slice_in_dim(padded, k, k + n, axis=axis) for k in range(2 * radius + 1))
    return out


def simulate_low_resolution(image: jax.Array, zoom: jax.Array) -> jax.Array:
    """Nearest-neighbour down-sampling of each spatial axis to ``zoom`` x its size, then linear up-sampling back
    (separable, static shapes: the coarse grid is indexed, never built). zoom 1 is the identity."""
    out = image
    for axis in range(image.ndim - 1):
        n = image.shape[axis]
        coarse = jnp.maximum(jnp.ceil(n * zoom), 1.0)  # points of the coarse grid
        position = jnp.clip((jnp.arange(n, dtype=jnp.float32) + 0.5) * zoom - 0.5, 0.0, coarse - 1.0)
        lower = jnp.floor(position)
        frac = position - lower
        upper = jnp.minimum(lower + 1.0, coarse - 1.0)

        def source(j):  # the fine voxel a coarse point took its value from (nearest down-sampling)
            return jnp.clip(jnp.round((j + 0.5) / zoom - 0.5), 0, n - 1).astype(jnp.int32)

        shape = [1] * image.ndim
        shape[axis] = n
        frac = frac.reshape(shape)
        out = (1.0 - frac) * jnp.take(out, source(lower), axis=axis) + frac * jnp.take(out, source(upper), axis=axis)
    return out


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
    """(x - mean) * factor + mean per channel, clipped to the channel's original range (nnU-Net preserve_range)."""
    axes = tuple(range(image.ndim - 1))
    mean = jnp.mean(image, axis=axes, keepdims=True)
    lo, hi = jnp.min(image, axis=axes, keepdims=True), jnp.max(image, axis=axes, keepdims=True)
    return jnp.clip((image - mean) * factor + mean, lo, hi)


def adjust_gamma(image: jax.Array, gamma: jax.Array) -> jax.Array:
    """x ** gamma on each channel's min-max range, then the channel's mean and std restored (nnU-Net retain_stats)."""
    axes = tuple(range(image.ndim - 1))
    mean, std = jnp.mean(image, axis=axes, keepdims=True), jnp.std(image, axis=axes, keepdims=True)
    lo, hi = jnp.min(image, axis=axes, keepdims=True), jnp.max(image, axis=axes, keepdims=True)
    span = hi - lo
    out = jnp.power(jnp.clip((image - lo) / (span + 1e-7), 0.0, 1.0), gamma) * span + lo
    new_mean, new_std = jnp.mean(out, axis=axes, keepdims=True), jnp.std(out, axis=axes, keepdims=True)
    return (out - new_mean) / (new_std + 1e-8) * std + mean


def _augment_one(key: jax.Array, image: jax.Array, mask: jax.Array | None,
                 s: AugmentSettings) -> tuple[jax.Array, jax.Array | None]:
    """All transforms on one sample (*spatial, C) (and its mask (*spatial, 1) or None). A transform whose
    probability is 0 is not traced at all; otherwise its result is selected per sample (``jnp.where``)."""
    dtype = image.dtype
    image = image.astype(jnp.float32)
    nd = image.ndim - 1
    u = _uniform(key, _DECIDE, 0.0, 1.0, (9,))

    if s.rotation_p > 0 or s.scale_p > 0:
        rotate, scale = u[0] < s.rotation_p, u[1] < s.scale_p
        limits = jnp.deg2rad(jnp.asarray(s.rotation_degrees, jnp.float32))
        angles = jnp.where(rotate, _uniform(key, _ANGLES, -1.0, 1.0, (3,)) * limits, 0.0)
        factor = jnp.where(scale, _uniform(key, _SCALE, *s.scale_range), 1.0)
        matrix = rotation_matrix(angles, nd) * factor
        moved = rotate | scale
        image = jnp.where(moved, resample(image, matrix, order=1), image)
        if mask is not None:
            mask = jnp.where(moved, resample(mask, matrix, order=0), mask)

    intensity = False
    if s.noise_p > 0:
        std = _uniform(key, _NOISE, 0.0, s.noise_std)
        noise = std * jax.random.normal(jax.random.fold_in(key, _NOISE_FIELD), image.shape, jnp.float32)
        image = jnp.where(u[2] < s.noise_p, image + noise, image)
        intensity = True
    if s.blur_p > 0:
        sigma = _uniform(key, _BLUR, *s.blur_sigma)
        image = jnp.where(u[3] < s.blur_p, gaussian_blur(image, sigma, s.blur_sigma[1]), image)
        intensity = True
    if s.brightness_p > 0:
        shift = _uniform(key, _BRIGHTNESS, -s.brightness_shift, s.brightness_shift)
        image = jnp.where(u[4] < s.brightness_p, image + shift, image)
        intensity = True
    if s.contrast_p > 0:
        factor = _below_or_above_one(key, _CONTRAST, *s.contrast_range)
        image = jnp.where(u[5] < s.contrast_p, adjust_contrast(image, factor), image)
        intensity = True
    if s.low_res_p > 0:
        zoom = _uniform(key, _LOW_RES, *s.low_res_zoom)
        image = jnp.where(u[6] < s.low_res_p, simulate_low_resolution(image, zoom), image)
        intensity = True
    if s.gamma_p > 0:
        gamma = _below_or_above_one(key, _GAMMA, *s.gamma_range)
        image = jnp.where(u[7] < s.gamma_p, adjust_gamma(image, gamma), image)
        intensity = True
    if intensity:
        image = jnp.clip(image, 0.0, 1.0)

    if s.mirror_p > 0:
        flips = _uniform(key, _MIRROR, 0.0, 1.0, (nd,)) < s.mirror_p
        for axis in range(nd):
            image = jnp.where(flips[axis], jnp.flip(image, axis), image)
            if mask is not None:
                mask = jnp.where(flips[axis], jnp.flip(mask, axis), mask)
    return image.astype(dtype), mask


@functools.partial(jax.jit, static_argnames=("settings",))
def augment_batch(key: jax.Array, images: jax.Array, labels: jax.Array,
                  settings: AugmentSettings) -> tuple[jax.Array, jax.Array]:
    """Augment a batch: ``images`` (B, *spatial, C) in [0, 1]; ``labels`` either masks on the same grid
    (B, *spatial, 1), moved with the image, or class labels (B, ...) of another shape, returned unchanged. Sample i
    uses ``split(key, B)[i]``; same shapes and dtypes out. Callable inside a caller's jit (the fine-tuning step)."""
    if images.ndim not in (4, 5):
        raise ValueError(f"augment_batch: images must be (B, X, Y, C) or (B, X, Y, Z, C), got {images.shape}")
    keys = jax.random.split(key, images.shape[0])
    if labels.shape[:-1] == images.shape[:-1]:
        out, masks = jax.vmap(lambda k, x, m: _augment_one(k, x, m, settings))(keys, images, labels)
        return out, masks.astype(labels.dtype)
    out = jax.vmap(lambda k, x: _augment_one(k, x, None, settings)[0])(keys, images)
    return out, labels

