"""Fine-tuning augmentation on the device (genesis_jax.transforms.augment): image and mask stay aligned, the same key
gives the same batch, shapes and dtypes are kept, probabilities 0 are the identity, HU settings are converted."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.transforms.augment import (
    AugmentSettings,
    augment_batch,
    default_config,
    settings_from_config,
    simulate_low_resolution,
)

OFF = AugmentSettings(**{f: 0.0 for f in ("mirror_p", "rotation_p", "scale_p", "noise_p", "blur_p", "brightness_p",
                                          "contrast_p", "gamma_p", "low_res_p")})
INTENSITY = ("noise_p", "blur_p", "brightness_p", "contrast_p", "gamma_p", "low_res_p")
THRESHOLD = 0.5


def config_with(**fields) -> dict:
    return {**default_config().to_dict(), **fields}


def only(**probabilities: float) -> AugmentSettings:
    return dataclasses.replace(OFF, **probabilities)


def smooth_batch(spatial: tuple[int, ...], batch: int = 6) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Off-centre ellipsoidal bumps in [0.2, 0.8] whose gradient stays below 0.1 per voxel, and their masks
    (image > 0.5): the label is a threshold of the image."""
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in spatial], indexing="ij")
    images = []
    for b in range(batch):
        r2 = sum(((g - n * (0.4 + 0.05 * b)) / (n * 0.3)) ** 2 for g, n in zip(grids, spatial))
        images.append(0.2 + 0.6 * np.exp(-r2))
    images = np.stack(images)[..., None].astype(np.float32)
    return jnp.asarray(images), jnp.asarray((images > THRESHOLD).astype(np.float32))


SHAPES = [(24, 24), (20, 20, 12)]


@pytest.mark.parametrize("spatial", SHAPES)
@pytest.mark.parametrize("transform", [dict(mirror_p=0.5), dict(rotation_p=1.0), dict(scale_p=1.0),
                                       dict(rotation_p=1.0, scale_p=1.0, mirror_p=0.5)])
def test_spatial_transforms_keep_the_mask_the_threshold_of_the_image(spatial, transform):
    images, masks = smooth_batch(spatial)
    out, out_masks = augment_batch(jax.random.key(1), images, masks, only(**transform))
    out, out_masks = np.asarray(out), np.asarray(out_masks)
    assert set(np.unique(out_masks)) <= {0.0, 1.0}
    assert np.any(out != np.asarray(images))  # something moved
    threshold = out > THRESHOLD
    # nearest-neighbour (mask) and linear (image) resampling differ by less than 0.1 here: away from the threshold
    # by more than that, the mask is exactly the image's threshold; only the interpolation border may differ
    clear = np.abs(out - THRESHOLD) > 0.1
    assert np.array_equal(threshold[clear], out_masks[clear] == 1.0)
    assert np.mean(threshold != (out_masks == 1.0)) < 0.05
    assert out_masks.sum() > 0.05 * out_masks.size  # the object stayed in view


@pytest.mark.parametrize("spatial", SHAPES)
def test_intensity_transforms_change_the_image_only(spatial):
    images, masks = smooth_batch(spatial)
    settings = only(**{p: 1.0 for p in INTENSITY})
    out, out_masks = augment_batch(jax.random.key(2), images, masks, settings)
    np.testing.assert_array_equal(np.asarray(out_masks), np.asarray(masks))
    out = np.asarray(out)
    assert np.all(np.abs(out - np.asarray(images)).reshape(len(out), -1).max(axis=1) > 1e-3)
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("spatial", SHAPES)
def test_probabilities_zero_are_the_identity(spatial):
    images, masks = smooth_batch(spatial)
    out, out_masks = augment_batch(jax.random.key(3), images, masks, OFF)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(images))
    np.testing.assert_array_equal(np.asarray(out_masks), np.asarray(masks))


def test_same_key_same_batch_and_shapes_dtypes_kept():
    settings = AugmentSettings()  # the defaults: every transform possible
    images, masks = smooth_batch((20, 20, 12), batch=8)
    a = augment_batch(jax.random.key(4), images, masks, settings)
    b = augment_batch(jax.random.key(4), images, masks, settings)
    c = augment_batch(jax.random.key(5), images, masks, settings)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    for out, given in zip(a, (images, masks)):
        assert out.shape == given.shape and out.dtype == given.dtype
    labels = jnp.asarray([[0.0], [1.0]] * 4)  # classification: the class labels pass through
    out, out_labels = augment_batch(jax.random.key(4), images, labels, settings)
    assert out.shape == images.shape
    np.testing.assert_array_equal(np.asarray(out_labels), np.asarray(labels))
    bf16, _ = augment_batch(jax.random.key(4), images.astype(jnp.bfloat16), masks, settings)
    assert bf16.dtype == jnp.bfloat16


def test_probabilities_are_per_sample():
    images = jnp.full((400, 8, 8, 1), 0.5, jnp.float32)
    out, _ = augment_batch(jax.random.key(6), images, images, only(brightness_p=0.3))
    changed = np.asarray(jnp.any(out != images, axis=(1, 2, 3)))
    assert 0.22 < changed.mean() < 0.38


def test_brightness_is_the_configured_hu_shift():
    settings = settings_from_config(config_with(brightness_p=1.0), hu_per_unit=2000.0)
    assert settings.brightness_shift == pytest.approx(50.0 / 2000.0)
    assert settings_from_config(default_config(), hu_per_unit=400.0).brightness_shift == pytest.approx(50.0 / 400.0)
    images = jnp.full((200, 6, 6, 1), 0.5, jnp.float32)
    shifts, _ = augment_batch(jax.random.key(7), images, images, only(brightness_p=1.0,
                                                                        brightness_shift=settings.brightness_shift))
    shifts = np.asarray(shifts) - 0.5
    assert np.allclose(shifts, shifts[:, :1, :1], atol=1e-7)  # one shift per sample
    assert np.abs(shifts).max() <= 0.025 + 1e-6 and np.abs(shifts).max() > 0.02


def test_low_resolution_keeps_constant_and_zoom_one_images():
    ramp = jnp.asarray(np.linspace(0, 1, 16, dtype=np.float32)[:, None, None] * np.ones((16, 12, 1), np.float32))
    np.testing.assert_allclose(np.asarray(simulate_low_resolution(ramp, jnp.float32(1.0))), np.asarray(ramp))
    coarse = np.asarray(simulate_low_resolution(ramp, jnp.float32(0.5)))
    assert np.all(np.diff(coarse[:, 0, 0]) >= -1e-6)  # a monotone profile stays monotone
    assert np.abs(coarse - np.asarray(ramp)).max() > 0.01


def test_disabled_and_bad_configs():
    assert settings_from_config(None) is None
    assert settings_from_config(default_config(enabled=False)) is None
    with pytest.raises(ValueError, match="config.augment.rotation_p"):
        settings_from_config(config_with(rotation_p=1.5))
    with pytest.raises(ValueError, match="config.augment.scale_range"):
        settings_from_config(config_with(scale_range=(1.4, 0.7)))
    with pytest.raises(ValueError, match="unknown"):
        settings_from_config(config_with(elastic_p=0.2))
