"""The task-specific pieces of fine-tuning that plug into the generic steps of :mod:`genesis_jax.train.steps`:
``prepare`` (a data batch -> network inputs and targets), the loss on the network's outputs, the optimiser with
the transfer parameter groups, and an evaluation step that returns the loss and the prediction.

Losses (:mod:`genesis_jax.train.losses`, ``loss(y_true, y_pred)``) are computed on the activated outputs, as
published. A deep-supervised network (UNet++) is called with its spec's all-heads arguments and the loss is
:func:`~genesis_jax.train.losses.deep_supervision_loss`, the SUM over the heads, each against the same
full-resolution target (the published recipe); the prediction used for metrics is the network's own output
(mean of the heads in 'accurate' mode, the last head in 'fast' mode).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from genesis_jax.train.losses import LossFn, deep_supervision_loss
from genesis_jax.train.schedules import build_optimizer
from genesis_jax.train.state import TrainState
from genesis_jax.train.transfer import group_scaling


def make_prepare(task: str, ndim: int) -> Callable[[jax.Array, Mapping[str, jax.Array]], tuple[jax.Array, jax.Array]]:
    """``prepare(key, batch)``: float inputs; float targets (masks (B, *spatial, 1), or class labels (B, 1)). A 2D
    network reads patches of one slice, (B, X, Y, 1, C) -> (B, X, Y, C)."""

    def prepare(key: jax.Array, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        del key
        inputs = batch["image"].astype(jnp.float32)
        targets = batch["label"].astype(jnp.float32)
        if ndim == 2 and inputs.ndim == 5:
            inputs = inputs[:, :, :, 0]
            targets = targets[:, :, :, 0] if targets.ndim == 5 else targets
        if task == "classification":
            targets = targets.reshape(targets.shape[0], -1)
        return inputs, targets

    return prepare


def make_finetune_optimizer(
    optimizer: Mapping[str, Any], labels: Any, transferred_lr_scale: float
) -> optax.GradientTransformation:
    """The published optimiser (:func:`genesis_jax.train.schedules.build_optimizer`; its learning rate is a
    hyper-parameter the plateau schedule changes) followed by the transfer groups' scaling (frozen / lower lr)."""
    return build_optimizer(**dict(optimizer), then=group_scaling(labels, transferred_lr_scale))


def make_eval_step(
    loss_fn: LossFn,
    prepare: Callable,
    deep_supervision: Mapping[str, Any] | None,
    mode: str = "accurate",
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[jax.Array, jax.Array, jax.Array]]:
    """Jitted ``eval(state, batch) -> (loss, prediction, targets)`` in inference mode; ``deep_supervision``: the
    apply() arguments that return every head (the network spec's), or None."""

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        inputs, targets = prepare(None, batch)  # fine-tuning batches need no key
        outputs = state.apply_fn(state.variables, inputs, train=False, **dict(deep_supervision or {}))
        if deep_supervision is not None:
            prediction = sum(outputs) / len(outputs) if mode == "accurate" else outputs[-1]
        else:
            prediction = outputs
        return deep_supervision_loss(loss_fn, targets, outputs), prediction, targets

    return jax.jit(step)
