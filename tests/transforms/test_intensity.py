"""Non-linear intensity map: the published Bezier map (checked against our NumPy port), monotone, exact ends."""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.published_numpy_transforms import PublishedTransforms
from genesis_jax.transforms import intensity, nonlinear_intensity, sampling

_curve_table = jax.jit(intensity.curve_table)


def _published_map(controls: np.ndarray, decreasing: bool, x: np.ndarray) -> np.ndarray:
    """The published 100,000-point curve and np.interp, from our NumPy port."""
    r1, r2, r3, r4 = (float(c) for c in controls)
    xvals, yvals = PublishedTransforms().bezier_curve([[0, 0], [r1, r2], [r3, r4], [1, 1]], n_times=100000)
    if decreasing:
        xvals = np.sort(xvals)
    else:
        xvals, yvals = np.sort(xvals), np.sort(yvals)
    return np.interp(x, xvals, yvals)


def test_table_matches_the_published_curve():
    x = np.linspace(0, 1, 20001)
    rng = np.random.default_rng(0)
    for trial in range(12):
        controls = rng.random(4).astype(np.float32)
        decreasing = bool(trial % 2)
        table = _curve_table(jnp.asarray(controls), jnp.asarray(decreasing))
        ours = np.asarray(intensity.apply_table(jnp.asarray(x, jnp.float32), table))
        err = np.abs(ours - _published_map(controls, decreasing, x))
        assert np.mean(err) < 1e-6 and np.max(err) < 5e-4, (controls, np.mean(err), np.max(err))


def test_table_near_degenerate_curves():
    # control values at 0 or 1 give the map a point of infinite slope (at an end, or mid-range for (1, 0, 0, 1)):
    # the table's linear interpolation is off by more than 1e-3 only within a grid cell or two of that point
    x = np.linspace(0, 1, 20001)
    for controls in ([0, 0.9, 0, 0.9], [0.999, 0.001, 0.999, 0.001], [0, 1, 1, 0], [1, 0, 0, 1]):
        for decreasing in (False, True):
            controls = np.asarray(controls, np.float32)
            table = _curve_table(jnp.asarray(controls), jnp.asarray(decreasing))
            ours = np.asarray(intensity.apply_table(jnp.asarray(x, jnp.float32), table))
            err = np.abs(ours - _published_map(controls, decreasing, x))
            assert np.mean(err) < 2e-5, (controls, decreasing, err.mean())
            assert np.mean(err > 1e-3) < 3 / intensity.TABLE_SIZE, (controls, decreasing, err.max())


def test_map_is_monotone_with_exact_ends_and_half_decreasing():
    streams = jnp.stack([jnp.arange(2000, dtype=jnp.uint32), jnp.full((2000,), 77, jnp.uint32)], axis=1)

    def one(stream):
        controls, decreasing = intensity.draw_curve(stream)
        return intensity.curve_table(controls, decreasing, 257), decreasing

    tables, decreasing = jax.jit(jax.vmap(one))(streams)
    tables, decreasing = np.asarray(tables), np.asarray(decreasing)
    steps = np.diff(tables, axis=1)
    assert (steps[decreasing] <= 1e-6).all() and (steps[~decreasing] >= -1e-6).all()
    np.testing.assert_array_equal(tables[:, 0], np.where(decreasing, 1.0, 0.0))
    np.testing.assert_array_equal(tables[:, -1], np.where(decreasing, 0.0, 1.0))
    # published: half of the maps decreasing (2,000 draws: sd 0.011)
    assert abs(decreasing.mean() - 0.5) < 0.045


def test_apply_keeps_range_shape_dtype_and_ends():
    image = jnp.concatenate([jnp.zeros(5), jnp.linspace(0, 1, 990), jnp.ones(5)]).reshape(10, 10, 10, 1)
    out = nonlinear_intensity(jax.random.key(3), image)
    assert out.shape == image.shape and out.dtype == image.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    ends = {float(out.ravel()[0]), float(out.ravel()[-1])}
    assert ends == {0.0, 1.0}
    assert float(jnp.mean(out != image)) > 0.9


def test_uniform_draws_for_controls():
    u = np.asarray(sampling.uniform(jnp.asarray([1, 2], jnp.uint32), (200000,)))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.001
    counts = np.histogram(u, bins=20, range=(0, 1))[0]
    assert np.abs(counts / counts.mean() - 1).max() < 0.03
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbouring voxels' noise is uncorrelated
