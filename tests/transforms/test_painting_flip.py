"""In-/out-painting box laws and published fractions; flip draw distributions in both modes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.transforms import apply_flips, draw_flips, in_painting, out_painting, painting, random_flip

SHAPE = (64, 64, 32)


def _streams(n: int, salt: int) -> jax.Array:
    return jnp.stack([jnp.arange(n, dtype=jnp.uint32), jnp.full((n,), salt, jnp.uint32)], axis=1)


def _fractions(mask_fn, n: int, salt: int) -> np.ndarray:
    fraction = jax.jit(lambda s: lax_map_mean(mask_fn, s))
    return np.asarray(fraction(_streams(n, salt)))


def lax_map_mean(mask_fn, streams):
    return jax.lax.map(lambda s: jnp.mean(mask_fn(s, SHAPE)), streams, batch_size=250)


def test_inpainting_masked_fraction_matches_published():
    # published (4,000 draws of the HEAD code): mean 0.056, sd 0.021, P(0 boxes) = 0.05
    frac = _fractions(painting.inpaint_mask, 2000, 11)
    assert abs(frac.mean() - 0.056) < 0.003, frac.mean()  # sd of the mean ~0.0005
    assert abs(frac.std() - 0.021) < 0.003, frac.std()
    assert abs((frac == 0).mean() - 0.05) < 0.02
    assert frac.max() < 0.15


def test_outpainting_kept_fraction_matches_published():
    # published: mean 0.317, sd 0.063
    frac = _fractions(painting.outpaint_keep_mask, 2000, 12)
    assert abs(frac.mean() - 0.317) < 0.006, frac.mean()  # sd of the mean ~0.0014
    assert abs(frac.std() - 0.063) < 0.006, frac.std()
    assert frac.min() > 0.05


@pytest.mark.parametrize("shape", [SHAPE, (32, 32, 16), (12, 9, 8), (40, 30)])
def test_box_laws_and_margins(shape):
    ranges_in = [painting.inpaint_size_range(n) for n in shape]
    ranges_out = [painting.outpaint_size_range(n) for n in shape]
    if shape == SHAPE:  # the published 64x64x32 constants
        assert ranges_in == [(10, 21), (10, 21), (5, 10)]
        assert ranges_out == [(28, 37), (28, 37), (14, 19)]
    for ranges in (ranges_in, ranges_out):
        origins, sizes = jax.jit(painting._draw_boxes, static_argnums=(1, 2, 3))(
            jnp.asarray([4, 5], jnp.uint32), shape, 400, tuple(ranges)
        )
        origins, sizes, dims = np.asarray(origins), np.asarray(sizes), np.asarray(shape)
        lo, hi = np.asarray(ranges).T
        assert (sizes >= lo).all() and (sizes <= hi).all()
        margin = np.minimum(3, (dims - sizes) // 2)
        assert (origins >= margin).all() and (origins + sizes <= dims - margin).all()
        if min(shape) >= 16:
            assert (origins >= 3).all() and (origins + sizes <= dims - 3).all()


def test_painting_replaces_with_noise_and_keeps_the_rest():
    image = jnp.full((*SHAPE, 1), 0.25)
    out_in = in_painting(jax.random.key(0), image)
    out_out = out_painting(jax.random.key(0), image)
    for out in (out_in, out_out):
        changed = np.asarray(out != image)
        noise = np.asarray(out)[changed]
        assert noise.min() >= 0.0 and noise.max() < 1.0
        assert abs(noise.mean() - 0.5) < 0.01
    assert 0.0 < float(jnp.mean(out_in != image)) < 0.15
    assert 0.5 < float(jnp.mean(out_out != image)) < 0.95


def _expected_flip_patterns(choices: list[int], spatial_ndim: int) -> dict[tuple[bool, ...], float]:
    """P(net flip pattern) of the published loop: k calls w.p. 0.6, 0.24, 0.096, 0.064, each a uniform choice."""
    out: dict[tuple[bool, ...], float] = {}
    for k, p_calls in enumerate([0.6, 0.24, 0.096, 0.064]):
        for sequence in itertools.product(choices, repeat=k):
            pattern = tuple(sequence.count(axis) % 2 == 1 for axis in range(spatial_ndim))
            out[pattern] = out.get(pattern, 0.0) + p_calls / len(choices) ** k
    return out


@pytest.mark.parametrize(
    "mode, spatial_ndim, choices",
    [("published", 3, [-1, 0, 1]), ("published", 2, [-1, 0, 1]), ("all", 3, [0, 1, 2]), ("all", 2, [0, 1])],
)
def test_flip_patterns_follow_the_published_loop(mode, spatial_ndim, choices):
    # published mode: choice over {channel axis (no-op), axis 0, axis 1}; the depth axis is never flipped
    draws = 20000
    flags = np.asarray(
        jax.jit(jax.vmap(lambda s: draw_flips(s, spatial_ndim, 0.4, mode)))(_streams(draws, 21 + spatial_ndim))
    )
    expected = _expected_flip_patterns(choices, spatial_ndim)
    patterns, counts = np.unique(flags, axis=0, return_counts=True)
    observed = {tuple(bool(v) for v in p): c / draws for p, c in zip(patterns, counts)}
    assert set(observed) <= set(expected)
    for pattern, p in expected.items():
        assert abs(observed.get(pattern, 0.0) - p) < 0.012, (pattern, observed.get(pattern), p)
    if mode == "published" and spatial_ndim == 3:
        assert not flags[:, 2].any()


def test_flip_is_applied_to_input_and_target_alike():
    image = jnp.arange(6 * 5 * 4, dtype=jnp.float32).reshape(6, 5, 4, 1)
    for seed in range(8):
        x, y = random_flip(jax.random.key(seed), image, image * 2, rate=1.0)
        np.testing.assert_array_equal(y, x * 2)
    flipped = apply_flips(image, jnp.asarray([True, False, True]))
    np.testing.assert_array_equal(flipped, image[::-1, :, ::-1])
