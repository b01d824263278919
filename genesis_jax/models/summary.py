"""A Keras-style per-layer summary of any network, computed with ``jax.eval_shape`` (nothing is run or allocated)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _count(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def abstract_variables(model: nn.Module, input_shape: Sequence[int], **call_kwargs: Any) -> Any:
    """Shapes and dtypes of ``model.init`` for a batch of ``input_shape``, without computing anything."""
    return _abstract_init(model, input_shape, **call_kwargs)[0]


def _abstract_init(model: nn.Module, input_shape: Sequence[int], **call_kwargs: Any) -> tuple[Any, list]:
    """``model.init`` under ``jax.eval_shape``, recording every module call (path, output shapes, output bytes) in
    call order."""
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    calls: list[list] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        entry = [tuple(context.module.path), None, 0]
        calls.append(entry)
        out = next_fun(*args, **kwargs)
        arrays = [o for o in jax.tree.leaves(out) if hasattr(o, "shape")]
        entry[1] = [tuple(o.shape) for o in arrays]
        entry[2] = sum(int(o.size) * jnp.dtype(o.dtype).itemsize for o in arrays)
        return out

    def init(inp):
        with nn.intercept_methods(record):
            return model.init(rngs, inp, **call_kwargs)

    return jax.eval_shape(init, x), calls


def summarize(model: nn.Module, input_shape: Sequence[int], **call_kwargs: Any) -> str:
    """Rows of (layer, output shape, trainable params), in call order, for every layer that owns parameters or has
    no sub-layers; then the non-trainable (``batch_stats``) count and, last, ``Total params: N`` (the trainable
    ``params`` collection, as Keras counts them)."""
    variables, calls = _abstract_init(model, input_shape, **call_kwargs)
    params = variables.get("params", {})
    stats = variables.get("batch_stats", {})

    def own_params(path: tuple[str, ...]) -> int:
        node: Any = params
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return 0
            node = node[key]
        return sum(int(v.size) for v in node.values() if not isinstance(v, dict)) if isinstance(node, dict) else 0

    has_children = _parents(calls)
    rows = []
    for path, shapes, _ in calls:
        if not path or (path in has_children and not own_params(path)):
            continue
        shape = shapes[0] if len(shapes) == 1 else shapes
        rows.append(("/".join(path), str(shape), own_params(path)))
    out_shapes = calls[0][1] if calls else []
    rows.append(("(output)", str(out_shapes[0] if len(out_shapes) == 1 else out_shapes), 0))
    name_w = max(len(r[0]) for r in rows) + 2
    shape_w = max(len(r[1]) for r in rows) + 2
    rule = name_w + shape_w + 12
    lines = [f'Model: "{type(model).__name__}"  input {tuple(input_shape)}', "=" * rule]
    lines.append(f"{'Layer':<{name_w}}{'Output shape':<{shape_w}}{'Param #':>12}")
    lines.append("-" * rule)
    lines += [f"{name:<{name_w}}{shape:<{shape_w}}{n:>12,}" for name, shape, n in rows]
    lines.append("=" * rule)
    lines.append(f"Non-trainable params (batch_stats): {_count(stats):,}")
    lines.append(f"Trainable params: {_count(params):,}")
    lines.append(f"Total params: {_count(params):,}")
    return "\n".join(lines)


def _parents(calls: list) -> set[tuple[str, ...]]:
    """Paths of the recorded modules that have recorded sub-modules."""
    paths = [call[0] for call in calls]
    return {p for p in paths for q in paths if len(q) > len(p) and q[: len(p)] == p}


def layer_output_bytes(model: nn.Module, input_shape: Sequence[int], **call_kwargs: Any) -> int:
    """Bytes of the outputs of every layer without sub-layers (convolutions, norms, ...) for a batch of
    ``input_shape``, in the compute dtype: roughly what a training step keeps for its backward pass (element-wise
    operations between layers and XLA's fusions are not modelled), via ``jax.eval_shape``."""
    _, calls = _abstract_init(model, input_shape, **call_kwargs)
    parents = _parents(calls)
    return sum(nbytes for path, _, nbytes in calls if path and path not in parents)


def count_params(model: nn.Module, input_shape: Sequence[int], **call_kwargs: Any) -> int:
    """Trainable parameter count (the ``params`` collection), via ``jax.eval_shape``."""
    return _count(abstract_variables(model, input_shape, **call_kwargs).get("params", {}))
