"""The published epoch-level controls: plateau halving (Keras ReduceLROnPlateau), step halving (PyTorch StepLR 40),
early stopping (patience 50), and the learning rate held in the optimizer state."""

import jax
import jax.numpy as jnp
import pytest

from genesis_jax.train.schedules import EarlyStopping, PlateauHalving, StepHalving, build_lr_schedule, \
    build_optimizer, get_learning_rate, set_learning_rate


def test_plateau_halves_after_patience_and_respects_min_lr():
    sched = PlateauHalving(factor=0.5, patience=3, min_delta=1e-4, min_lr=0.2)
    lr = 1.0
    lrs = []
    for value in [1.0, 0.9, 0.89995, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:
        lr = sched(0, value, lr)
        lrs.append(lr)
    # 0.89995 is not better than 0.9 by more than min_delta; three bad epochs -> halve; three more -> 0.25; floor 0.2
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2]
    restored = PlateauHalving(factor=0.5, patience=3, min_delta=1e-4, min_lr=0.2)
    restored.load_state_dict(sched.state_dict())
    assert restored.state_dict() == sched.state_dict()


def test_step_halving_every_40_epochs():
    sched = StepHalving(1.0, every=40, factor=0.5)
    assert [sched(e, 0.0, None) for e in (0, 39, 40, 79, 80, 120)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]


def test_early_stopping_patience():
    stop = EarlyStopping(patience=2)
    assert [stop(e, v) for e, v in enumerate([1.0, 0.5, 0.6, 0.5, 0.4, 0.45, 0.45])] == [
        False, False, False, True, False, False, True]
    assert stop.best == 0.4 and stop.best_epoch == 4


def test_unknown_schedule_names_the_field():
    with pytest.raises(ValueError, match="schedule.kind"):
        build_lr_schedule("cosine", 1.0)
    with pytest.raises(ValueError, match="optimizer.name"):
        build_optimizer("rmsprop", 1.0)


def test_learning_rate_lives_in_the_optimizer_state():
    tx = build_optimizer("sgd", 1.0, momentum=0.9)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    assert float(get_learning_rate(state)) == 1.0
    state = set_learning_rate(state, 0.25)
    updates, _ = jax.jit(tx.update)({"w": jnp.ones(3)}, state, params)
    assert float(updates["w"][0]) == pytest.approx(-0.25)
