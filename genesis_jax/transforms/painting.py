"""In-painting (noise boxes inside the cube) and out-painting (noise everywhere but a few windows of the original).

Published laws for an axis of length n (models_genesis.md §3.3), 64x64x32 values in brackets:
- in-painting: ``cnt = 5; while cnt > 0 and random() < 0.95`` (0 to 5 boxes); size ``U_int[n//6, n//3]``
  ([10, 21] and [5, 10]); origin ``U_int[3, n - size - 3]``; the box is filled with U[0,1) noise.
- out-painting: the whole cube becomes U[0,1) noise, then 1 + (``cnt = 4`` loop, continue probability 0.95) windows
  of the original are put back; size ``n - U_int[3n//7, 4n//7]`` ([28, 37] and [14, 19]); origin as above.
Later boxes overwrite earlier ones with fresh noise; since the noise is i.i.d. per voxel, filling the union of the
boxes from one noise field has the same distribution, and that is what is done here (one mask, one noise field).

Small cubes: the published constants need an axis of at least 14 voxels; below that, sizes are kept >= 1 and the
3-voxel margins shrink so that a box fits (documented clamp; 64x64x32 and 32x32x16 are exactly published).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genesis_jax.transforms import batching, sampling

MAX_INPAINT_BOXES = 5
MAX_OUTPAINT_WINDOWS = 5
CONTINUE_RATE = 0.95
MARGIN = 3


def inpaint_size_range(n: int) -> tuple[int, int]:
    lo = max(1, n // 6)
    return lo, max(lo, n // 3)


def outpaint_size_range(n: int) -> tuple[int, int]:
    """Window sizes n - U[3n//7, 4n//7], as an inclusive range of sizes (at least 1)."""
    hi = max(1, n - 3 * n // 7)
    return min(hi, max(1, n - 4 * n // 7)), hi


def _draw_boxes(
    stream: jax.Array, spatial_shape: tuple[int, ...], count: int, size_ranges: list[tuple[int, int]]
) -> tuple[jax.Array, jax.Array]:
    """``count`` boxes: origins and sizes (count, ndim) int32 with the given size laws and 3-voxel margins."""
    ndim = len(spatial_shape)
    lo = jnp.asarray([r[0] for r in size_ranges], jnp.int32)
    hi = jnp.asarray([r[1] for r in size_ranges], jnp.int32)
    dims = jnp.asarray(spatial_shape, jnp.int32)
    sizes = sampling.randint_from_unit(sampling.uniform(stream, (count, ndim), field=1), lo, hi)
    margin = jnp.minimum(MARGIN, (dims - sizes) // 2)
    u_origin = sampling.uniform(stream, (count, ndim), field=2)
    origins = sampling.randint_from_unit(u_origin, margin, dims - sizes - margin)
    return origins, sizes


def box_union_mask(
    origins: jax.Array, sizes: jax.Array, active: jax.Array, spatial_shape: tuple[int, ...]
) -> jax.Array:
    """bool (*spatial_shape,): voxels inside any active box; boxes are outer products of per-axis intervals.

    Per axis, bit b of ``bits[i]`` says whether coordinate i lies in box b's interval; a voxel is in box b when
    bit b is set on every axis. The per-axis bit vectors are materialised, so each voxel costs a few loads and
    ANDs instead of the interval tests of every box (which XLA would otherwise recompute per voxel).
    """
    ndim = len(spatial_shape)
    count = origins.shape[0]
    box_bit = jnp.left_shift(jnp.int32(1), jnp.arange(count, dtype=jnp.int32))
    inside = jnp.sum(jnp.where(active, box_bit, 0))
    for a, n in enumerate(spatial_shape):
        coord = jnp.arange(n)[:, None]
        in_interval = (coord >= origins[None, :, a]) & (coord < origins[None, :, a] + sizes[None, :, a])
        bits = batching.materialise(jnp.sum(jnp.where(in_interval, box_bit[None, :], 0), axis=1))
        inside = inside & bits.reshape((n,) + (1,) * (ndim - a - 1))
    return inside != 0


def inpaint_mask(stream: jax.Array, spatial_shape: tuple[int, ...]) -> jax.Array:
    """Voxels replaced by noise under in-painting (0 to 5 boxes)."""
    count = sampling.leading_successes(sampling.uniform(stream, (MAX_INPAINT_BOXES,)), CONTINUE_RATE)
    origins, sizes = _draw_boxes(
        stream, spatial_shape, MAX_INPAINT_BOXES, [inpaint_size_range(n) for n in spatial_shape]
    )
    return box_union_mask(origins, sizes, jnp.arange(MAX_INPAINT_BOXES) < count, spatial_shape)


def outpaint_keep_mask(stream: jax.Array, spatial_shape: tuple[int, ...]) -> jax.Array:
    """Voxels that keep their value under out-painting (1 to 5 windows)."""
    extra = sampling.leading_successes(sampling.uniform(stream, (MAX_OUTPAINT_WINDOWS - 1,)), CONTINUE_RATE)
    origins, sizes = _draw_boxes(
        stream, spatial_shape, MAX_OUTPAINT_WINDOWS, [outpaint_size_range(n) for n in spatial_shape]
    )
    return box_union_mask(origins, sizes, jnp.arange(MAX_OUTPAINT_WINDOWS) < 1 + extra, spatial_shape)


def noise_like(stream: jax.Array, image: jax.Array) -> jax.Array:
    """U[0, 1) noise of image's shape and dtype (one value per voxel and channel)."""
    return sampling.uniform(stream, image.shape).astype(image.dtype)


@jax.jit
def in_painting(key: jax.Array, image: jax.Array) -> jax.Array:
    """Replace 0 to 5 random boxes of ``image`` (spatial axes first, trailing channel axis) by U[0,1) noise."""
    stream = sampling.stream_from_key(key)
    mask = inpaint_mask(sampling.substream(stream, 0), image.shape[:-1])[..., None]
    return jnp.where(mask, noise_like(sampling.substream(stream, 1), image), image)


@jax.jit
def out_painting(key: jax.Array, image: jax.Array) -> jax.Array:
    """Replace all of ``image`` but 1 to 5 random windows by U[0,1) noise."""
    stream = sampling.stream_from_key(key)
    keep = outpaint_keep_mask(sampling.substream(stream, 0), image.shape[:-1])[..., None]
    return jnp.where(keep, image, noise_like(sampling.substream(stream, 1), image))
