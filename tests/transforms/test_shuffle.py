"""Local pixel shuffling: exact last-writer-wins ownership, per-window permutations, published statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.transforms import local_pixel_shuffle, sampling, shuffle


def _stream(i: int) -> jax.Array:
    return jnp.asarray([i, 1000 + i], jnp.uint32)


def _sequential_owner(origins: np.ndarray, sizes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The published loop's write order, window by window: the reference for ownership."""
    owner = -np.ones(shape, np.int32)
    for w in range(origins.shape[0]):
        owner[tuple(slice(o, o + s) for o, s in zip(origins[w], sizes[w]))] = w
    return owner


@pytest.mark.parametrize(
    "shape, windows",
    [
        ((64, 64, 32), 10000),  # published: levels {1, 3} on every axis
        ((75, 20, 12), 3000),  # axis 0 reaches level 7 (max window 7)
        ((40, 30), 500),  # 2D
        ((16, 16, 8), 300),  # z below 10: windows of size 1 there
    ],
)
def test_ownership_is_the_last_writer(shape, windows):
    stream = _stream(3)
    origins, sizes = jax.jit(shuffle.draw_windows, static_argnums=(1, 2))(stream, shape, windows)
    owner = jax.jit(shuffle.ownership_map, static_argnums=2)(origins, sizes, shape)
    origins, sizes = np.asarray(origins), np.asarray(sizes)
    np.testing.assert_array_equal(np.asarray(owner), _sequential_owner(origins, sizes, shape))
    # the published size and position laws
    max_sizes = np.asarray(shuffle.max_window_sizes(shape))
    assert (sizes >= 1).all() and (sizes <= max_sizes).all()
    assert (origins >= 0).all() and (origins + sizes <= np.asarray(shape)).all()
    for axis, m in enumerate(max_sizes):
        assert set(np.unique(sizes[:, axis])) == set(range(1, m + 1))


def test_each_window_permutes_its_own_original_voxels():
    shape = (64, 64, 32)
    stream = _stream(5)
    source = np.asarray(jax.jit(shuffle.shuffle_sources, static_argnums=(1, 2))(stream, shape, 10000)).ravel()
    origins, sizes = (np.asarray(a) for a in shuffle.draw_windows(stream, shape, 10000))
    owner = _sequential_owner(origins, sizes, shape).ravel()
    assert (source[owner < 0] == np.flatnonzero(owner < 0)).all()  # uncovered voxels keep their value
    coords = np.stack(np.unravel_index(source, shape), axis=1)
    owned = owner >= 0
    lo, hi = origins[owner[owned]], origins[owner[owned]] + sizes[owner[owned]]
    assert ((coords[owned] >= lo) & (coords[owned] < hi)).all()  # sources lie in the owner's window
    # sources of one window's voxels are distinct (a permutation restricted to the voxels it still owns)
    pairs = np.unique(np.stack([owner[owned], source[owned]], axis=1), axis=0)
    assert pairs.shape[0] == owned.sum()


def test_forced_shuffle_changes_the_published_fraction_of_voxels():
    # published (unique-valued ramp, 10,000 windows on 64x64x32): 0.784, sd 0.003 over draws
    ramp = jnp.arange(64 * 64 * 32, dtype=jnp.float32).reshape(64, 64, 32, 1) / (64 * 64 * 32)
    keys = jax.random.split(jax.random.key(7), 6)
    out = jax.jit(jax.vmap(lambda k: local_pixel_shuffle(k, ramp)))(keys)
    changed = np.asarray(jnp.mean(out != ramp[None], axis=(1, 2, 3, 4)))
    assert abs(changed.mean() - 0.784) < 0.006, changed
    # a window permutation keeps the window's values: the multiset of values changes only through overwrites
    assert np.isin(np.asarray(out[0]).ravel(), np.asarray(ramp).ravel()).all()


def test_window_permutations_are_bijections_close_to_uniform():
    keys = sampling.hash_bits(_stream(9), jnp.arange(24000))
    for n in (2, 3, 4, 5, 7, 108):
        index = jnp.arange(n)[None, :]
        size = jnp.full((1, n), n)
        mult, offset = shuffle.draw_affine(_stream(n), jnp.full((keys.shape[0],), n), 108)
        perm = np.asarray(
            jax.jit(shuffle.window_permutation)(index, size, mult[:, None], offset[:, None], keys[:, None])
        )
        assert (np.sort(perm, axis=1) == np.arange(n)).all(), n
        if n <= 5:
            # total-variation distance to the uniform distribution on S_n, against its sampling noise
            codes = (perm * n ** np.arange(n)).sum(axis=1)
            counts = np.bincount(np.unique(codes, return_inverse=True)[1], minlength=math.factorial(n))
            assert counts.size == math.factorial(n)
            tv = 0.5 * np.abs(counts / counts.sum() - 1 / counts.size).sum()
            noise = 0.5 * math.sqrt(2 * counts.size / math.pi / counts.sum())
            assert tv < noise + 0.03, (n, tv)
        # each position's image is uniform (exact in expectation, thanks to the affine step)
        fixed = (perm == np.arange(n)).mean()
        assert abs(fixed - 1 / n) < 4 * math.sqrt((1 / n) / perm.size) + 1e-9, (n, fixed)


@pytest.mark.parametrize("n", [4, 300])
def test_window_permutation_float_step_for_huge_windows(n):
    # windows over 2^16 voxels (cubes of several hundred voxels per axis) take K from a float product; windows over
    # 128 voxels reuse swap bits within a round: both must still give bijections with uniform marginals
    keys = sampling.hash_bits(_stream(3), jnp.arange(6000))
    mult, offset = shuffle.draw_affine(_stream(n), jnp.full((keys.shape[0],), n), 1 << 17)
    for max_size in (1 << 16, 1 << 17):
        perm = np.asarray(
            jax.jit(shuffle.window_permutation, static_argnums=(5, 6))(
                jnp.arange(n)[None, :], jnp.full((1, n), n), mult[:, None], offset[:, None], keys[:, None], 8, max_size
            )
        )
        assert (np.sort(perm, axis=1) == np.arange(n)).all(), (n, max_size)
        fixed = (perm == np.arange(n)).mean()
        assert abs(fixed - 1 / n) < 4 * math.sqrt((1 / n) / perm.size), (n, max_size, fixed)


def test_window_permutation_affine_step_does_not_overflow_on_huge_windows():
    # multiplier x index can overflow int32 beyond 46,340 voxels: a 100,000-voxel window of a cube whose largest
    # windows are 51^3 (cubes of ~512 voxels per axis), multipliers drawn as shuffle_sources draws them
    n, max_volume = 100000, 51**3
    keys = sampling.hash_bits(_stream(4), jnp.arange(4))
    mult, offset = shuffle.draw_affine(_stream(n), jnp.full((4,), n), max_volume)
    assert (np.asarray(mult).astype(np.int64) * (n - 1) >= 2**31).any()  # the int32 product would wrap
    perm = np.asarray(
        jax.jit(shuffle.window_permutation, static_argnums=(5, 6))(
            jnp.arange(n)[None, :], n, mult[:, None], offset[:, None], keys[:, None], 8, max_volume
        )
    )
    assert (np.sort(perm, axis=1) == np.arange(n)).all()


def test_window_permutation_overflow_free_affine_step_is_the_same_map():
    # the double-and-add form gives the int32 form's permutation wherever both apply (K from the integer step in both)
    n = 300
    keys = sampling.hash_bits(_stream(6), jnp.arange(500))
    mult, offset = shuffle.draw_affine(_stream(n), jnp.full((keys.shape[0],), n), n)
    perm = jax.jit(shuffle.window_permutation, static_argnums=(5, 6))
    args = (jnp.arange(n)[None, :], n, mult[:, None], offset[:, None], keys[:, None], 8)
    np.testing.assert_array_equal(perm(*args, n), perm(*args, 46341))


def test_window_permutation_rejects_more_rounds_than_it_has_constants():
    with pytest.raises(ValueError, match="rounds"):
        shuffle.window_permutation(jnp.arange(4), jnp.full(4, 4), 1, 0, jnp.uint32(5), rounds=9)


def test_no_windows_is_the_identity():
    image = jnp.linspace(0, 1, 10 * 12 * 14).reshape(10, 12, 14, 1)
    np.testing.assert_array_equal(local_pixel_shuffle(jax.random.key(0), image, num_windows=0), image)


def test_channels_move_together():
    image = jnp.stack([jnp.linspace(0, 1, 20 * 20 * 10)] * 2, axis=-1).reshape(20, 20, 10, 2)
    out = local_pixel_shuffle(jax.random.key(1), image, num_windows=500)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    assert not np.array_equal(out, image)
