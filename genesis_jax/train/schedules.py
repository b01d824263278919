"""Optimizers and the epoch-level controls of the published recipes: learning-rate halving on a validation plateau
(Keras ``ReduceLROnPlateau``: factor 0.5, patience 10, min_delta 1e-4, min lr 1e-6), halving every 40 epochs
(PyTorch ``StepLR(40, 0.5)``), and early stopping (patience 50 on the validation loss).

The learning rate lives inside the optimizer state (``optax.inject_hyperparams``), so it is checkpointed with the
train state and can be changed between steps without recompiling. The controllers run on the host once per epoch
and keep their own small state as a JSON-able dict for the checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax


OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("plateau", "step", "constant")


def build_optimizer(
    name: str = "sgd",
    learning_rate: float = 1.0,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    then: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """'sgd' (published pre-training: lr 1.0, momentum 0.9, no weight decay) or 'adam' (published fine-tuning:
    1e-3). ``weight_decay`` is added to the gradient as PyTorch's SGD/Adam do (coupled L2). ``then`` is chained after
    the optimiser inside the learning-rate injection (fine-tuning: per-group update scaling), so the learning rate
    stays at ``opt_state.hyperparams``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be 'sgd' or 'adam', got {name!r}")

    def make(learning_rate: float) -> optax.GradientTransformation:
        if name == "sgd":
            opt = optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
        else:
            opt = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
        if weight_decay:
            opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
        return opt if then is None else optax.chain(opt, then)

    return optax.inject_hyperparams(make)(learning_rate=learning_rate)


def get_learning_rate(opt_state: Any) -> jax.Array:
    """The current learning rate held in an ``inject_hyperparams`` optimizer state."""
    return opt_state.hyperparams["learning_rate"]


def set_learning_rate(opt_state: Any, value: float) -> Any:
    """A copy of ``opt_state`` with a new learning rate, placed like the old one (so the step does not recompile)."""
    old = opt_state.hyperparams["learning_rate"]
    new = jax.device_put(jnp.asarray(value, old.dtype), old.sharding)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": new})


class PlateauHalving:
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without an improvement of more than
    ``min_delta`` in the monitored loss, never below ``min_lr`` (Keras ``ReduceLROnPlateau``, cooldown 0)."""

    def __init__(self, factor: float = 0.5, patience: int = 10, min_delta: float = 1e-4, min_lr: float = 1e-6):
        self.factor, self.patience, self.min_delta, self.min_lr = factor, patience, min_delta, min_lr
        self.best = math.inf
        self.wait = 0

    def __call__(self, epoch: int, value: float, lr: float) -> float:
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return lr
        self.wait += 1
        if self.wait >= self.patience and lr > self.min_lr:
            self.wait = 0
            return max(lr * self.factor, self.min_lr)
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])


class StepHalving:
    """lr = base * factor ** (epoch // every) (the published PyTorch ``StepLR(step_size=40, gamma=0.5)``)."""

    def __init__(self, base_lr: float, every: int = 40, factor: float = 0.5):
        self.base_lr, self.every, self.factor = base_lr, every, factor

    def __call__(self, epoch: int, value: float, lr: float) -> float:
        return self.base_lr * self.factor ** (epoch // self.every)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class ConstantRate:
    def __call__(self, epoch: int, value: float, lr: float) -> float:
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def build_lr_schedule(
    kind: str, base_lr: float, *, factor: float = 0.5, patience: int = 10, min_delta: float = 1e-4,
    min_lr: float = 1e-6, every_epochs: int = 40,
) -> PlateauHalving | StepHalving | ConstantRate:
    """'plateau' (paper/Keras), 'step' (PyTorch code) or 'constant'. Called once per epoch as
    ``new_lr = schedule(epoch_just_finished + 1, val_loss, lr)``."""
    if kind == "plateau":
        return PlateauHalving(factor, patience, min_delta, min_lr)
    if kind == "step":
        return StepHalving(base_lr, every_epochs, factor)
    if kind == "constant":
        return ConstantRate()
    raise ValueError(f"schedule.kind must be one of {SCHEDULES}, got {kind!r}")


class EarlyStopping:
    """Stop after ``patience`` epochs whose loss did not improve on the best by more than ``min_delta``
    (Keras ``EarlyStopping``; the published PyTorch loop is the same rule with min_delta 0)."""

    def __init__(self, patience: int = 50, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.best_epoch = -1
        self.wait = 0

    def __call__(self, epoch: int, value: float) -> bool:
        """Record one epoch's loss; True when training should stop."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return False
        self.wait += 1
        return bool(self.patience) and self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = float(state["best"]), int(state["best_epoch"]), int(state["wait"])
