"""Genesis 2D deforms the slice, not the cube: no training pair's input is pure noise where its target is anatomy.

Definitions used below (values in [0, 1], one (64, 64) axial slice per pair):
- the target "is anatomy" when its pixel standard deviation is at least 0.01 (20 HU), i.e. not a blank slice;
- an input is "pure noise" when fewer than 1% of its pixels equal the target's. Out-painting copies the kept
  windows exactly and fills the rest with U[0, 1) noise, which equals a given value with probability ~2^-24, so
  with the Bezier map and shuffling off the equal pixels are exactly the kept windows.
In 2D every out-painted slice keeps at least one window of 28 x 28 of 64 x 64 pixels (19%); deforming the 3D
cube first and then slicing (the old path) leaves a slice outside every kept z range pure noise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.data.normalize import normalize_ct
from genesis_jax.data.phantom import synthetic_ct
from genesis_jax.transforms import restoration_batch
from genesis_jax.train.pretrain import default_transform, make_restoration_prepare

OUTPAINT_ONLY = dict(local_rate=0.0, nonlinear_rate=0.0, paint_rate=1.0, outpaint_share=1.0)
ANATOMY_STD = 0.01
PURE_NOISE_EQUAL = 0.01
MIN_KEPT_2D = (64 - 4 * 64 // 7) ** 2 / 64**2  # the smallest 2D window: 28 x 28


@pytest.fixture(scope="module")
def cubes() -> jnp.ndarray:
    """16 phantom cubes (64, 64, 32, 1) in [0, 1]: two phantoms, each also flipped and shifted."""
    out = []
    for seed in (0, 1):
        image = normalize_ct(synthetic_ct((64, 64, 32), seed=seed)["image"])
        for k in range(8):
            out.append(np.roll(image[::-1] if k % 2 else image, 3 * k, axis=1))
    return jnp.asarray(np.stack(out)[..., None])


def _equal_fraction(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.mean(inputs == targets, axis=tuple(range(1, inputs.ndim)))


def _anatomy(targets: np.ndarray) -> np.ndarray:
    return np.std(targets, axis=tuple(range(1, targets.ndim))) >= ANATOMY_STD


def test_out_painted_slices_keep_their_anatomy(cubes):
    prepare = jax.jit(make_restoration_prepare(default_transform(OUTPAINT_ONLY, slice_2d=True), slice_2d=True))
    equal, anatomy = [], []
    for seed in range(24):  # 384 pairs, every one out-painted
        inputs, targets = prepare(jax.random.key(seed), {"cube": cubes})
        assert inputs.shape == targets.shape == (16, 64, 64, 1)
        inputs, targets = np.asarray(inputs), np.asarray(targets)
        equal.append(_equal_fraction(inputs, targets))
        anatomy.append(_anatomy(targets))
    equal, anatomy = np.concatenate(equal), np.concatenate(anatomy)
    assert anatomy.mean() > 0.9  # the check below is about anatomy, not blank slices
    pure_noise = anatomy & (equal < PURE_NOISE_EQUAL)
    assert not pure_noise.any(), f"{pure_noise.sum()} of {anatomy.sum()} anatomy slices out-painted to pure noise"
    assert equal.min() >= MIN_KEPT_2D - 1e-6  # at least one whole 2D window kept
    assert equal.max() < 1.0  # and out-painting did happen


def test_the_criterion_catches_the_old_cube_then_slice_path(cubes):
    """The same definition flags the defect: deforming the 3D cube, then taking a slice, gives pure-noise inputs."""
    flagged = 0
    for seed in range(8):
        key = jax.random.key(seed)
        inputs, targets = restoration_batch(key, cubes, OUTPAINT_ONLY)
        z = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (16,), 0, 32))
        rows = np.arange(16)
        inputs, targets = np.asarray(inputs)[rows, :, :, z], np.asarray(targets)[rows, :, :, z]
        flagged += int(np.sum(_anatomy(targets) & (_equal_fraction(inputs, targets) < PURE_NOISE_EQUAL)))
    assert flagged >= 10  # of 128 slices; about 30% expected


def test_default_2d_pairs_are_2d_deformations_of_one_slice(cubes):
    """Published rates: the target is a (flipped) axial slice of the cube, the input has the target's shape."""
    prepare = jax.jit(make_restoration_prepare(default_transform(None, slice_2d=True), slice_2d=True))
    inputs, targets = prepare(jax.random.key(3), {"cube": cubes})
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    assert inputs.shape == targets.shape == (16, 64, 64, 1) and inputs.dtype == np.float32
    assert 0.0 <= inputs.min() and inputs.max() <= 1.0
    volumes = np.asarray(cubes)[..., 0]
    for i in range(16):
        target = targets[i, :, :, 0]
        candidates = [np.flip(target, axes) if axes else target for axes in ((), (0,), (1,), (0, 1))]
        assert any(np.any(np.all(volumes[i] == c[:, :, None], axis=(0, 1))) for c in candidates)


def test_3d_prepare_is_the_transform_with_the_first_split_key(cubes):
    key = jax.random.key(5)
    small = cubes[:2, :32, :32, :16]
    got = make_restoration_prepare(default_transform(None))(key, {"cube": small})
    want = restoration_batch(jax.random.split(key)[0], small)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_slice_2d_rejects_a_3d_transform_setting():
    with pytest.raises(ValueError, match="spatial_dims"):
        default_transform(dict(spatial_dims=3), slice_2d=True)
