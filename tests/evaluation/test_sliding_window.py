"""Sliding-window inference: tiling, blending, padding, no recompilation, NIfTI output with the input's affine."""

import chex
import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest

from genesis_jax.evaluation import (
    SlidingWindow,
    gaussian_importance,
    save_nifti,
    slicewise,
    sliding_window_inference,
    window_starts,
)
from genesis_jax.models import GenesisUNet


def test_window_starts_cover_the_axis():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]  # last window aligned with the end
    assert window_starts(8, 4, 0.0) == [0, 4]
    assert window_starts(4, 4, 0.75) == [0]
    with pytest.raises(ValueError, match="overlap"):
        window_starts(8, 4, 1.0)
    with pytest.raises(ValueError, match="pad"):
        window_starts(3, 4, 0.5)


def test_gaussian_importance_is_centred_and_positive():
    g = gaussian_importance((5, 7))
    assert g.max() == pytest.approx(1.0) and g[2, 3] == pytest.approx(1.0)
    assert (g > 0).all()
    np.testing.assert_allclose(g, g[::-1, ::-1])


def _square(variables, x):
    return x * variables["scale"]


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    "shape, window, overlap", [((13, 9, 6), (8, 4, 4), 0.5), ((7, 5), (8, 8), 0.25), ((9, 9), (4, 4), 0.0)]
)
def test_pointwise_network_is_reproduced_exactly(blend, shape, window, overlap):
    # For a voxel-wise "network", every window predicts the same value for a voxel, so any weighted average of the
    # overlapping predictions must give it back; padding must be cropped away.
    vol = np.random.default_rng(0).random(shape).astype(np.float32)
    variables = {"scale": jnp.float32(2.0)}
    out = sliding_window_inference(_square, variables, vol, window, overlap, batch_size=3, blend=blend)
    assert out.shape == (*shape, 1)
    np.testing.assert_allclose(out[..., 0], 2 * vol, rtol=1e-5)


def test_gaussian_blend_weights_window_centres():
    # A "network" that predicts 1 in the centre of every window and 0 at its rim: with Gaussian
    # blending the centre of a window dominates, so the map stays closer to 1 than with constant blending.
    def centre_only(variables, x):
        mask = np.zeros(x.shape[1:], np.float32)
        mask[2:6, 2:6] = 1.0
        return jnp.broadcast_to(jnp.asarray(mask), x.shape)

    vol = np.zeros((12, 12), np.float32)
    g = sliding_window_inference(centre_only, {}, vol, (8, 8), 0.5, blend="gaussian")
    c = sliding_window_inference(centre_only, {}, vol, (8, 8), 0.5, blend="constant")
    assert g.mean() > c.mean()


def test_compiled_once_per_volume_shape():
    calls = []

    @chex.assert_max_traces(n=1)
    def predict(variables, x):
        calls.append(x.shape)
        return jax.nn.sigmoid(x)

    sw = SlidingWindow(predict, (4, 4, 4), overlap=0.5, batch_size=2)
    vol = np.zeros((10, 6, 5), np.float32)
    a = sw({}, vol)
    b = sw({}, vol + 1.0)
    assert a.shape == b.shape == (10, 6, 5, 1)
    np.testing.assert_allclose(b[..., 0], jax.nn.sigmoid(1.0), rtol=1e-6)


def test_whole_volume_window_equals_direct_apply():
    model = GenesisUNet(variant="keras", base_width=2, depth=2)
    vol = np.random.default_rng(1).random((8, 8, 4)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), vol[None, ..., None])
    direct = np.asarray(jax.jit(model.apply)(variables, vol[None, ..., None]))[0]
    out = sliding_window_inference(model.apply, variables, vol, (8, 8, 4), overlap=0.5, batch_size=1)
    np.testing.assert_allclose(out, direct, atol=1e-5)


def test_bad_volume_rank_names_shapes():
    sw = SlidingWindow(_square, (4, 4))
    with pytest.raises(ValueError, match=r"does not match a 2D window"):
        sw({"scale": 1.0}, np.zeros((4, 4, 4, 4, 1)))
    with pytest.raises(ValueError, match="num_classes=2"):
        SlidingWindow(_square, (4, 4), num_classes=2)({"scale": 1.0}, np.zeros((4, 4)))


def test_save_nifti_keeps_the_affine(tmp_path):
    affine = np.diag([3.0, 2.0, 1.5, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 7.0]
    prob = np.random.default_rng(2).random((5, 4, 3, 1)).astype(np.float32)
    path = save_nifti(prob, affine, tmp_path / "p" / "prob.nii.gz")
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(np.asarray(img.dataobj), prob[..., 0])


def test_slicewise_runs_a_2d_network_over_every_slice():
    calls = []

    def predict_2d(variables, x):
        calls.append(x.shape)
        assert x.ndim == 4  # (B, X, Y, C): a 2D network sees 2D images
        return x * 3.0

    vol = np.random.default_rng(3).random((9, 7, 5)).astype(np.float32)
    out = sliding_window_inference(slicewise(predict_2d), {}, vol, (4, 4, 1), overlap=0.5, batch_size=8)
    np.testing.assert_allclose(out[..., 0], 3 * vol, rtol=1e-5)
    assert len(calls) == 1  # one trace for all slices


def test_window_corners_keep_their_probability():
    # The published 64x64x32 window weighs its corners exp(-23) ~ 1e-10; a volume corner covered by one window
    # corner only must still get the network's value back, not ~1% of it.
    vol = np.zeros((70, 64, 32), np.float32)
    out = sliding_window_inference(lambda v, x: jnp.full(x.shape, 0.5, jnp.float32), {}, vol, (64, 64, 32), 0.5,
                                   batch_size=2)
    np.testing.assert_allclose(out, 0.5, rtol=1e-5)


def _ramp_x(variables, x):
    """A network that is not flip-equivariant: the window's own x index (0 ... w-1) on every voxel."""
    ramp = jnp.arange(x.shape[1], dtype=jnp.float32).reshape((1, -1) + (1,) * (x.ndim - 2))
    return jnp.broadcast_to(ramp, x.shape)


def test_mirroring_averages_the_flipped_predictions():
    vol = np.zeros((8, 6, 4), np.float32)
    plain = SlidingWindow(_ramp_x, (8, 6, 4))({}, vol)[..., 0]
    mirrored = SlidingWindow(_ramp_x, (8, 6, 4), mirror_axes=(0, 1, 2))({}, vol)[..., 0]
    np.testing.assert_allclose(plain[:, 0, 0], np.arange(8))
    np.testing.assert_allclose(mirrored, 3.5)  # (i + (7 - i)) / 2: the x-flip, back-flipped, meets the plain one
    y_only = SlidingWindow(_ramp_x, (8, 6, 4), mirror_axes=(1,))({}, vol)[..., 0]
    np.testing.assert_allclose(y_only, plain)  # flipping y leaves an x ramp unchanged
    with pytest.raises(ValueError, match="mirror_axes"):
        SlidingWindow(_ramp_x, (8, 6, 4), mirror_axes=(3,))


def test_progress_steps_give_the_scan_result_and_compile_once():
    vol = np.random.default_rng(4).random((13, 9, 6)).astype(np.float32)

    @chex.assert_max_traces(n=1)
    def predict(variables, x):
        return jax.nn.sigmoid(x * variables["scale"]) * jnp.arange(x.shape[1], dtype=jnp.float32)[:, None, None, None]

    sw = SlidingWindow(predict, (8, 4, 4), overlap=0.5, batch_size=3)
    scanned = SlidingWindow(lambda v, x: predict.__wrapped__(v, x), (8, 4, 4), overlap=0.5, batch_size=3)(
        {"scale": 2.0}, vol)
    done: list[int] = []
    stepped = sw({"scale": 2.0}, vol, progress=done.append)
    np.testing.assert_allclose(stepped, scanned, rtol=1e-6)
    assert sum(done) == sw.num_windows(vol.shape) == 3 * 4 * 2 and len(done) == 8  # 24 windows, batches of 3
    sw({"scale": 3.0}, vol + 1.0, progress=done.append)  # same shape: no new trace
