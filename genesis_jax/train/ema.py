"""Exponential moving average (EMA) of the parameters, kept in the optimiser state so checkpoints carry it.

``params_ema(decay)`` is an optax transformation placed LAST in the optimiser chain: it passes the updates through
unchanged and folds the parameters they produce into its average,

    ema_t = d_t * ema_{t-1} + (1 - d_t) * params_t,    d_t = min(decay, (1 + t) / (10 + t)),    ema_0 = params_0,

(t = 1, 2, ... the update count; the warm-up d_t is TensorFlow's ``ExponentialMovingAverage(num_updates=t)``, so a
short run is not dominated by its initial weights). Because the average lives in ``opt_state``, it is saved and
restored with the train state (a resumed run continues the same average bit for bit) and a step whose loss is not
finite leaves it untouched like the rest of the state.

:func:`evaluated_state` is what the training loop validates, keeps as ``best/`` and exports to ``weights/``: the
state with the averaged parameters in place of the trained ones when an EMA is present; :func:`describe` says which,
for the run's summary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ParamsEMAState(NamedTuple):
    count: jax.Array  # int32: updates folded in
    decay: jax.Array  # float32: the configured decay (so a state says what it holds)
    ema: Any  # the averaged parameters, same tree and dtypes as the parameters


def params_ema(decay: float) -> optax.GradientTransformation:
    """Track an EMA of the parameters (see the module docstring); ``decay`` in (0, 1). Needs ``params`` in update."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) (0 turns the average off), got {decay!r}")

    def init(params: Any) -> ParamsEMAState:
        return ParamsEMAState(jnp.zeros((), jnp.int32), jnp.asarray(decay, jnp.float32),
                              jax.tree.map(jnp.array, params))

    def update(updates: Any, state: ParamsEMAState, params: Any = None) -> tuple[Any, ParamsEMAState]:
        if params is None:
            raise ValueError("params_ema needs the parameters: call tx.update(grads, opt_state, params)")
        new_params = optax.apply_updates(params, updates)
        count = state.count + 1
        t = count.astype(jnp.float32)
        d = jnp.minimum(state.decay, (1.0 + t) / (10.0 + t))
        ema = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), state.ema, new_params)
        return updates, ParamsEMAState(count, state.decay, ema)

    return optax.GradientTransformation(init, update)


def find_ema(opt_state: Any) -> ParamsEMAState | None:
    """The EMA state inside an optimiser state (any nesting of chains and injections), or None."""
    is_ema = lambda x: isinstance(x, ParamsEMAState)  # noqa: E731
    found = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_ema) if is_ema(x)]
    return found[0] if found else None


def evaluated_state(state: Any) -> Any:
    """``state`` (a TrainState) with the averaged parameters when its optimiser keeps an EMA, else itself (the
    task's own parameters, when it has any, likewise: their optimiser state keeps their average)."""
    found = find_ema(state.opt_state)
    if found is None:
        return state
    task_found = find_ema(state.task_opt_state) if state.task_params else None
    return state.replace(params=found.ema, **({} if task_found is None else {"task_params": task_found.ema}))


def describe(state: Any) -> dict[str, Any]:
    """Which parameters :func:`evaluated_state` gives, for summaries: {'parameters': 'trained'} or the EMA's decay."""
    found = find_ema(state.opt_state)
    if found is None:
        return {"parameters": "trained"}
    return {"parameters": "exponential moving average", "ema_decay": round(float(jax.device_get(found.decay)), 6),
            "ema_updates": int(jax.device_get(found.count))}
