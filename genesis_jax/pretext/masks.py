"""Block masks for masked image modelling, drawn on the device: per sample, exactly ``round(ratio * blocks)`` of the
grid's blocks (a block is ``block`` voxels along each spatial axis) are masked, chosen uniformly at random, so every
sample scores the same number of voxels and every shape is static (no recompile, no host round trip).

What fills the masked voxels (``config.pretext.mask_fill``): ``'constant'`` (``fill_value`` in every channel) or
``'token'``, a LEARNED mask token, one value per input channel (SimMIM's / MAE's mask token, at the input as SparK
and nnssl's MAE for convolutional networks place it): a parameter the pretext owns (:data:`TOKEN`; it starts at
``fill_value``), trained with the network by the train step, never part of the network's weights.

Shared by the masking pretexts (:mod:`~genesis_jax.pretext.mim`, :mod:`~genesis_jax.pretext.genesis_mim`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FILLS = ("constant", "token")  # config.pretext.mask_fill
TOKEN = "mask_token"  # the learned token's name among the pretext's parameters


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


def apply_mask(images: jax.Array, mask: jax.Array, fill_value: float | jax.Array) -> jax.Array:
    """``images`` with the masked voxels set to ``fill_value``: one number for every channel, or one value per
    channel (a (C,) mask token; differentiable in it)."""
    return jnp.where(mask > 0, jnp.asarray(fill_value, images.dtype), images)


def fill_params(fill: str, fill_value: float, channels: int) -> dict[str, np.ndarray]:
    """The masking pretext's own parameters: ``{TOKEN: (channels,) float32 at fill_value}`` for a learned token,
    none for a constant fill."""
    if fill not in FILLS:
        raise ValueError(f"config.pretext.mask_fill={fill!r}: must be one of {', '.join(map(repr, FILLS))}")
    return {TOKEN: np.full((channels,), fill_value, np.float32)} if fill == "token" else {}


def fill_of(fill: str, fill_value: float, params: Mapping[str, jax.Array] | None) -> float | jax.Array:
    """What ``apply_mask`` fills with: the constant, or the learned token given in ``params`` (the trained value
    the train state holds; a missing one is an error, never silently the initial value)."""
    if fill != "token":
        return fill_value
    if not params or TOKEN not in params:
        raise ValueError("mask_fill='token': the learned mask token is a trained parameter; pass the pretext's "
                         "params as prepare's third argument (the train and evaluation steps pass the state's)")
    return params[TOKEN]


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
