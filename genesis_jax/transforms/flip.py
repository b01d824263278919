"""Random flips, applied identically to the input and the target (data augmentation, not a restoration task).

Published loop (models_genesis.md §3.3): ``cnt = 3; while random() < rate and cnt > 0: flip a random axis``, so
0..3 flip calls (P = 0.6, 0.24, 0.096, 0.064 at rate 0.4); an axis flipped twice is back where it was.

Modes:
- ``"all"`` (default): each call picks one of the spatial axes uniformly (the fix of the published code's
  successor, ``competition/utils.py``; a 3D cube may be flipped along its depth axis).
- ``"published"``: each call picks uniformly from {channel axis (a no-op), axis 0, axis 1}, as the published code
  does on its (1, R, C, D) arrays: the depth axis is never flipped and a third of the draws are wasted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from genesis_jax.transforms import sampling

MAX_FLIPS = 3
FLIP_MODES = ("all", "published")


def draw_flips(stream: jax.Array, spatial_ndim: int, rate: float, mode: str = "all") -> jax.Array:
    """Which spatial axes end up flipped: bool (spatial_ndim,); ``stream`` from ``sampling``."""
    if mode not in FLIP_MODES:
        raise ValueError(f"flip_mode must be one of {FLIP_MODES}, got {mode!r}")
    u = sampling.uniform(stream, (2, MAX_FLIPS))
    calls = jnp.sum(jnp.cumprod((u[0] < rate).astype(jnp.int32)))
    if mode == "all":
        axis = jnp.floor(u[1] * spatial_ndim).astype(jnp.int32)
    else:  # choice of [0, 1, 2] on (1, R, C, D): 0 is the channel axis (no flip), 1 and 2 are spatial axes 0 and 1
        axis = jnp.floor(u[1] * 3).astype(jnp.int32) - 1
    active = jnp.arange(MAX_FLIPS) < calls
    hits = jnp.sum((axis[:, None] == jnp.arange(spatial_ndim)[None, :]) & active[:, None], axis=0)
    return hits % 2 == 1


def apply_flips(image: jax.Array, flags: jax.Array) -> jax.Array:
    """Flip ``image`` along each leading spatial axis ``a`` where ``flags[a]`` (trailing axes untouched)."""
    for axis in range(flags.shape[0]):
        # lax.cond skips the copy when the axis is not flipped (under vmap it becomes the same select as jnp.where)
        image = jax.lax.cond(flags[axis], functools.partial(jnp.flip, axis=axis), lambda x: x, image)
    return image


@functools.partial(jax.jit, static_argnames=("rate", "mode"))
def random_flip(
    key: jax.Array, image: jax.Array, target: jax.Array, rate: float = 0.4, mode: str = "all"
) -> tuple[jax.Array, jax.Array]:
    """The published joint flip of (input, target); arrays with spatial axes first and one trailing channel axis."""
    flags = draw_flips(sampling.stream_from_key(key), image.ndim - 1, rate, mode)
    return apply_flips(image, flags), apply_flips(target, flags)
