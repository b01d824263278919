"""Augmented patch sets: geometry of the transforms, vmapped prediction, chunked streaming of large pools."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.active import PoolPredictor, candidate_patches, make_patch_set, patch_probabilities


def test_identity_flips_and_rotations_are_exact_crops():
    ctx = np.arange(6 * 6 * 6, dtype=np.float32).reshape(6, 6, 6, 1)
    ps = make_patch_set((4, 4, 4), flips_rotations=8)
    patches = np.asarray(jax.jit(lambda c: candidate_patches(c, ps))(ctx))
    crop = ctx[1:5, 1:5, 1:5]
    np.testing.assert_array_equal(patches[0], crop)
    np.testing.assert_array_equal(patches[1], crop[::-1])
    np.testing.assert_array_equal(patches[2], crop[:, ::-1])
    np.testing.assert_array_equal(patches[3], crop[::-1, ::-1])
    np.testing.assert_array_equal(patches[6], crop.transpose(1, 0, 2, 3))
    rotations = [np.rot90(crop, k, axes=(0, 1)) for k in range(4)]
    for j in (4, 5):  # the two quarter turns
        assert any(np.array_equal(patches[j], r) for r in rotations[1::2])
    assert len({patches[j].tobytes() for j in range(8)}) == 8


def test_scales_and_translations_sample_the_context():
    # a linear ramp along x: a patch's mean is the intensity at its centre, its spread grows with the scale
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[:, None, None], (16, 16, 1)).copy()
    ps = make_patch_set((4, 4), box_shape=(4, 4), scales=(1.0, 2.0), translation=0.5, translation_mode="grid")
    assert ps.m == 2 * 5
    patches = np.asarray(candidate_patches(ramp, ps))
    centre = 7.5
    spreads = patches[..., 0].max(axis=(1, 2)) - patches[..., 0].min(axis=(1, 2))
    np.testing.assert_allclose(spreads[:5], 3.0)  # scale 1: 4 voxels
    np.testing.assert_allclose(spreads[5:], 6.0)  # scale 2: 8 voxels, sampled at 4 points
    means = patches[..., 0].mean(axis=(1, 2))
    np.testing.assert_allclose(means[[0, 3, 4]], centre)  # no shift, or a shift along y
    np.testing.assert_allclose(means[1], centre + 2.0)  # +0.5 box = +2 voxels along x
    np.testing.assert_allclose(means[2], centre - 2.0)


def test_published_polyp_set_has_24_patches_and_bad_settings_are_named():
    ps = make_patch_set((8, 8), scales=(1.0, 1.2, 1.5), translation=0.1, translation_mode="random",
                        flips_rotations=8)
    assert ps.m == 24 and np.abs(ps.offsets).max() <= 0.1
    with pytest.raises(ValueError, match="flips_rotations"):
        make_patch_set((8, 8), flips_rotations=3)
    with pytest.raises(ValueError, match="translation_mode"):
        make_patch_set((8, 8), translation_mode="jitter")


def _linear_predict(variables, patches):
    logits = jnp.stack([patches.mean(axis=(1, 2, 3)), patches.max(axis=(1, 2, 3))], -1) * variables["w"]
    return jax.nn.softmax(logits, axis=-1)


def test_vmapped_prediction_equals_a_per_candidate_loop():
    rng = np.random.default_rng(0)
    contexts = rng.random((13, 6, 6, 1)).astype(np.float32)
    ps = make_patch_set((4, 4), scales=(1.0, 1.5), flips_rotations=4)
    variables = {"w": jnp.asarray([2.0, -1.0])}
    batched = jax.jit(lambda c: patch_probabilities(_linear_predict, variables, c, ps, batch_size=4))(contexts)
    loop = np.stack([_linear_predict(variables, candidate_patches(c, ps)) for c in contexts])
    np.testing.assert_allclose(np.asarray(batched), loop, rtol=1e-6)


def test_pool_predictor_streams_any_pool_size_with_one_compilation():
    chex.clear_trace_counter()
    ps = make_patch_set((4, 4), flips_rotations=2)
    predictor = PoolPredictor(_linear_predict, ps, chunk_size=64, device_batch=16, max_traces=1)
    variables = {"w": jnp.asarray([1.0, 1.0])}
    rng = np.random.default_rng(1)
    for n in (10, 64, 150):  # padded to whole chunks: one trace for all
        contexts = rng.random((n, 5, 5, 1)).astype(np.float32)
        out = predictor(variables, contexts)
        direct = np.stack([_linear_predict(variables, candidate_patches(c, ps)) for c in contexts[:5]])
        assert out.shape == (n, 2, 2)
        np.testing.assert_allclose(out[:5], direct, rtol=1e-6)


def test_pool_of_100000_candidates():
    ps = make_patch_set((4, 4), flips_rotations=2)
    predictor = PoolPredictor(_linear_predict, ps, chunk_size=16384, device_batch=1024)
    contexts = np.random.default_rng(2).random((100_000, 4, 4, 1)).astype(np.float32)
    out = predictor({"w": jnp.asarray([1.0, 1.0])}, contexts)
    assert out.shape == (100_000, 2, 2) and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
