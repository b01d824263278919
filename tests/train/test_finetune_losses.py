"""Fine-tuning losses against hand-computed values; the deep-supervision sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.train.losses import (
    LOSSES,
    bce_dice_loss,
    binary_cross_entropy,
    categorical_cross_entropy,
    deep_supervision_loss,
    dice_loss,
    get_loss,
    mse_loss,
)

Y = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
P = np.array([0.8, 0.4, 0.2, 0.0], np.float32)


def test_dice_loss():
    assert float(dice_loss(Y, P)) == pytest.approx(1 - 3.4 / 4.4, rel=1e-6)


def test_bce_keras_clipping():
    eps = 1e-7
    expected = -(np.log(0.8) + np.log(0.4) + np.log(0.8) + np.log(1 - eps)) / 4
    assert float(binary_cross_entropy(Y, P)) == pytest.approx(expected, rel=1e-5)
    # p = 0 for a positive is clipped, not infinite, and its gradient is finite
    g = jax.grad(lambda p: binary_cross_entropy(jnp.ones(1), p))(jnp.zeros(1))
    assert np.isfinite(np.asarray(g)).all()


def test_bce_dice_is_the_published_form():
    bce = float(binary_cross_entropy(Y, P))
    assert float(bce_dice_loss(Y, P)) == pytest.approx(0.5 * bce - 3.4 / 4.4, rel=1e-5)
    assert float(bce_dice_loss(Y, P, offset=1.0)) == pytest.approx(1 + 0.5 * bce - 3.4 / 4.4, rel=1e-5)


def test_categorical_and_mse():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    expected = -(np.log(0.7) + np.log(0.8)) / 2
    assert float(categorical_cross_entropy(np.array([0, 2]), probs)) == pytest.approx(expected, rel=1e-6)
    onehot = np.eye(3, dtype=np.float32)[[0, 2]]
    assert float(categorical_cross_entropy(onehot, probs)) == pytest.approx(expected, rel=1e-6)
    assert float(mse_loss(Y, P)) == pytest.approx((0.04 + 0.36 + 0.04 + 0) / 4, rel=1e-6)


def test_deep_supervision_sums_heads():
    heads = [jnp.asarray(P), jnp.asarray(1 - P), jnp.asarray(Y)]
    total = deep_supervision_loss(dice_loss, Y, heads)
    assert float(total) == pytest.approx(sum(float(dice_loss(Y, h)) for h in heads), rel=1e-6)
    weighted = deep_supervision_loss(mse_loss, Y, heads[:2], weights=[2.0, 0.5])
    assert float(weighted) == pytest.approx(2 * float(mse_loss(Y, P)) + 0.5 * float(mse_loss(Y, 1 - P)), rel=1e-6)
    with pytest.raises(ValueError, match="2 weights for 3 heads"):
        deep_supervision_loss(dice_loss, Y, heads, weights=[1, 1])


def test_registry():
    assert set(LOSSES) == {"dice", "bce", "bce_dice", "cross_entropy", "dice_ce", "mse"}
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        get_loss("hinge")
