"""The jitted train step: global-batch BatchNorm under data parallelism, no recompiles across learning-rate changes
and checkpoint restores, the NaN/Inf guard, replicated outputs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.models import build_model
from genesis_jax.train.checkpointing import TrainCheckpoints
from genesis_jax.data.pipeline import global_batch
from genesis_jax.train.mesh import batch_sharding, make_mesh
from genesis_jax.train.schedules import build_optimizer, set_learning_rate
from genesis_jax.train.state import abstract_train_state, create_train_state
from genesis_jax.train.losses import mse_loss
from genesis_jax.train.steps import RetraceError, make_train_step
from tests.train.helpers import noise_transform

MODEL = {"name": "genesis_unet", "variant": "pytorch", "base_width": 2, "depth": 2}
SHAPE = (16, 16, 8, 1)


def prepare(key, batch):
    return noise_transform(key, batch["cube"])


def cubes(seed=0, n=8):
    return {"cube": np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)}


@pytest.fixture(scope="module")
def setup():
    model = build_model(MODEL)
    tx = build_optimizer("sgd", 0.1)
    return model, tx


def test_batchnorm_and_loss_are_over_the_global_batch(setup):
    model, tx = setup
    results = {}
    for n in (8, 1):
        mesh = make_mesh(n)
        state = create_train_state(model, tx, jax.random.key(0), SHAPE, mesh)
        step = make_train_step(mse_loss, prepare, mesh=mesh)
        state, metrics = step(state, global_batch(cubes(), batch_sharding(mesh)))
        results[n] = (float(metrics["loss"]), float(metrics["grad_norm"]), jax.tree.map(np.asarray, state.params))
    np.testing.assert_allclose(results[8][:2], results[1][:2], rtol=2e-5)
    chex.assert_trees_all_close(results[8][2], results[1][2], atol=1e-6)
    # Per-device statistics would differ: the same network applied to one-sample chunks gives another loss.
    state = create_train_state(model, tx, jax.random.key(0), SHAPE, make_mesh(1))
    x = jnp.asarray(cubes()["cube"])
    per_chunk = jax.jit(lambda v, x: jnp.mean(jnp.stack(
        [mse_loss(model.apply(v, x[i:i + 1], train=True, mutable=["batch_stats"])[0], x[i:i + 1]) for i in range(8)])))
    whole = jax.jit(lambda v, x: mse_loss(model.apply(v, x, train=True, mutable=["batch_stats"])[0], x))
    assert abs(float(per_chunk(state.variables, x)) - float(whole(state.variables, x))) > 1e-5


def test_no_retrace_across_lr_changes_and_restores(setup, tmp_path):
    model, tx = setup
    mesh = make_mesh()
    key = jax.random.key(1)
    state = create_train_state(model, tx, key, SHAPE, mesh)
    # chex counts traces of the loss (traced once per trace of the step); max_traces guards the step itself.
    step = make_train_step(chex.assert_max_traces(mse_loss, n=1), prepare, mesh=mesh, max_traces=1)
    state, _ = step(state, global_batch(cubes(1), batch_sharding(mesh)))
    state = state.replace(opt_state=set_learning_rate(state.opt_state, 0.05))
    state, m = step(state, global_batch(cubes(2), batch_sharding(mesh)))
    assert float(m["learning_rate"]) == pytest.approx(0.05)
    ckpts = TrainCheckpoints(tmp_path, async_save=False)
    ckpts.save(2, state.checkpoint_tree(), meta={"step": 2})
    tree, meta = ckpts.restore(abstract_train_state(model, tx, key, SHAPE, mesh).checkpoint_tree())
    ckpts.close()
    restored = state.with_checkpoint_tree(tree)
    assert meta["step"] == 2 and int(restored.step) == 2
    restored, m = step(restored, global_batch(cubes(3), batch_sharding(mesh)))  # a retrace would raise here
    assert int(restored.step) == 3 and bool(m["finite"])
    assert restored.params["head"]["kernel"].sharding.is_fully_replicated
    with pytest.raises(RetraceError, match="traced 2 times"):  # a changed batch shape would recompile
        step(restored, global_batch(cubes(5, n=16), batch_sharding(mesh)))


def test_nan_guard_skips_the_update(setup):
    model, tx = setup
    mesh = make_mesh()
    state = create_train_state(model, tx, jax.random.key(2), SHAPE, mesh)
    before = jax.tree.map(np.asarray, state.params)
    bad = cubes(4)
    bad["cube"][3, 2, 2, 2, 0] = np.nan
    state, metrics = make_train_step(mse_loss, prepare, mesh=mesh)(state, global_batch(bad, batch_sharding(mesh)))
    assert not bool(metrics["finite"]) and not np.isfinite(float(metrics["loss"]))
    assert int(state.step) == 1
    chex.assert_trees_all_equal(before, jax.tree.map(np.asarray, state.params))
