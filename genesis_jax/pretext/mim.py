"""Masked image modelling for convolutional networks (SparK / MAE-style, as nnssl applies it to U-Nets).

``prepare``: per sample, a random set of blocks (``mask_ratio`` of a grid of ``block_size``-voxel blocks;
:mod:`genesis_jax.pretext.masks`) is drawn on the device and the clean cube's (or, with ``config.slice_2d``, one
random axial slice's) masked voxels are set to ``fill_value``; the network reconstructs the original and the loss
is the MSE on the MASKED voxels only, optionally against per-block standardised targets (``normalize_patches``,
MAE's normalised pixels; it needs a linear head, ``config.model.head_activation=None``). Works for any network
that maps an image to an image of the same shape: both Genesis U-Net variants and UNet++ (deep supervision: every
head scored against the same masked target), 2D and 3D.

The masked voxels hold ``fill_value`` (``mask_fill='constant'``, the default: zeros) or a LEARNED mask token
(``mask_fill='token'``): one value per input channel, starting at ``fill_value``, owned by the pretext
(``Pretext.params``), trained with the network by the same optimiser inside the jitted step, checkpointed and
resumed with the train state, and not part of the exported network weights (``--init`` loads the network alone).

Config block::

    config.pretext = {name: 'mim', mask_ratio: 0.6, block_size: 8 (or one per spatial axis), fill_value: 0.0,
                      mask_fill: 'constant' (or 'token'), normalize_patches: False,
                      gate: {max_ratio: 0.7, max_clean_mse: None}}

Quality gate: the masked-region MSE against the batch-mean predictor's on the same masked voxels; the clean
identity MSE is reported but not gated by default (the loss never asks the network to copy visible voxels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genesis_jax.evaluation.metrics import mean_squared_error
from genesis_jax.pretext.base import GateSettings, Pretext, gate_settings
from genesis_jax.pretext.genesis import axial_slices
from genesis_jax.pretext import masks

COLUMNS = ("masked input", "reconstruction", "original", "mask")
GATE = GateSettings(max_ratio=0.7, max_clean_mse=None)


def settings(config: Any) -> dict[str, Any]:
    """The masking settings of ``config.pretext`` for the network input ``config.input_shape``."""
    p = config.pretext
    spatial_ndim = len(tuple(config.input_shape)) - 1
    return {"block": masks.block_shape(p.block_size, spatial_ndim), "ratio": float(p.mask_ratio),
            "fill_value": float(p.get("fill_value", 0.0)), "fill": str(p.get("mask_fill", "constant")),
            "channels": int(tuple(config.input_shape)[-1]), "normalize": bool(p.get("normalize_patches", False))}


def fill_params(s: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The pretext's own parameters for the masking ``settings`` ``s``: the learned token's initial value, or none."""
    return masks.fill_params(s["fill"], s["fill_value"], s["channels"])


def images_of(key: jax.Array, batch: Mapping[str, jax.Array], slice_2d: bool) -> jax.Array:
    cubes = batch["cube"]
    return axial_slices(key, cubes)[0] if slice_2d else cubes


def masked_targets(image: jax.Array, mask: jax.Array, block, normalize: bool) -> dict[str, jax.Array]:
    return {"image": masks.patch_normalized(image, block) if normalize else image, "mask": mask}


def masked_loss(targets: Mapping[str, jax.Array], output: jax.Array) -> jax.Array:
    """MSE over the voxels ``targets['mask']`` weights (the masked ones)."""
    return mean_squared_error(targets["image"], output, targets["mask"])


def scored(targets: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    return targets["image"], targets["mask"]


def panels(inputs: np.ndarray, predictions: np.ndarray, targets: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return [inputs, predictions, targets["image"], targets["mask"]]


def check_config(checker: Any, pretext_config: Any, config: Any) -> None:
    """mask_ratio in (0, 1), a known mask_fill, block_size dividing every spatial size of config.input_shape, a
    linear head for normalised targets."""
    checker.fraction("pretext.mask_ratio", low_open=True, high_open=True)
    checker.one_of("pretext.mask_fill", masks.FILLS)
    spatial = tuple(config.input_shape)[:-1]
    try:
        block = masks.block_shape(pretext_config.block_size, len(spatial))
    except (TypeError, ValueError) as err:
        checker.fail("pretext.block_size", pretext_config.get("block_size"), f"{err} (input_shape {spatial})")
    if any(b < 1 or s % b for s, b in zip(spatial, block)):
        checker.fail("pretext.block_size", pretext_config.block_size,
                     f"must be >= 1 and divide every spatial size of config.input_shape={tuple(config.input_shape)}")
    if pretext_config.get("normalize_patches") and config.model.get("head_activation") is not None:
        checker.fail("pretext.normalize_patches", True, "per-block standardised targets need a linear head "
                     f"(--config.model.head_activation=None), not {config.model.get('head_activation')!r}")



def make_clean(slice_2d: bool, normalize: bool, block) -> Callable:
    """Unmasked images as input; every voxel scored (the identity check)."""

    def clean(key: jax.Array, batch: Mapping[str, jax.Array], params: Any = None) -> tuple[jax.Array, dict]:
        del params  # nothing is masked
        images = images_of(jax.random.split(key)[1], batch, slice_2d)
        return images, masked_targets(images, jnp.ones((*images.shape[:-1], 1), jnp.float32), block, normalize)

    return clean


def build(config: Any, transform: Any = None) -> Pretext:
    """The masked-image-modelling pretext for ``config`` (``transform`` is the restoration pretexts' hook: unused)."""
    del transform
    s = settings(config)
    slice_2d = bool(config.get("slice_2d", False))

    def prepare(key: jax.Array, batch: Mapping[str, jax.Array], params: Any = None) -> tuple[jax.Array, dict]:
        mask_key, slice_key = jax.random.split(key)
        images = images_of(slice_key, batch, slice_2d)
        mask = masks.batch_masks(mask_key, images, s["block"], s["ratio"])
        fill = masks.fill_of(s["fill"], s["fill_value"], params)
        return masks.apply_mask(images, mask, fill), masked_targets(images, mask, s["block"], s["normalize"])

    return Pretext(name="mim", prepare=prepare, clean=make_clean(slice_2d, s["normalize"], s["block"]),
                   loss=masked_loss, scored=scored, preview_columns=COLUMNS, preview_panels=panels,
                   gate=gate_settings(config.pretext, GATE), scored_voxels="masked voxels", params=fill_params(s))
