"""Models Genesis restoration: deform clean cubes on the device, restore the originals (MSE on every voxel).

``prepare``: the published deformations (flip, local shuffle, Bezier intensity map, in/out-painting;
:func:`genesis_jax.transforms.restoration_batch` with ``config.transforms``) on ``batch['cube']``; with
``config.slice_2d`` (Genesis 2D) one random axial slice per sample is taken FIRST and deformed as a 2D image
(``spatial_dims=2``: 2D flips, shuffling windows and painting boxes, as published), so an out-painted slice always
keeps 1-5 windows of its own content (deforming the cube and then slicing left about a quarter of out-painted slices
as pure noise). The 3D path is the computation pre-training ran before pretexts were plug-ins. The loss is the MSE of the
network's (sigmoid) output against the undeformed cube: same keys, same ops as before, so 3D losses and resume
fingerprints are unchanged.

Config block: ``config.pretext = {name: 'genesis', gate: {max_ratio, max_clean_mse}}`` (a config without a
``pretext`` block is this pretext); the deformations' rates stay in ``config.transforms``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from genesis_jax.evaluation.metrics import mean_squared_error
from genesis_jax.pretext.base import GateSettings, Pretext, gate_settings, whole_image

TransformFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
COLUMNS = ("deformed input", "restored", "original")


def default_transform(transforms_config: Any, *, slice_2d: bool = False) -> TransformFn:
    """The published restoration deformations, run on the device (genesis_jax.transforms). With ``slice_2d`` they
    act on (B, X, Y, 1) slices as 2D images (``spatial_dims=2``)."""
    from genesis_jax import transforms

    settings = transforms.settings_from_config(transforms_config or None)
    if slice_2d:
        if settings.spatial_dims == 3:
            raise ValueError("config.transforms.spatial_dims=3 contradicts config.slice_2d=True (Genesis 2D deforms "
                             "each 2D slice); leave it 0 or set 2")
        settings = dataclasses.replace(settings, spatial_dims=2)
    return functools.partial(transforms.restoration_batch, config=settings)


def axial_slices(key: jax.Array, *volumes: jax.Array) -> tuple[jax.Array, ...]:
    """One random axial slice per sample, the same index for every array given: (B, X, Y, Z, C) -> (B, X, Y, C)."""
    z = jax.random.randint(key, (volumes[0].shape[0],), 0, volumes[0].shape[3])
    take = jax.vmap(lambda volume, i: jax.lax.dynamic_index_in_dim(volume, i, axis=2, keepdims=False))
    return tuple(take(v, z) for v in volumes)


def make_prepare(transform: TransformFn, *, slice_2d: bool = False) -> Callable:
    """``prepare(key, batch)`` for the steps: deform ``batch['cube']``; with ``slice_2d`` (Genesis 2D) first take one
    random axial slice per sample, then deform the slices, giving (B, X, Y, 1) inputs and targets (``transform``
    then gets (B, X, Y, 1) slices: :func:`default_transform` with ``slice_2d=True`` deforms them in 2D)."""

    def prepare(key: jax.Array, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        transform_key, slice_key = jax.random.split(key)
        cubes = batch["cube"]
        if slice_2d:
            (cubes,) = axial_slices(slice_key, cubes)
        return transform(transform_key, cubes)

    return prepare


def make_clean(*, slice_2d: bool = False) -> Callable:
    """``clean(key, batch)``: the undeformed cubes (or their slices, drawn as ``prepare`` draws them) as both input
    and target: what a network that learned to restore must give back unchanged."""
    return make_prepare(lambda key, cubes: (cubes, cubes), slice_2d=slice_2d)


def panels(inputs: np.ndarray, predictions: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
    return [inputs, predictions, targets]


def check_config(checker: Any, pretext_config: Any, config: Any) -> None:
    """Nothing beyond the gate's thresholds (the deformations' fields are checked when the settings are built)."""


def build(config: Any, transform: TransformFn | None = None, *, name: str = "genesis") -> Pretext:
    """The restoration pretext for ``config``; ``transform(key, cubes) -> (inputs, targets)`` replaces the
    published deformations (tests pass a cheap one)."""
    slice_2d = bool(config.get("slice_2d", False))
    return Pretext(
        name=name,
        prepare=make_prepare(transform or default_transform(config.get("transforms"), slice_2d=slice_2d),
                             slice_2d=slice_2d),
        clean=make_clean(slice_2d=slice_2d),
        loss=mean_squared_error,
        scored=whole_image,
        preview_columns=COLUMNS,
        preview_panels=panels,
        gate=gate_settings(config.get("pretext"), GateSettings()),
    )

