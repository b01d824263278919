"""Block masks for masked image modelling, drawn on the device: per sample, exactly ``round(ratio * blocks)`` of the
grid's blocks (a block is ``block`` voxels along each spatial axis) are masked, chosen uniformly at random, so every
sample scores the same number of voxels and every shape is static (no recompile, no host round trip).

Shared by the masking pretexts (:mod:`~genesis_jax.pretext.mim`, :mod:`~genesis_jax.pretext.genesis_mim`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp


def block_shape(block_size: Any, ndim: int) -> tuple[int, ...]:
    """``block_size`` (an int for every spatial axis, or one per axis) as a tuple of ``ndim`` ints."""
    if isinstance(block_size, int):
        return (int(block_size),) * ndim
    block = tuple(int(b) for b in block_size)
    if len(block) != ndim:
        raise ValueError(f"block_size {block} has {len(block)} sizes for {ndim} spatial axes")
    return block


def masked_count(grid: Sequence[int], ratio: float) -> int:
    """How many of the grid's blocks one sample masks: round(ratio * blocks), at least one, at most all but one."""
    blocks = math.prod(grid)
    return min(max(int(round(ratio * blocks)), 1), max(blocks - 1, 1))


def block_mask(key: jax.Array, spatial: Sequence[int], block: Sequence[int], ratio: float) -> jax.Array:
    """A float32 (*spatial) map: 1 on the masked blocks, 0 elsewhere."""
    grid = tuple(s // b for s, b in zip(spatial, block))
    blocks = math.prod(grid)
    chosen = jnp.argsort(jax.random.uniform(key, (blocks,)))[:masked_count(grid, ratio)]
    mask = jnp.zeros((blocks,), jnp.float32).at[chosen].set(1.0).reshape(grid)
    for axis, size in enumerate(block):
        mask = jnp.repeat(mask, size, axis=axis)
    return mask


def batch_masks(key: jax.Array, images: jax.Array, block: Sequence[int], ratio: float) -> jax.Array:
    """One mask per sample of ``images`` (B, *spatial, C): a (B, *spatial, 1) float32 array."""
    spatial = images.shape[1:-1]
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k: block_mask(k, spatial, block, ratio))(keys)[..., None]


def apply_mask(images: jax.Array, mask: jax.Array, fill_value: float) -> jax.Array:
    """``images`` with the masked voxels set to ``fill_value`` (every channel)."""
    return jnp.where(mask > 0, jnp.asarray(fill_value, images.dtype), images)


def patch_normalized(images: jax.Array, block: Sequence[int], eps: float = 1e-6) -> jax.Array:
    """Each block of each sample standardised to mean 0, variance 1 (MAE's normalised-pixel target)."""
    batch, *spatial, channels = images.shape
    grid = [s // b for s, b in zip(spatial, block)]
    split = [batch, *[d for g, b in zip(grid, block) for d in (g, b)], channels]
    within = tuple(2 + 2 * i for i in range(len(block)))
    x = images.astype(jnp.float32).reshape(split)
    mean = jnp.mean(x, within, keepdims=True)
    var = jnp.var(x, within, keepdims=True)
    return ((x - mean) / jnp.sqrt(var + eps)).reshape(images.shape)
