"""Jitted train and evaluation steps, generic in the task: a ``prepare`` function turns a device
batch into (inputs, targets) (for pre-training: the restoration transforms, run on the device inside the step)
and a ``loss_fn(targets, outputs)`` of :mod:`genesis_jax.train.losses` scores one output; a list of heads (UNet++
deep supervision) is scored by :func:`~genesis_jax.train.losses.deep_supervision_loss` (their sum).

The train step takes and returns a replicated :class:`TrainState` with the batch sharded over the ``data`` mesh axis
(so BatchNorm statistics and the loss are over the global batch), donates the old state's buffers, and guards
against non-finite values: when the loss or the gradient norm is NaN/Inf the update is not applied and the step's
``finite`` metric is False, so the caller can stop with the last good state and checkpoint.

A task that owns trainable parameters besides the network's (``TrainState.task_params``, e.g. a pretext's learned
mask token) gets them as ``prepare``'s third argument, ``prepare(key, batch, task_params)``; the train step then
differentiates through ``prepare`` and updates them with the same optimiser (their own state,
``TrainState.task_opt_state``). Without task parameters ``prepare(key, batch)`` is called as before.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from genesis_jax.transforms.batching import shard_samples_over
from genesis_jax.train.losses import LossFn, deep_supervision_loss, mse_loss
from genesis_jax.train.mesh import replicated
from genesis_jax.train.state import TrainState

Batch = Mapping[str, jax.Array]
PrepareFn = Callable[[jax.Array, Batch], tuple[Any, Any]]


def prepared(prepare: PrepareFn, key: jax.Array, batch: Batch, task_params: Any) -> tuple[Any, Any]:
    """``prepare``'s (inputs, targets), given the task's own parameters when it has any."""
    return prepare(key, batch, task_params) if task_params else prepare(key, batch)


def inputs_targets(key: jax.Array, batch: Batch) -> tuple[Any, Any]:
    """The default ``prepare``: a batch that already holds 'inputs' and 'targets'."""
    del key
    return batch["inputs"], batch["targets"]


def _variables(params: Any, batch_stats: Any) -> dict[str, Any]:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _learning_rate(opt_state: Any) -> jax.Array:
    hyper = getattr(opt_state, "hyperparams", None)
    if hyper and "learning_rate" in hyper:
        return jnp.asarray(hyper["learning_rate"], jnp.float32)
    return jnp.asarray(jnp.nan, jnp.float32)


class RetraceError(RuntimeError):
    """A jitted step was traced again: some input changed shape, dtype, sharding or a static value."""


def _limit_traces(fn: Callable, max_traces: int) -> Callable:
    # chex.assert_max_traces counts per definition site across every step built there; this counts per step object.
    traces = 0

    @functools.wraps(fn)
    def counted(*args: Any) -> Any:
        nonlocal traces
        traces += 1
        if traces > max_traces:
            shapes = jax.tree.map(lambda x: (getattr(x, "shape", None), getattr(x, "dtype", None)), args[1])
            raise RetraceError(
                f"the train step was traced {traces} times (limit {max_traces}): an input changed shape, dtype or "
                f"sharding, which recompiles every time; batch now {shapes}"
            )
        return fn(*args)

    return counted


def make_train_step(
    loss_fn: LossFn = mse_loss,
    prepare: PrepareFn = inputs_targets,
    *,
    mesh: Mesh | None = None,
    apply_kwargs: Mapping[str, Any] | None = None,
    max_traces: int | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``train_step(state, batch) -> (state, metrics)``, jitted with the state donated.

    metrics: loss, grad_norm (over the network's and the task's parameters), param_norm (the network's),
    learning_rate, finite (False when the update was skipped).
    ``max_traces`` makes a retrace (a silent recompile) of THIS step function raise.
    """
    apply_kwargs = dict(apply_kwargs or {})

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        key, step_key = jax.random.split(state.key())
        prepare_key, dropout_key = jax.random.split(step_key)

        def loss_of(params: Any, task_params: Any) -> tuple[jax.Array, Any]:
            with shard_samples_over(mesh):  # each device transforms its own samples, with their own keys
                inputs, targets = prepared(prepare, prepare_key, batch, task_params)
            outputs, updates = state.apply_fn(
                _variables(params, state.batch_stats), inputs, train=True, mutable=["batch_stats"],
                rngs={"dropout": dropout_key}, **apply_kwargs,
            )
            return deep_supervision_loss(loss_fn, targets, outputs), updates.get("batch_stats", state.batch_stats)

        (loss, batch_stats), (grads, task_grads) = jax.value_and_grad(loss_of, argnums=(0, 1), has_aux=True)(
            state.params, state.task_params)
        grad_norm = optax.global_norm((grads, task_grads))
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        task_params, task_opt_state = state.task_params, state.task_opt_state
        if state.task_params:  # the same optimiser, its own state (their learning rate is set with the network's)
            task_updates, task_opt_state = state.tx.update(task_grads, state.task_opt_state, state.task_params)
            task_params = optax.apply_updates(state.task_params, task_updates)

        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def keep_good(new: Any, old: Any) -> Any:
            return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

        new_state = state.replace(
            step=state.step + 1,
            params=keep_good(params, state.params),
            batch_stats=keep_good(batch_stats, state.batch_stats),
            opt_state=keep_good(opt_state, state.opt_state),
            rng=jax.random.key_data(key),
            task_params=keep_good(task_params, state.task_params),
            task_opt_state=keep_good(task_opt_state, state.task_opt_state),
        )
        metrics = {
            "loss": loss.astype(jnp.float32),
            "grad_norm": grad_norm.astype(jnp.float32),
            "param_norm": optax.global_norm(new_state.params).astype(jnp.float32),
            "learning_rate": _learning_rate(state.opt_state),
            "finite": finite,
        }
        return new_state, metrics

    if max_traces is not None:
        step = _limit_traces(step, max_traces)
    out_shardings = None if mesh is None else (replicated(mesh), replicated(mesh))
    return jax.jit(step, donate_argnums=(0,), out_shardings=out_shardings)


def make_eval_step(
    loss_fn: LossFn = mse_loss,
    prepare: PrepareFn = inputs_targets,
    *,
    apply_kwargs: Mapping[str, Any] | None = None,
    metrics: Callable[[jax.Array, Any], Mapping[str, jax.Array]] | None = None,
) -> Callable[[TrainState, Batch, jax.Array], dict[str, jax.Array]]:
    """Build ``eval_step(state, batch, key) -> {'loss', 'inputs', 'predictions', 'targets', **metrics}``
    (inference mode; ``key`` drives ``prepare``, so a fixed key gives the same transformed validation batch every
    epoch). One compiled function serves validation and previews; a list of head outputs is averaged into
    'predictions'; ``metrics(predictions, targets)`` adds figures computed on the device (a quality gate's)."""
    apply_kwargs = dict(apply_kwargs or {})

    def step(state: TrainState, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
        inputs, targets = prepared(prepare, key, batch, state.task_params)
        outputs = state.apply_fn(state.variables, inputs, train=False, **apply_kwargs)
        predictions = sum(outputs) / len(outputs) if isinstance(outputs, (list, tuple)) else outputs
        loss = deep_supervision_loss(loss_fn, targets, outputs)
        extra = dict(metrics(predictions, targets)) if metrics is not None else {}
        return {"loss": loss.astype(jnp.float32), "inputs": inputs, "predictions": predictions,
                "targets": targets, **extra}

    return jax.jit(step)
