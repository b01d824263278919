"""The shared training loop (genesis_jax.train.loop) on a fake task: a one-layer network whose validation losses
are scripted, so the periodic actions, early stopping, the best checkpoint, the export, the resume of a finished
run and the NaN guard are checked without a real network."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from genesis_jax.data.pipeline import pretrain_dataset
from genesis_jax.train import checkpointing
from genesis_jax.train.loop import Task, TrainingDiverged, itstime, train
from genesis_jax.train.mesh import make_mesh
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.steps import make_train_step, mse_loss

SHAPE = (4, 1)


def test_itstime():
    assert [s for s in range(1, 13) if itstime(s, 4)] == [4, 8, 12]
    assert [s for s in range(1, 11) if itstime(s, 4, 10, last=True)] == [4, 8, 10]
    assert not any(itstime(s, 0, 10) or itstime(s, None) for s in range(1, 11))  # 0/None: never
    assert itstime(10, 0, 10, last=True) and not itstime(10, 0, 10)


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(x.shape[-1])(x)


def config(**checkpoint):
    return ml_collections.ConfigDict({
        "optimizer": {"learning_rate": 0.1},
        "schedule": {"kind": "constant", "factor": 0.5, "patience": 1, "min_delta": 0.0, "min_lr": 0.0,
                     "every_epochs": 1},
        "early_stopping": {"patience": 2, "min_delta": 0.0},
        "checkpoint": {"keep": 10, "async_save": False, "every_steps": 1000, "every_seconds": 1e9,
                       "sync_every_steps": 1, **checkpoint},
        "logging": {"progress": False, "tensorboard": False, "every_steps": 1},
    })


def fake_task(val_losses, seen, *, nan_at=None):
    """``make_task(resuming)``: epochs of 2 steps; validation returns the next scripted loss and records the
    parameters it saw (``seen``); recalibration records what it was given and changes nothing."""

    def make_task(resuming):
        model, tx = Linear(), build_optimizer("sgd", 0.1)
        step = make_train_step(mse_loss, lambda key, b: (b["cube"], 0.5 * b["cube"]))
        calls = []

        def train_step(state, batch):
            calls.append(1)
            state, metrics = step(state, batch)
            if len(calls) == nan_at:
                metrics = {**metrics, "finite": jnp.asarray(False), "loss": jnp.asarray(jnp.nan)}
            return state, metrics

        def validate(state):
            seen["val"].append((int(state.step), jax.device_get(state.params)))
            return {"val_loss": val_losses[len(seen["val"]) - 1]}

        def recalibrate(state, variables):
            seen["export"].append(variables)
            return variables, 0

        source = [np.full(SHAPE[:-1], i / 8, np.float32) for i in range(8)]
        return Task(name="fake", model=model, model_config={"name": "linear"}, tx=tx, mesh=make_mesh(1),
                    key=jax.random.key(0), input_shape=SHAPE, global_batch_size=2, steps_per_epoch=2, max_steps=20,
                    train_iter=iter(pretrain_dataset(source, batch_size=2, seed=0, prefetch=0)),
                    train_step=train_step, validate=validate, recalibrate=recalibrate, save_each_epoch=True)

    return make_task


def test_validation_early_stopping_best_checkpoint_and_export(tmp_path):
    seen = {"val": [], "export": []}
    result = train(config(), tmp_path, fake_task([3.0, 2.0, 2.5, 2.6], seen))
    # epochs end at steps 2, 4, 6, 8; no improvement in epochs 3 and 4 (patience 2) ends the run at step 8
    assert result.stopped == "early_stopping" and result.step == 8
    assert [s for s, _ in seen["val"]] == [2, 4, 6, 8]
    assert result.best == {"val_loss": 2.0, "step": 4, "epoch": 2}
    assert [h["val_loss"] for h in result.history] == [3.0, 2.0, 2.5, 2.6]
    ckpts = checkpointing.TrainCheckpoints(tmp_path)
    assert ckpts.latest.all_steps() == [2, 4, 6, 8] and ckpts.best_step() == 4  # saved after every validation
    ckpts.close()
    # the export is the best epoch's parameters, written to weights/ with where they came from
    best_params = seen["val"][1][1]
    assert len(seen["export"]) == 1
    jax.tree.map(np.testing.assert_array_equal, seen["export"][0]["params"], best_params)
    saved, model_config, meta = checkpointing.load_weights(result.weights)
    jax.tree.map(np.testing.assert_array_equal, saved["params"], best_params)
    assert model_config == {"name": "linear"} and meta["source"] == "genesis_jax fake"
    assert (meta["kind"], meta["step"], meta["precise_bn_batches"]) == ("best validation loss", 4, 0)

    # rerunning a finished run trains nothing and re-exports the same weights
    again = train(config(), tmp_path, fake_task([], seen))
    assert (again.stopped, again.step, again.resumed_from, again.best) == ("early_stopping", 8, 8, result.best)
    assert len(seen["val"]) == 4 and len(again.history) == 4


def test_a_non_finite_step_stops_before_the_next_save(tmp_path):
    seen = {"val": [], "export": []}
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at step 3 .*last good checkpoint is step 2 "):
        train(config(), tmp_path, fake_task([1.0, 1.0], seen, nan_at=3))
    ckpts = checkpointing.TrainCheckpoints(tmp_path)
    assert ckpts.latest_step() == 2  # the epoch end at step 4 was never validated nor saved
    ckpts.close()
    assert [s for s, _ in seen["val"]] == [2] and not (tmp_path / "weights").exists()
