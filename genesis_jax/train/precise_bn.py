"""Precise BatchNorm: running averages replaced by the exact population statistics of the final weights.

A BatchNorm that normalises with running averages at inference (the ``keras`` Genesis U-Net, UNet++ with
``norm='batch'``: :class:`~genesis_jax.models.layers.BatchNorm` ``mode='standard'``) carries an exponential average
with momentum 0.99 of statistics computed with OLDER weights, still partly at its (0, 1) initialisation after a short
fine-tune; validation, test and exported weights then see statistics that do not belong to the weights. Here each
of N unlabelled batches goes through the network once with the final weights, every such layer normalising with
(and recording) its own batch's mean and variance, and the population statistics replace ``batch_stats``:

    mean = mean_b(m_b),    var = mean_b(v_b + m_b^2) - mean^2    (= mean_b(v_b) + mean_b((m_b - mean)^2))

the mean over batches weighted by their number of input voxels, so with equal batches a plain average of the per-batch
statistics; the variance is the population variance of all the activations, not an average of variances and not an
EMA. Layers that always normalise with batch statistics (``mode='batch'``: the ``pytorch`` variant, as the published
``ContBatchNorm3d``) record nothing, and then :func:`recompute_batch_stats` returns the variables unchanged: a no-op.

The forward runs with ``train=False`` plus the mutable ``batch_moments`` collection, which is what makes a
running-average layer use and record batch statistics (see the BatchNorm docstring): dropout stays off, as at
inference, and ``batch_stats`` is never updated on the way. One jitted forward per (model, apply options) serves
every call and every batch of the same shape; a batch of another leading size (any the model accepts) or shape
compiles once more.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import chex
import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from genesis_jax.models.layers import MOMENTS_COLLECTION
from genesis_jax.train.distributed import to_host

Variables = Mapping[str, Any]


def batch_moments(model: nn.Module, variables: Variables, inputs: jax.Array, **apply_kwargs: Any) -> dict:
    """Per-layer ``{'mean', 'var'}`` (float32, biased variance) of one batch for every running-average BatchNorm
    the forward reaches, in the layout of ``batch_stats``; ``{}`` when there is none. Traceable (jit, lax.map)."""
    _, moments = model.apply(variables, inputs, train=False, mutable=[MOMENTS_COLLECTION], **apply_kwargs)
    return dict(moments.get(MOMENTS_COLLECTION, {}))


def pool_moments(moments: Any, weights: Any = None, xp: Any = np) -> Any:
    """Population ``{'mean', 'var'}`` from per-batch moments stacked on a leading batch axis (a ``batch_moments``
    tree whose leaves have shape (B, C)); ``weights`` (B,) are the batches' sizes (default: equal). ``xp`` is
    ``numpy`` (host, float64 in, float64 out) or ``jax.numpy`` (inside a jitted function)."""

    def pool(layer: Mapping[str, Any]) -> dict[str, Any]:
        means, variances = layer["mean"], layer["var"]
        w = xp.ones(means.shape[:1], means.dtype) if weights is None else xp.asarray(weights, means.dtype)
        w = (w / xp.sum(w))[:, None]
        mean = xp.sum(w * means, axis=0)
        # mean_b(v_b + m_b^2) - mean^2, written without the cancellation of two large squares
        var = xp.sum(w * (variances + xp.square(means - mean)), axis=0)
        return {"mean": mean, "var": var}

    flat = traverse_util.flatten_dict(moments)
    layers = {path[:-1] for path in flat}
    pooled = {layer: pool({"mean": flat[(*layer, "mean")], "var": flat[(*layer, "var")]}) for layer in layers}
    return traverse_util.unflatten_dict({(*layer, k): v for layer, stats in pooled.items() for k, v in stats.items()})


def merge_batch_stats(batch_stats: Mapping[str, Any], stats: Mapping[str, Any]) -> dict[str, Any]:
    """``batch_stats`` with the layers in ``stats`` replaced (cast to the old leaves' dtypes), others kept.
    Traceable; :func:`with_batch_stats` is the host-side form."""
    old = traverse_util.flatten_dict(dict(batch_stats))
    new = dict(old)
    for path, value in traverse_util.flatten_dict(dict(stats)).items():
        if path not in old:
            raise KeyError(f"precise BatchNorm: layer {'/'.join(path)} has no running average in batch_stats")
        new[path] = value.astype(old[path].dtype)
    return traverse_util.unflatten_dict(new)


def with_batch_stats(variables: Variables, stats: Mapping[str, Any]) -> dict[str, Any]:
    """``variables`` with the layers in ``stats`` replaced, as :func:`merge_batch_stats`; each new leaf lands where
    the one it replaces was (a host array stays on the host, a device array keeps its sharding)."""
    old = dict(variables.get("batch_stats", {}))
    merged = merge_batch_stats(jax.tree.map(np.asarray, old), jax.tree.map(np.asarray, dict(stats)))
    placed = jax.tree.map(lambda new, ref: jax.device_put(new, ref.sharding) if isinstance(ref, jax.Array) else new,
                          merged, old)
    return {**variables, "batch_stats": placed}


@functools.lru_cache(maxsize=64)
def _compiled_moments(model: nn.Module, options: tuple[tuple[str, Any], ...], max_traces: int | None) -> Callable:
    """The one jitted forward for (model, apply options); cached so repeated calls reuse its compilations."""

    def moments(variables: Variables, inputs: jax.Array) -> dict:
        return batch_moments(model, variables, inputs, **dict(options))

    if max_traces is not None:
        moments = chex.assert_max_traces(moments, n=max_traces)
    return jax.jit(moments)


def _inputs(batch: Any, input_key: str) -> Any:
    return batch[input_key] if isinstance(batch, Mapping) else batch


def recompute_batch_stats(
    model: nn.Module,
    variables: Variables,
    batches: Iterable[Any],
    *,
    input_key: str = "image",
    prepare: Callable[[Any], Any] | None = None,
    max_traces: int | None = None,
    **apply_kwargs: Any,
) -> dict[str, Any]:
    """``variables`` with ``batch_stats`` replaced by the population statistics of ``batches`` under the current
    weights (module docstring); a no-op (the same variables back) for a network without running averages.

    batches: arrays (N, *spatial, C), or mappings whose ``input_key`` holds them (labels, if any, are never read);
      ``prepare`` maps that array to the network input (e.g. a 2D network's slice axis dropped). Any leading size
      the model accepts; batches may differ in size (they are weighted by it). Pass only unlabelled TRAINING data.
    apply_kwargs: static options of ``model.apply`` (e.g. ``output='bottleneck'``); ``max_traces`` makes the
      cached forward raise (chex) when traced more often, for tests.
    Raises a ValueError when ``batches`` is empty and the network has running averages to replace.
    """
    if not variables.get("batch_stats"):
        return dict(variables)
    forward = _compiled_moments(model, tuple(sorted(apply_kwargs.items())), max_traces)
    collected, sizes = [], []
    for batch in batches:
        x = _inputs(batch, input_key)
        x = prepare(x) if prepare is not None else x
        m = forward(variables, x)
        if not m:  # no layer uses running averages (e.g. the pytorch variant): nothing to recompute
            return dict(variables)
        collected.append(m)  # kept on the device: the loop dispatches every batch before the first read
        sizes.append(int(np.prod(x.shape[:-1])))
    if not collected:
        raise ValueError("precise BatchNorm: no batches to recompute the statistics from")
    host = [jax.tree.map(lambda a: to_host(a).astype(np.float64), m) for m in collected]
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *host)
    return with_batch_stats(variables, pool_moments(stacked, np.asarray(sizes, np.float64)))


def uses_running_averages(model: nn.Module, variables: Variables, example: jax.Array, **apply_kwargs: Any) -> bool:
    """Whether ``model`` (on inputs like ``example``) has a BatchNorm that normalises with running averages at
    inference, i.e. whether :func:`recompute_batch_stats` changes anything. Shape-only (no compute)."""
    if not variables.get("batch_stats"):
        return False
    shapes = jax.eval_shape(lambda v, x: batch_moments(model, v, x, **apply_kwargs), variables, example)
    return bool(shapes)


def configured_num_batches(config: Mapping[str, Any]) -> int:
    """``config.precise_bn.num_batches`` (0 = off; a config without the block is off too); raises a ValueError
    naming the field when it is negative."""
    block = config.get("precise_bn") or {}
    n = int(block.get("num_batches", 0) or 0)
    if n < 0:
        raise ValueError(f"config.precise_bn.num_batches must be >= 0 (0 = off), got {n}")
    return n


def recalibrate(
    model: nn.Module,
    variables: Variables,
    num_batches: int,
    make_inputs: Callable[[int], Iterable[Any]],
    input_shape: tuple[int, ...],
    **kwargs: Any,
) -> tuple[Variables, int]:
    """The training loops' entry point: (:func:`recompute_batch_stats` on ``make_inputs(num_batches)``, the number
    of batches used), or (``variables`` itself, 0) when ``num_batches`` is 0 or the network, on inputs of
    ``input_shape`` (without the batch axis), has no running averages; ``make_inputs`` is only called when needed.
    ``kwargs`` go to recompute_batch_stats."""
    apply_kwargs = {k: v for k, v in kwargs.items() if k not in ("input_key", "prepare", "max_traces")}
    example = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
    if num_batches == 0 or not uses_running_averages(model, variables, example, **apply_kwargs):
        return variables, 0
    return recompute_batch_stats(model, variables, make_inputs(num_batches), **kwargs), num_batches
