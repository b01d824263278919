"""Masked image modelling on the device: block masks (exact count, block structure, per sample, 2D and 3D), the
masked input, the loss on masked voxels only, per-block standardised targets, and the pretexts' prepare jitted
once for every network kind (Genesis U-Net pytorch/keras, UNet++, 2D and 3D)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.config_loader import load_config
from genesis_jax.models import build_model
from genesis_jax.pretext import build_pretext, masks
from genesis_jax.train.config_checks import validate_pretrain_config
from genesis_jax.config_loader import ConfigError


def test_block_mask_masks_exactly_the_ratio_of_whole_blocks_per_sample():
    images = jnp.zeros((4, 16, 16, 8, 1))
    mask = np.asarray(masks.batch_masks(jax.random.key(0), images, (4, 4, 2), 0.6))
    assert mask.shape == (4, 16, 16, 8, 1) and set(np.unique(mask)) == {0.0, 1.0}
    grid_blocks = 4 * 4 * 4
    for sample in mask[..., 0]:
        blocks = sample.reshape(4, 4, 4, 4, 4, 2).transpose(0, 2, 4, 1, 3, 5).reshape(grid_blocks, -1)
        assert (blocks.min(1) == blocks.max(1)).all()  # each block is all masked or all visible
        assert blocks[:, 0].sum() == round(0.6 * grid_blocks)
    assert not (mask[0] == mask[1]).all()  # drawn per sample


def test_2d_masks_and_the_masked_input():
    images = jnp.full((2, 8, 8, 1), 0.5)
    mask = masks.batch_masks(jax.random.key(1), images, (2, 2), 0.25)
    masked = masks.apply_mask(images, mask, 0.0)
    assert float(mask.sum()) == 2 * 4 * 4 and mask.shape == (2, 8, 8, 1)
    np.testing.assert_array_equal(np.asarray(masked), np.where(np.asarray(mask) > 0, 0.0, 0.5))


def test_loss_scores_the_masked_voxels_only():
    config = load_config("pretrain/mim:tiny")
    pretext = build_pretext(config)
    batch = {"cube": jax.random.uniform(jax.random.key(2), (2, 16, 16, 8, 1))}
    inputs, targets = pretext.prepare(jax.random.key(3), batch)
    mask = targets["mask"]
    np.testing.assert_array_equal(np.asarray(targets["image"]), np.asarray(batch["cube"]))
    assert float(jnp.abs(inputs * mask).max()) == 0.0  # masked voxels are zeros
    np.testing.assert_array_equal(np.asarray(inputs * (1 - mask)), np.asarray(batch["cube"] * (1 - mask)))
    perfect = targets["image"]
    assert float(pretext.loss(targets, perfect)) == 0.0
    wrong_where_visible = jnp.where(mask > 0, perfect, 1.0 - perfect)
    assert float(pretext.loss(targets, wrong_where_visible)) == 0.0
    wrong_where_masked = jnp.where(mask > 0, perfect + 0.5, perfect)
    assert float(pretext.loss(targets, wrong_where_masked)) == pytest.approx(0.25)


def test_patch_normalized_targets_have_zero_mean_unit_variance_per_block():
    x = jax.random.uniform(jax.random.key(4), (2, 8, 8, 4, 1))
    y = np.asarray(masks.patch_normalized(x, (4, 4, 2)))
    blocks = y.reshape(2, 2, 4, 2, 4, 2, 2, 1)
    np.testing.assert_allclose(blocks.mean(axis=(2, 4, 6)), 0.0, atol=1e-5)
    np.testing.assert_allclose(blocks.var(axis=(2, 4, 6)), 1.0, atol=1e-3)


@pytest.mark.parametrize("spec", ["mim:tiny", "mim:keras,tiny", "mim:unetpp,tiny", "mim:2d,tiny",
                                  "mim:unetpp,2d,tiny", "genesis_mim:tiny", "genesis_mim:unetpp,2d,tiny"])
def test_prepare_and_loss_fit_every_network(spec):
    """Shapes only (jax.eval_shape): the pretext's inputs fit the network and its loss takes every head."""
    config = load_config(f"pretrain/{spec}")
    validate_pretrain_config(config, data=False)
    pretext = build_pretext(config)
    model = build_model(config.model)
    cubes = {"cube": jax.ShapeDtypeStruct((2, 16, 16, 8, 1), jnp.float32)}

    def run(batch):
        inputs, targets = pretext.prepare(jax.random.key(0), batch)
        variables = model.init({"params": jax.random.key(1), "dropout": jax.random.key(1)}, inputs, train=False)
        outputs = model.apply(variables, inputs, train=False, **dict(config.apply_kwargs))
        heads = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return inputs, sum(pretext.loss(targets, h) for h in heads)

    inputs, loss = jax.eval_shape(run, cubes)
    assert inputs.shape == (2, *config.input_shape) and loss.shape == ()


def test_genesis_mim_masks_after_the_deformations():
    config = load_config("pretrain/genesis_mim:tiny")
    pretext = build_pretext(config, transform=lambda key, cubes: (1.0 - cubes, cubes))  # a visible "deformation"
    batch = {"cube": jnp.full((2, 16, 16, 8, 1), 0.25)}
    inputs, targets = pretext.prepare(jax.random.key(5), batch)
    shown = np.asarray(targets["shown_mask"])
    np.testing.assert_array_equal(np.asarray(inputs), np.where(shown > 0, 0.0, 0.75))  # deformed, then masked
    assert float(targets["mask"].min()) == 1.0  # loss_on='all': every voxel scored


@pytest.mark.parametrize("override,field", [("--config.pretext.block_size=3", "config.pretext.block_size=3"),
                                            ("--config.pretext.mask_ratio=1.0", "config.pretext.mask_ratio=1.0"),
                                            ("--config.pretext.normalize_patches=True",
                                             "config.pretext.normalize_patches=True")])
def test_bad_masking_fields_are_named(override, field):
    config = load_config("pretrain/mim:tiny", [override])
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate_pretrain_config(config, data=False)
