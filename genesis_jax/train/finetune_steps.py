"""The jitted pieces of fine-tuning: train state, optimiser with transfer parameter groups, train and eval steps.

The loss is computed on the activated outputs (as published). For a deep-supervised UNet++ the training and
validation losses are the sum over all heads against the same target; the prediction used for metrics is the
network's own output (the average of the heads in 'accurate' mode, or one head in 'fast' mode).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from genesis_jax.train.losses import deep_supervision_loss, get_loss
from genesis_jax.train.transfer import group_scaling


@flax.struct.dataclass
class FinetuneState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "batch_stats": self.batch_stats} if self.batch_stats else {"params": self.params}


def build_optimizer(
    name: str,
    learning_rate: float,
    labels: Any,
    transferred_lr_scale: float = 1.0,
    **kwargs: Any,
) -> optax.GradientTransformation:
    """'adam' (published fine-tuning: b1 0.9, b2 0.999, eps 1e-8) or 'sgd' (``momentum``), with the learning rate
    injected as a hyper-parameter (so a plateau schedule can lower it from the host without recompiling), followed by
    the per-group scaling of :func:`genesis_jax.train.transfer.group_scaling`."""
    makers: Mapping[str, Callable[..., optax.GradientTransformation]] = {"adam": optax.adam, "sgd": optax.sgd}
    if name not in makers:
        raise ValueError(f"optimizer.name must be one of {sorted(makers)}, got {name!r}")
    base = optax.inject_hyperparams(makers[name])(learning_rate=learning_rate, **kwargs)
    return optax.chain(base, group_scaling(labels, transferred_lr_scale))


def current_learning_rate(opt_state: Any) -> float:
    return float(opt_state[0].hyperparams["learning_rate"])


def with_learning_rate(opt_state: Any, learning_rate: float) -> Any:
    """The optimiser state with a new base learning rate (same dtype and shape: no recompilation)."""
    hyper = dict(opt_state[0].hyperparams)
    hyper["learning_rate"] = jnp.asarray(learning_rate, jnp.asarray(hyper["learning_rate"]).dtype)
    return (opt_state[0]._replace(hyperparams=hyper), *opt_state[1:])


def _heads(model: nn.Module, variables: Any, x: jax.Array, train: bool, deep_supervision: bool, rngs, mutable):
    kwargs = {"return_all_heads": True} if deep_supervision else {}
    return model.apply(variables, x, train=train, rngs=rngs, mutable=mutable, **kwargs)


def make_train_step(model: nn.Module, loss_name: str, tx: optax.GradientTransformation, deep_supervision: bool, seed: int):
    """A jitted ``step(state, x, y) -> (state, metrics)``; dropout keys derive from (seed, step)."""
    loss_fn = get_loss(loss_name)
    base_key = jax.random.key(seed)

    def step(state: FinetuneState, x: jax.Array, y: jax.Array):
        dropout_key = jax.random.fold_in(base_key, state.step)

        def objective(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            out, updates = _heads(model, variables, x, True, deep_supervision, {"dropout": dropout_key}, ["batch_stats"])
            heads = out if deep_supervision else [out]
            return deep_supervision_loss(loss_fn, y, heads), updates.get("batch_stats", state.batch_stats)

        (loss, batch_stats), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.global_norm(grads),
            "learning_rate": state.opt_state[0].hyperparams["learning_rate"],
        }
        return FinetuneState(state.step + 1, params, batch_stats, opt_state), metrics

    return jax.jit(step, donate_argnums=0)


def make_eval_step(model: nn.Module, loss_name: str, deep_supervision: bool):
    """A jitted ``eval(variables, x, y) -> (loss, prediction)`` in inference mode (loss summed over heads)."""
    loss_fn = get_loss(loss_name)

    def evaluate(variables: Any, x: jax.Array, y: jax.Array):
        out = _heads(model, variables, x, False, deep_supervision, None, False)
        heads = out if deep_supervision else [out]
        # the network's own output from the heads already computed: mean of the heads ('accurate') or the last
        prediction = (sum(heads) / len(heads) if getattr(model, "mode", "accurate") == "accurate" else heads[-1]) if deep_supervision else out
        return deep_supervision_loss(loss_fn, y, heads), prediction

    return jax.jit(evaluate)
