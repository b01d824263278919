"""(input, target) pairs for Models Genesis pre-training: the deformations composed in the published order.

Per sample: flip (input and target alike) -> local pixel shuffling (rate 0.5) -> non-linear intensity map (0.9)
-> in-painting (0.9 * 0.2) or out-painting (0.9 * 0.8). The target is the flipped cube, never deformed.

Input contract (``restoration_pair`` and ``restoration_batch``):
- float dtype, else TypeError; the result has the cube's shape and dtype.
- values in [0, 1]. Called eagerly (concrete arrays) a cube with NaN/inf or values outside [0, 1] (beyond 1e-6
  of rounding) raises ValueError with the range found. Inside a caller's ``jax.jit`` the values cannot be inspected
  without a host round trip, so they are clipped to [0, 1] instead (both input and target).
- layout: spatial axes first, optional trailing channel axis; ``spatial_dims`` in the config (0 = infer: rank 2 is
  (X, Y), 3 is (X, Y, Z), 4 is (X, Y, Z, C)). All channels share the geometry (flips, windows, boxes, curve);
  noise is drawn per voxel and channel.

Randomness: every draw is a counter hash of the bits of the sample's ``jax.random`` key (see ``sampling``); the
same key gives the same pair. The batched form splits its key with ``jax.random.split(key, B)`` and is exactly
the per-sample form, vmapped or mapped over the samples (under any PRNG implementation, rbg included).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from genesis_jax.transforms import batching, flip, intensity, painting, sampling, shuffle
from genesis_jax.transforms.config import RestorationSettings, settings_from_config

_RANGE_TOLERANCE = 1e-6


def _spatial_dims(ndim: int, settings: RestorationSettings, what: str) -> int:
    """Number of spatial axes of an array of rank ``ndim`` (per sample), or a ValueError naming ``what``."""
    if settings.spatial_dims == 0:
        if ndim == 2:
            return 2
        if ndim in (3, 4):
            return 3
    elif ndim in (settings.spatial_dims, settings.spatial_dims + 1):
        return settings.spatial_dims
    raise ValueError(
        f"{what}: expected spatial axes (X, Y) or (X, Y, Z) with an optional trailing channel axis, got rank {ndim} "
        f"(spatial_dims={settings.spatial_dims}); set config.spatial_dims=2 for 2D images with channels"
    )


def _check_values(cube: jax.Array, what: str) -> None:
    """Type check always; range check only on concrete arrays (a traced array is clipped instead)."""
    if not jnp.issubdtype(cube.dtype, jnp.floating):
        raise TypeError(f"{what}: expected a float array with values in [0, 1], got dtype {cube.dtype}")
    if isinstance(cube, jax.core.Tracer):
        return
    with jax.ensure_compile_time_eval():  # a concrete array met while tracing (e.g. a closed-over cube)
        lo, hi = (float(v) for v in jax.device_get((jnp.min(cube), jnp.max(cube))))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(
            f"{what}: values must lie in [0, 1] (normalise the CT first, e.g. HU clipped to [-1000, 1000] then "
            f"scaled), found min {lo}, max {hi}"
        )


# Sub-stream tags of one sample's stream.
_DECIDE, _FLIP, _SHUFFLE, _NONLINEAR, _INPAINT, _OUTPAINT, _NOISE = range(7)


class _Decisions:
    """The per-sample random decisions of the composition, drawn from the sample's stream."""

    def __init__(self, stream: jax.Array, settings: RestorationSettings):
        u = sampling.uniform(sampling.substream(stream, _DECIDE), (4,))
        self.shuffle = u[0] < settings.local_rate
        self.nonlinear = u[1] < settings.nonlinear_rate
        paint = u[2] < settings.paint_rate
        # published: `if random() < inpaint_rate (= 1 - outpaint_rate): in-painting else out-painting`
        self.inpaint = paint & (u[3] < 1.0 - settings.outpaint_share)
        self.outpaint = paint & ~self.inpaint


def _paint(stream: jax.Array, image: jax.Array, inpaint: jax.Array, outpaint: jax.Array) -> jax.Array:
    """In- or out-painting of ``image`` as decided, from one noise field."""
    spatial = image.shape[:-1]
    in_mask = painting.inpaint_mask(sampling.substream(stream, _INPAINT), spatial)
    keep_mask = painting.outpaint_keep_mask(sampling.substream(stream, _OUTPAINT), spatial)
    noisy = (inpaint & in_mask) | (outpaint & ~keep_mask)
    noise = painting.noise_like(sampling.substream(stream, _NOISE), image)
    return jnp.where(noisy[..., None], noise, image)


def _pair_channels_last(
    key: jax.Array, image: jax.Array, settings: RestorationSettings
) -> tuple[jax.Array, jax.Array]:
    """The composition on one (*spatial, C) image in [0, 1]. lax.cond skips work (it becomes a select under vmap)."""
    stream = sampling.stream_from_key(key)
    d = _Decisions(stream, settings)
    spatial = image.shape[:-1]
    flags = flip.draw_flips(sampling.substream(stream, _FLIP), len(spatial), settings.flip_rate, settings.flip_mode)
    target = flip.apply_flips(image, flags)

    def shuffled(x):
        return shuffle.shuffle_image(sampling.substream(stream, _SHUFFLE), x, settings.local_windows)

    def nonlinear(x):
        controls, decreasing = intensity.draw_curve(sampling.substream(stream, _NONLINEAR))
        return intensity.apply_table(x, intensity.curve_table(controls, decreasing))

    x = lax.cond(d.shuffle, shuffled, lambda x: x, target)
    x = lax.cond(d.nonlinear, nonlinear, lambda x: x, x)
    x = lax.cond(d.inpaint | d.outpaint, lambda x: _paint(stream, x, d.inpaint, d.outpaint), lambda x: x, x)
    return x, target


def _as_channels_last(cube: jax.Array, spatial_dims: int) -> jax.Array:
    return cube[..., None] if cube.ndim == spatial_dims else cube


@functools.partial(jax.jit, static_argnames=("settings",))
def _pair_jit(key: jax.Array, cube: jax.Array, settings: RestorationSettings) -> tuple[jax.Array, jax.Array]:
    spatial_dims = _spatial_dims(cube.ndim, settings, "restoration_pair")
    image = jnp.clip(_as_channels_last(cube, spatial_dims), 0.0, 1.0)
    x, y = _pair_channels_last(key, image, settings)
    return x.reshape(cube.shape), y.reshape(cube.shape)


BATCH_STRATEGIES = ("auto", "vmap", "map")


def resolve_batch_strategy(strategy: str) -> str:
    """The strategy ``restoration_batch`` uses for ``strategy`` ('auto' resolved for the current devices)."""
    if strategy not in BATCH_STRATEGIES:
        raise ValueError(f"restoration_batch: strategy must be one of {BATCH_STRATEGIES}, got {strategy!r}")
    if strategy == "auto":
        # map on CPU when one device holds the batch, or each device its own samples (under the train step's mesh,
        # batching.per_device); a scan over a batch sharded across devices without that would gather the batch
        # onto every device
        one_device = jax.device_count() == 1 or batching.device_mesh_size() > 1
        return "map" if jax.default_backend() == "cpu" and one_device else "vmap"
    return strategy


@functools.partial(jax.jit, static_argnames=("settings", "strategy"))
def _batch_jit(
    key: jax.Array, cubes: jax.Array, settings: RestorationSettings, strategy: str
) -> tuple[jax.Array, jax.Array]:
    keys = jax.random.split(key, cubes.shape[0])
    pair = functools.partial(_pair_jit, settings=settings)

    def pairs(keys: jax.Array, cubes: jax.Array) -> tuple[jax.Array, jax.Array]:
        if strategy == "vmap":
            return jax.vmap(pair)(keys, cubes)
        # one sample after the other: the lax.cond of each deformation really skips it (a select under vmap
        # computes both branches); on XLA:CPU this is ~1.8x faster than vmap for the published rates
        return lax.map(lambda args: pair(*args), (keys, cubes))

    return batching.per_device(pairs, keys, cubes)


def restoration_pair(key: jax.Array, cube: jax.Array, config: Any = None) -> tuple[jax.Array, jax.Array]:
    """One (input, target) pair from ``cube`` (float in [0, 1]; (X, Y, Z) or (X, Y), optional trailing channel).

    ``config``: None for the published rates, else an ml_collections config as made by
    ``genesis_jax.transforms.default_config()`` (or a RestorationSettings). Same shape and dtype out.
    """
    settings = settings_from_config(config)
    cube = jnp.asarray(cube)
    _spatial_dims(cube.ndim, settings, "restoration_pair")
    _check_values(cube, "restoration_pair")
    return _pair_jit(key, cube, settings)


def restoration_batch(
    key: jax.Array, cubes: jax.Array, config: Any = None, *, strategy: str = "auto"
) -> tuple[jax.Array, jax.Array]:
    """(inputs, targets) for a batch ``cubes`` of shape (B, *spatial[, C]); sample i uses ``split(key, B)[i]``.

    Runs on the device with static shapes: call it inside a jitted step, or on its own (compiled once per shape).
    ``strategy``: 'vmap' (all samples at once), 'map' (one sample after the other, skipping the deformations a
    sample does not get; ~1.8x faster on XLA:CPU, but it would gather a device-sharded batch onto every device) or
    'auto' ('map' on a single CPU device, else 'vmap'). Every strategy gives the same pairs. Under
    ``transforms.batching.shard_samples_over(mesh)`` (the train step's) each device deforms its own samples with
    the strategy chosen for one device, and nothing is gathered across devices.
    """
    settings = settings_from_config(config)
    cubes = jnp.asarray(cubes)
    if cubes.ndim < 3:
        raise ValueError(f"restoration_batch: expected (B, *spatial[, C]) with 2 or 3 spatial axes, got {cubes.shape}")
    _spatial_dims(cubes.ndim - 1, settings, "restoration_batch (per sample)")
    _check_values(cubes, "restoration_batch")
    return _batch_jit(key, cubes, settings, resolve_batch_strategy(strategy))


def single_deformations(key: jax.Array, cube: jax.Array, config: Any = None) -> dict[str, jax.Array]:
    """Each deformation alone on ``cube`` (always applied; the flip with 3 draws at rate 1): for previews and tests.

    Returns {'flip', 'local_shuffle', 'nonlinear', 'in_painting', 'out_painting'} -> arrays shaped like ``cube``.
    """
    settings = settings_from_config(config)
    cube = jnp.asarray(cube)
    spatial_dims = _spatial_dims(cube.ndim, settings, "single_deformations")
    _check_values(cube, "single_deformations")
    return _single_jit(key, cube, settings, spatial_dims)


@functools.partial(jax.jit, static_argnames=("settings", "spatial_dims"))
def _single_jit(key, cube, settings: RestorationSettings, spatial_dims: int) -> dict[str, jax.Array]:
    image = jnp.clip(_as_channels_last(cube, spatial_dims), 0.0, 1.0)
    k_flip, k_shuffle, k_nonlinear, k_in, k_out = jax.random.split(key, 5)
    flags = flip.draw_flips(sampling.stream_from_key(k_flip), spatial_dims, 1.0, settings.flip_mode)
    out = {
        "flip": flip.apply_flips(image, flags),
        "local_shuffle": shuffle.local_pixel_shuffle(k_shuffle, image, settings.local_windows),
        "nonlinear": intensity.nonlinear_intensity(k_nonlinear, image),
        "in_painting": painting.in_painting(k_in, image),
        "out_painting": painting.out_painting(k_out, image),
    }
    return {name: value.reshape(cube.shape) for name, value in out.items()}
