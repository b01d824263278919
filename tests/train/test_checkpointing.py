"""TrainCheckpoints (state + grain iterator + meta, latest-N and best) and load_init_weights for --init."""

import errno

import grain
import jax
import numpy as np
import pytest

from genesis_jax.models import build_model
from genesis_jax.models.weights import CheckpointError, save_weights
from genesis_jax.train.checkpointing import TrainCheckpoints, load_init_weights
from genesis_jax.workdir import is_disk_full
from genesis_jax.train.mesh import make_mesh
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import abstract_train_state, create_train_state

MODEL = {"name": "genesis_unet", "variant": "keras", "base_width": 2, "depth": 2}
SHAPE = (8, 8, 8, 1)


def _iterator():
    return iter(grain.MapDataset.source(np.arange(40)).shuffle(seed=3).repeat(None).batch(4).to_iter_dataset())


def test_state_iterator_and_meta_roundtrip_keeping_latest_and_best(tmp_path):
    model, tx, mesh = build_model(MODEL), build_optimizer("sgd", 1.0), make_mesh()
    key = jax.random.key(0)
    state = create_train_state(model, tx, key, SHAPE, mesh)
    it = _iterator()
    ckpts = TrainCheckpoints(tmp_path, keep=2)
    for step in (1, 2, 3):
        next(it)
        ckpts.save(step, state.replace(step=state.step + step).checkpoint_tree(), meta={"step": step, "x": [1, 2]},
                   data_iterator=it)
    ckpts.save_best(2, state.variables, val_loss=0.5, meta={"model_config": MODEL})
    ckpts.save_best(3, state.variables, val_loss=0.7, meta={"model_config": MODEL})  # worse: not kept
    expected_next = next(it)
    ckpts.close()

    ckpts = TrainCheckpoints(tmp_path, keep=2)
    assert ckpts.latest.all_steps() == [2, 3] and ckpts.latest_step() == 3 and ckpts.best_step() == 2
    fresh = _iterator()
    tree, meta = ckpts.restore(abstract_train_state(model, tx, key, SHAPE, mesh).checkpoint_tree(), data_iterator=fresh)
    ckpts.close()
    assert int(tree["step"]) == 3 and meta == {"step": 3, "x": [1, 2]}
    np.testing.assert_array_equal(next(fresh), expected_next)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), jax.tree.map(np.asarray,
                                                                                                      tree["params"]))
    variables, model_config, metadata = load_init_weights(tmp_path)
    assert model_config == MODEL and metadata["step"] == 2 and metadata["val_loss"] == 0.5
    assert set(variables) == {"params", "batch_stats"}


def test_load_init_weights_accepts_weights_dirs_and_names_bad_paths(tmp_path):
    variables = {"params": {"w": np.ones(3, np.float32)}, "batch_stats": {}}
    save_weights(tmp_path / "w", variables, MODEL)
    loaded, cfg, _ = load_init_weights(tmp_path / "w")
    assert cfg == MODEL and np.array_equal(loaded["params"]["w"], variables["params"]["w"])
    with pytest.raises(CheckpointError, match="no such weights directory"):
        load_init_weights(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a weights directory"):
        load_init_weights(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no checkpoint to restore"):
        TrainCheckpoints(tmp_path / "fresh").restore({})


def test_best_steps_after_the_resumed_one_are_rolled_back(tmp_path):
    ckpts = TrainCheckpoints(tmp_path, async_save=False)
    variables = {"params": {"w": np.ones(3, np.float32)}}
    ckpts.save_best(4, variables, val_loss=2.0, meta={})
    ckpts.save_best(8, variables, val_loss=1.0, meta={})
    ckpts.roll_back_to(6)  # a rerun resuming at step 6 recomputes step 8
    assert ckpts.best.all_steps() == []  # best/ keeps one step: 8 (4 was dropped when 8 beat it)
    ckpts.save_best(8, variables, val_loss=1.0, meta={})  # no StepAlreadyExistsError
    assert ckpts.best_step() == 8
    ckpts.roll_back_to(None)  # a fresh start keeps no best checkpoint
    assert ckpts.best.all_steps() == []
    ckpts.close()


def test_disk_full_is_recognised_through_causes_and_tensorstore_text():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert is_disk_full(wrapped)
    assert is_disk_full(ValueError("Error writing local file \"/w/d/1\": [OS error: No space left on device]"))
    assert not is_disk_full(ValueError("Checkpoint for step 4 already exists."))
