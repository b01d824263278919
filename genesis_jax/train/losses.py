"""The training losses on activated network outputs (probabilities), as the published Keras code defines them.

One convention for every loss here and every ``loss_fn`` the steps take (:mod:`genesis_jax.train.steps`):
``loss(y_true, y_pred) -> scalar``, the Keras order, ``y_pred`` the output of ONE head. A deep-supervised UNet++
returns a list of heads; the steps score it with :func:`deep_supervision_loss`, the one reduction (a sum).

* ``dice``: ``1 - dice_coef`` with smooth 1 over the whole batch tensor (published ``dice_coef_loss``; NCS, LCS, BMS).
* ``bce``: Keras binary cross-entropy: probabilities clipped to [eps, 1 - eps] (eps 1e-7), mean over every element
  (NCC, ECC).
* ``bce_dice``: the UNet++ / Models Genesis ``bce_dice_loss = 0.5 * BCE - dice_coef``. It is negative by
  construction (its minimum is -1); ``offset=1`` gives the non-negative form the author suggests.
* ``cross_entropy``: categorical cross-entropy for softmax heads (clipped the same way).
* ``dice_ce``: softmax multi-class segmentation: cross-entropy + 1 - mean foreground soft Dice (nnU-Net's loss).
* ``mse``: mean squared error.

:func:`deep_supervision_loss` sums a loss over the heads of a deep-supervised UNet++, each head against the same
full-resolution target with weight 1 (the published recipe, for fine-tuning and pre-training alike; no target
down-sampling); a single output is scored as it is.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from genesis_jax.evaluation.metrics import soft_dice

LossFn = Callable[[jax.Array, jax.Array], jax.Array]  # loss(y_true, y_pred) of one head
KERAS_EPSILON = 1e-7


def dice_loss(y_true: jax.Array, y_pred: jax.Array, smooth: float = 1.0) -> jax.Array:
    return 1.0 - soft_dice(y_true, y_pred, smooth)


def binary_cross_entropy(y_true: jax.Array, y_pred: jax.Array, eps: float = KERAS_EPSILON) -> jax.Array:
    y = jnp.asarray(y_true, jnp.float32)
    p = jnp.clip(jnp.asarray(y_pred, jnp.float32), eps, 1.0 - eps)
    return -jnp.mean(y * jnp.log(p) + (1.0 - y) * jnp.log(1.0 - p))


def bce_dice_loss(y_true: jax.Array, y_pred: jax.Array, offset: float = 0.0) -> jax.Array:
    return 0.5 * binary_cross_entropy(y_true, y_pred) - soft_dice(y_true, y_pred) + offset


def categorical_cross_entropy(y_true: jax.Array, y_pred: jax.Array, eps: float = KERAS_EPSILON) -> jax.Array:
    """``y_true`` one-hot (or integer class ids when it has one axis fewer than ``y_pred``), softmax ``y_pred``."""
    p = jnp.clip(jnp.asarray(y_pred, jnp.float32), eps, 1.0 - eps)
    if jnp.ndim(y_true) == jnp.ndim(y_pred) - 1:
        y_true = jax.nn.one_hot(y_true, y_pred.shape[-1])
    return -jnp.mean(jnp.sum(jnp.asarray(y_true, jnp.float32) * jnp.log(p), axis=-1))


def dice_ce_loss(y_true: jax.Array, y_pred: jax.Array, smooth: float = 1.0, eps: float = KERAS_EPSILON) -> jax.Array:
    """Softmax multi-class segmentation (nnU-Net's default): categorical cross-entropy plus ``1 -`` the mean soft
    Dice of the foreground classes, each over the whole batch. ``y_true`` holds class ids ((..., 1) or one axis
    fewer than ``y_pred``), ``y_pred`` the softmax probabilities (..., K)."""
    ids = jnp.asarray(y_true)
    ids = ids[..., 0] if ids.ndim == y_pred.ndim else ids
    one_hot = jax.nn.one_hot(jnp.rint(ids).astype(jnp.int32), y_pred.shape[-1], dtype=jnp.float32)
    p = jnp.asarray(y_pred, jnp.float32)
    axes = tuple(range(p.ndim - 1))
    dice = (2.0 * jnp.sum(one_hot * p, axes) + smooth) / (jnp.sum(one_hot, axes) + jnp.sum(p, axes) + smooth)
    return categorical_cross_entropy(one_hot, p, eps) + 1.0 - jnp.mean(dice[1:])


def mse_loss(y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(jnp.asarray(y_pred, jnp.float32) - jnp.asarray(y_true, jnp.float32)))


LOSSES: dict[str, LossFn] = {
    "dice": dice_loss,
    "bce": binary_cross_entropy,
    "bce_dice": bce_dice_loss,
    "cross_entropy": categorical_cross_entropy,
    "dice_ce": dice_ce_loss,
    "mse": mse_loss,
}


def get_loss(name: str) -> LossFn:
    """Look up a loss by name; a ValueError lists the choices for an unknown one."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None


def deep_supervision_loss(
    loss_fn: LossFn, y_true: jax.Array, y_pred: Any, weights: Sequence[float] | None = None
) -> jax.Array:
    """``loss_fn(y_true, y_pred)`` for one output; for a list of heads ``sum_i w_i * loss_fn(y_true, y_pred[i])``
    with ``w_i = 1`` by default (published: summed, not averaged)."""
    if not isinstance(y_pred, (list, tuple)):
        return loss_fn(y_true, y_pred)
    heads = y_pred
    if not heads:
        raise ValueError("deep_supervision_loss: no heads given")
    weights = [1.0] * len(heads) if weights is None else list(weights)
    if len(weights) != len(heads):
        raise ValueError(f"deep_supervision_loss: {len(weights)} weights for {len(heads)} heads")
    return sum(w * loss_fn(y_true, h) for w, h in zip(weights, heads))
