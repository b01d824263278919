"""Genesis + masking: the Models Genesis deformations, then block masks on the deformed input (masking applied
after the deformations); the network restores the undeformed original.

``prepare`` = :mod:`~genesis_jax.pretext.genesis`'s (deformations with ``config.transforms``, an axial slice with
``config.slice_2d``) followed by :mod:`~genesis_jax.pretext.masks`' block masks (``mask_ratio``, ``block_size``;
the masked voxels hold ``fill_value`` or, with ``mask_fill='token'``, a learned mask token as in
:mod:`~genesis_jax.pretext.mim`). ``loss_on`` picks what the MSE scores: ``'all'`` voxels (the default: the
restoration loss, masked blocks included) or only the ``'masked'`` ones. The quality gate is Genesis's
(restoration MSE vs the batch-mean predictor on the scored voxels, and the clean identity MSE).

Config block::

    config.pretext = {name: 'genesis_mim', mask_ratio: 0.6, block_size: 8, fill_value: 0.0,
                      mask_fill: 'constant' (or 'token'), loss_on: 'all', gate: {max_ratio: 0.7, max_clean_mse: 0.005}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from genesis_jax.pretext import genesis, masks, mim
from genesis_jax.pretext.base import GateSettings, Pretext, gate_settings

LOSS_ON = ("all", "masked")


def check_config(checker: Any, pretext_config: Any, config: Any) -> None:
    mim.check_config(checker, pretext_config, config)
    checker.one_of("pretext.loss_on", LOSS_ON)
    if pretext_config.get("normalize_patches"):
        checker.fail("pretext.normalize_patches", True, "not offered with the Genesis deformations (the target is "
                     "the undeformed image)")


def build(config: Any, transform: genesis.TransformFn | None = None) -> Pretext:
    """Genesis + masking for ``config``; ``transform`` replaces the published deformations (as for Genesis)."""
    s = mim.settings(config)
    slice_2d = bool(config.get("slice_2d", False))
    deform = genesis.make_prepare(transform or genesis.default_transform(config.get("transforms")),
                                  slice_2d=slice_2d)
    clean_pairs = genesis.make_clean(slice_2d=slice_2d)
    masked_only = config.pretext.get("loss_on", "all") == "masked"

    def prepare(key: jax.Array, batch: Mapping[str, jax.Array], params: Any = None) -> tuple[jax.Array, dict]:
        deform_key, mask_key = jax.random.split(key)
        inputs, targets = deform(deform_key, batch)
        mask = masks.batch_masks(mask_key, inputs, s["block"], s["ratio"])
        weights = mask if masked_only else jnp.ones_like(mask)
        fill = masks.fill_of(s["fill"], s["fill_value"], params)
        return masks.apply_mask(inputs, mask, fill), {"image": targets, "mask": weights, "shown_mask": mask}

    def clean(key: jax.Array, batch: Mapping[str, jax.Array], params: Any = None) -> tuple[jax.Array, dict]:
        del params  # nothing is masked
        inputs, targets = clean_pairs(jax.random.split(key)[0], batch)
        ones = jnp.ones((*inputs.shape[:-1], 1), jnp.float32)
        return inputs, {"image": targets, "mask": ones, "shown_mask": jnp.zeros_like(ones)}

    def panels(inputs, predictions, targets):
        return [inputs, predictions, targets["image"], targets["shown_mask"]]

    return Pretext(name="genesis_mim", prepare=prepare, clean=clean, loss=mim.masked_loss, scored=mim.scored,
                   preview_columns=("deformed + masked input", "restored", "original", "mask"), preview_panels=panels,
                   gate=gate_settings(config.pretext, GateSettings()),
                   scored_voxels="masked voxels" if masked_only else "all voxels", params=mim.fill_params(s))
