"""Building blocks shared by the networks: N-d convolutions, the two BatchNorm behaviours, pooling, up-sampling.

Everything here is channels-last and works for 2D (N, X, Y, C) and 3D (N, X, Y, Z, C) inputs alike; the number of
spatial dimensions is an attribute of each module so one definition serves both.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
BatchNormMode = Literal["batch", "standard"]
# Collection a 'standard' BatchNorm records its batch's {'mean', 'var'} in when it is mutable (precise BatchNorm).
MOMENTS_COLLECTION = "batch_moments"


class BatchNorm(nn.Module):
    """BatchNorm with an explicit choice of the published behaviours.

    mode='batch': always normalise with the current batch's statistics, in training and at inference. This is the
    published PyTorch ``ContBatchNorm3d`` (its forward passes ``training=True`` unconditionally), which the released
    ``Genesis_Chest_CT.pt`` weights expect. Running statistics are still tracked when the ``batch_stats``
    collection is mutable, and silently left alone otherwise, so ``model.apply(variables, x)`` needs no
    ``mutable=`` argument.

    mode='standard': Keras/Flax behaviour: batch statistics and running-average updates when ``train``,
    the running averages at inference. With the ``batch_moments`` collection mutable it normalises with the batch's
    statistics and records them there (also when not ``train``), for
    :func:`genesis_jax.train.precise_bn.recompute_batch_stats`.

    Statistics are reduced in float32 whatever the compute dtype; under ``jit`` with a batch-sharded global array
    the mean is taken over the global batch.
    """

    mode: BatchNormMode = "standard"
    momentum: float = 0.99
    epsilon: float = 1e-3
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))

        record = (self.mode == "standard" and self.is_mutable_collection(MOMENTS_COLLECTION)
                  and not self.is_initializing())
        use_batch_stats = self.mode == "batch" or train or record
        if use_batch_stats:
            axes = tuple(range(x.ndim - 1))
            x32 = x.astype(jnp.float32)
            mean = jnp.mean(x32, axis=axes)
            var = jnp.mean(jnp.square(x32 - mean), axis=axes)  # biased, as both frameworks normalise with
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
            if record:
                self.put_variable(MOMENTS_COLLECTION, "mean", mean)
                self.put_variable(MOMENTS_COLLECTION, "var", var)
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = scale.astype(jnp.float32) * jax.lax.rsqrt(var + self.epsilon)
        shift = bias.astype(jnp.float32) - mean * mul
        dtype = self.dtype or x.dtype
        return (x.astype(jnp.float32) * mul + shift).astype(dtype)


def max_pool(x: jax.Array, ndim: int) -> jax.Array:
    """2x max-pooling over every spatial axis."""
    window = (2,) * ndim
    return nn.max_pool(x, window, strides=window)


def upsample_nearest(x: jax.Array, ndim: int) -> jax.Array:
    """2x nearest-neighbour up-sampling (Keras ``UpSampling3D``): each voxel repeated along each spatial axis."""
    for axis in range(1, ndim + 1):
        x = jnp.repeat(x, 2, axis=axis)
    return x


def conv(features: int, ndim: int, kernel: int, name: str, dtype: Dtype | None, **kwargs: Any) -> nn.Conv:
    """An N-d 'same' convolution with bias and float32 parameters."""
    return nn.Conv(
        features,
        (kernel,) * ndim,
        padding="SAME",
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **kwargs,
    )


def conv_transpose_2x(features: int, ndim: int, name: str, dtype: Dtype | None, **kwargs: Any) -> nn.ConvTranspose:
    """Learned 2x up-sampling: kernel 2, stride 2 transposed convolution with bias."""
    return nn.ConvTranspose(
        features,
        (2,) * ndim,
        strides=(2,) * ndim,
        padding="VALID",
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **kwargs,
    )


def check_input(
    x: jax.Array, *, ndim: int, in_channels: int, divisor: int, model: str
) -> None:
    """Raise a ValueError naming the offending dimension when ``x`` cannot go through the network."""
    expected_rank = ndim + 2
    layout = "(N, X, Y, Z, C)" if ndim == 3 else "(N, X, Y, C)"
    if x.ndim != expected_rank:
        raise ValueError(
            f"{model}: expected a rank-{expected_rank} input {layout} for a {ndim}D network, "
            f"got rank {x.ndim} with shape {tuple(x.shape)}"
        )
    if x.shape[-1] != in_channels:
        raise ValueError(
            f"{model}: channel dimension (last axis) is {x.shape[-1]} but the network was built for "
            f"in_channels={in_channels}; input shape {tuple(x.shape)}"
        )
    names = "XYZ"
    for axis in range(ndim):
        size = x.shape[1 + axis]
        if size % divisor != 0 or size == 0:
            raise ValueError(
                f"{model}: spatial dimension {names[axis]} (axis {1 + axis}) has size {size}, which is not "
                f"divisible by {divisor} (the network pools {divisor.bit_length() - 1} times); "
                f"input shape {tuple(x.shape)}"
            )
