"""restoration_pair / restoration_batch: published decision rates, pair invariants, batching, jit, errors."""

import itertools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genesis_jax.transforms import (
    RestorationSettings,
    apply_flips,
    default_config,
    restoration_batch,
    restoration_pair,
    settings_from_config,
    single_deformations,
)
from genesis_jax.train.cost import hlo_collectives
from genesis_jax.train.mesh import batch_sharding, make_mesh
from genesis_jax.transforms.batching import shard_samples_over
from genesis_jax.transforms.restoration import _Decisions

SMALL = (32, 32, 16)  # the smallest 3D cube on which every published constant applies unclamped


def _cubes(n: int, shape=SMALL, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).random((n, *shape), dtype=np.float32))


def test_default_config_is_published():
    config = default_config()
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.flip_rate == 0.4 and config.flip_mode == "all"
    assert config.local_rate == 0.5 and config.local_windows == 10000
    assert config.nonlinear_rate == 0.9 and config.paint_rate == 0.9 and config.outpaint_share == 0.8
    assert settings_from_config(config) == RestorationSettings() == settings_from_config(None)
    hash(settings_from_config(config))  # static argument of the jitted functions


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(local_rate=1.5), "local_rate"),
        (dict(flip_mode="depth"), "flip_mode"),
        (dict(local_windows=-1), "local_windows"),
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(paint_prob=0.9), "unknown field"),
    ],
)
def test_bad_config_names_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        settings_from_config(override)


def test_decision_rates_match_published():
    # published (4,000 draws): P(shuffle) 0.5, P(non-linear) 0.9, P(in/out/neither) 0.18/0.72/0.10, P(x == y) 0.005
    draws = 40000
    streams = jnp.stack([jnp.arange(draws, dtype=jnp.uint32), jnp.full((draws,), 5, jnp.uint32)], axis=1)

    def decide(stream):
        d = _Decisions(stream, RestorationSettings())
        return jnp.stack([d.shuffle, d.nonlinear, d.inpaint, d.outpaint])

    shuffle_, nonlinear, inpaint, outpaint = np.asarray(jax.jit(jax.vmap(decide))(streams)).T

    def tolerance(p):
        return 4.5 * np.sqrt(p * (1 - p) / draws)

    for observed, p in [
        (shuffle_, 0.5),
        (nonlinear, 0.9),
        (inpaint, 0.18),
        (outpaint, 0.72),
        (~inpaint & ~outpaint, 0.10),
        (~shuffle_ & ~nonlinear & ~inpaint & ~outpaint, 0.005),
    ]:
        assert abs(observed.mean() - p) < tolerance(p), (observed.mean(), p)
    assert not (inpaint & outpaint).any()
    # decisions are independent: e.g. P(shuffle and non-linear) = 0.45
    assert abs((shuffle_ & nonlinear).mean() - 0.45) < tolerance(0.45)


def _flip_variants(cube: np.ndarray) -> list[np.ndarray]:
    flags = itertools.product([False, True], repeat=3)
    return [np.asarray(apply_flips(jnp.asarray(cube), jnp.asarray(f))) for f in flags]


def test_pairs_over_many_draws():
    # 2,000 full pairs: range, target only ever flipped, P(input == target) ~ 0.0055 (published 0.005, plus the
    # in-painting draws with 0 boxes)
    draws = 2000
    cube = _cubes(1, shape=(20, 20, 10))[0]
    cubes = jnp.broadcast_to(cube, (draws, *cube.shape))
    inputs, targets = (np.asarray(a) for a in restoration_batch(jax.random.key(42), cubes, strategy="map"))
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    variants = np.stack(_flip_variants(np.asarray(cube)))
    matches = (targets[:, None] == variants[None]).reshape(draws, len(variants), -1).all(axis=2)
    assert matches.any(axis=1).all()  # every target is the cube, flipped
    identical = (inputs == targets).reshape(draws, -1).all(axis=1)
    assert 1 <= identical.sum() <= 26, identical.sum()  # expected 11; a wrong rate moves it far


def test_same_key_same_pair_and_keys_differ():
    cube = _cubes(1)[0]
    a = restoration_pair(jax.random.key(1), cube)
    b = restoration_pair(jax.random.key(1), cube)
    c = restoration_pair(jax.random.key(2), cube)
    chex.assert_trees_all_equal(a, b)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("impl, strategy", [("threefry2x32", "map"), ("rbg", "vmap")])
def test_batch_equals_per_sample(impl, strategy):
    cubes = _cubes(4)
    key = jax.random.key(3, impl=impl)
    inputs, targets = restoration_batch(key, cubes, strategy=strategy)
    for i, k in enumerate(jax.random.split(key, 4)):
        x, y = restoration_pair(k, cubes[i])
        np.testing.assert_array_equal(inputs[i], x)
        np.testing.assert_array_equal(targets[i], y)


def test_batch_sharded_over_devices_equals_unsharded():
    # the pre-training step calls restoration_batch on a batch sharded over the data axis (tests: 8 CPU devices)
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)
    cubes = _cubes(len(devices))
    sharded = jax.device_put(cubes, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    key = jax.random.key(5)
    x, y = jax.jit(restoration_batch)(key, sharded)
    assert x.sharding.is_equivalent_to(sharded.sharding, x.ndim)  # each device keeps its own samples
    expected = restoration_batch(key, cubes, strategy="map")
    np.testing.assert_array_equal(x, expected[0])
    np.testing.assert_array_equal(y, expected[1])


def test_batch_under_the_train_steps_mesh_runs_per_device_and_equals_unsharded():
    """The train step traces its transforms under ``shard_samples_over(mesh)``: each device deforms its own samples
    (no all-gather in the partitioned program, which the plain vmap over a sharded batch had) and every pair is the
    one the unsharded batch gives."""
    mesh = make_mesh(8)
    cubes = _cubes(8)
    sharded = jax.device_put(cubes, batch_sharding(mesh))
    key = jax.random.key(5)

    def under_mesh(key, cubes):
        with shard_samples_over(mesh):
            return restoration_batch(key, cubes)

    compiled = jax.jit(under_mesh).lower(key, sharded).compile()
    assert not [c for c in hlo_collectives(compiled.as_text()) if c.kind != "all-reduce"]
    x, y = compiled(key, sharded)
    assert x.sharding.is_equivalent_to(sharded.sharding, x.ndim)
    for strategy in ("vmap", "map"):
        expected = restoration_batch(key, cubes, strategy=strategy)
        np.testing.assert_array_equal(x, expected[0])
        np.testing.assert_array_equal(y, expected[1])
    plain = jax.jit(restoration_batch).lower(key, sharded).compile().as_text()
    assert "all-gather" in plain  # what the mesh context removes (if XLA learns to avoid it, drop the context)


def test_raw_uint32_keys_work():
    cubes = _cubes(2)
    x, _ = restoration_batch(jax.random.PRNGKey(0), cubes)
    assert x.shape == cubes.shape


def test_batch_compiles_once_and_runs_inside_a_callers_jit():
    counted = chex.assert_max_traces(lambda key, cubes: restoration_batch(key, cubes), n=1)
    standalone = jax.jit(counted)
    for step in range(3):
        x, y = standalone(jax.random.key(step), _cubes(4, seed=step))
        assert x.shape == y.shape == (4, *SMALL)

    @jax.jit
    def train_step(key, cubes):  # a stand-in for the pre-training step: make pairs, compute a loss
        inputs, targets = restoration_batch(key, cubes)
        return jnp.mean((inputs - targets) ** 2)

    loss = train_step(jax.random.key(9), _cubes(4))
    assert np.isfinite(float(loss)) and float(loss) > 0


def test_layouts_2d_channels_and_dtypes():
    rng = np.random.default_rng(1)
    for cube, config in [  # (64, 64, 32) is run by the CLI tests and the benchmark
        (rng.random((40, 30), dtype=np.float32), None),
        (rng.random((40, 30, 3), dtype=np.float32), dict(spatial_dims=2)),
        (rng.random((20, 20, 12, 2)).astype(jnp.bfloat16), None),
    ]:
        x, y = restoration_pair(jax.random.key(0), jnp.asarray(cube), config)
        assert x.shape == cube.shape and x.dtype == cube.dtype and y.dtype == cube.dtype
    out = single_deformations(jax.random.key(0), jnp.asarray(rng.random((40, 30), dtype=np.float32)))
    assert set(out) == {"flip", "local_shuffle", "nonlinear", "in_painting", "out_painting"}


def test_config_rates_are_applied():
    cube = _cubes(1)[0]
    forced = dict(flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=1.0, outpaint_share=1.0)
    for seed in range(3):
        x, y = restoration_pair(jax.random.key(seed), cube, forced)
        np.testing.assert_array_equal(y, cube)  # no flip
        keep = np.asarray(x == cube)
        assert 0.05 < keep.mean() < 0.6  # out-painting every time: the original survives in 1 to 5 windows only


def test_bad_inputs_get_clear_errors():
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="float"):
        restoration_pair(key, jnp.zeros((16, 16, 8), jnp.int32))
    with pytest.raises(ValueError, match=r"\[0, 1\].*max 1000"):
        restoration_pair(key, jnp.full((16, 16, 8), 1000.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        restoration_batch(key, jnp.full((2, 16, 16, 8), jnp.nan))
    with pytest.raises(ValueError, match="rank"):
        restoration_pair(key, jnp.zeros((4, 4, 4, 4, 4)))
    # traced (inside a caller's jit) values cannot be inspected: they are clipped to [0, 1]
    x, y = jax.jit(restoration_batch)(key, jnp.full((2, 16, 16, 8), 3.0))
    assert float(x.max()) <= 1.0 and float(y.max()) == 1.0
