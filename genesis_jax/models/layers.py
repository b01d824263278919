"""Building blocks shared by the networks: N-d convolutions (and the choice of their computed form), the two
BatchNorm behaviours, pooling, up-sampling (learned as a matmul + depth-to-space, or nearest).

Everything here is channels-last and works for 2D (N, X, Y, C) and 3D (N, X, Y, Z, C) inputs alike; the number of
spatial dimensions is an attribute of each module so one definition serves both.
"""

from __future__ import annotations

import functools
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


ConvImpl = Literal["auto", "native", "depth_taps"]
CONV_IMPLS: tuple[str, ...] = ("auto", "native", "depth_taps")


def resolve_conv_impl(
    impl: str, ndim: int, kernel: int, platform: str | None = None, in_channels: int | None = None
) -> str:
    """The one place where the form of a convolution is chosen: 'native' or 'depth_taps'.

    'native' is ``lax.conv_general_dilated`` as XLA lowers it; 'depth_taps' (3D, odd kernels) computes the same
    convolution as ONE 2D convolution over (Y, Z) whose input channels are the ``kernel`` shifted copies of the
    input along X (``depth_tap_conv``). With ``impl='auto'``: 'depth_taps' for 3D 3^3 convolutions on XLA:CPU,
    where it was faster at every layer shape of the Genesis U-Net measured (``experiments/bench_unet_layers.py``,
    figures in the README's performance section) except a single-channel input (``in_channels=1``, the image layer:
    XLA's convolution was 6x faster, 91 ms vs 598 ms fwd + kernel gradient for 1->32 at 64x64x32, batch 2);
    'native' everywhere else (GPU/TPU have tuned 3D convolution kernels; 1^n and 2D convolutions gain nothing).
    ``platform`` defaults to ``jax.default_backend()``; ``in_channels=None`` (not known yet) does not exclude taps.
    Inside a network, 'auto' is decided per lowering platform (``_auto_conv``), so a step exported on a CPU host
    for TPU or CUDA carries the native form.
    """
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {list(CONV_IMPLS)}, got {impl!r}")
    if ndim != 3 or kernel == 1 or kernel % 2 == 0:
        return "native"  # the tap form exists for odd 3D kernels; 1^n is a matmul either way
    if impl != "auto":
        return impl
    if in_channels == 1:
        return "native"
    return "depth_taps" if (platform or jax.default_backend()) == "cpu" else "native"


def depth_tap_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Any,
    padding: Any,
    lhs_dilation: Any = None,
    rhs_dilation: Any = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """A stride-1 'SAME' 3D convolution, channels-last (N, X, Y, Z, C) with a (k, k, k, I, O) kernel, computed as
    one 2D convolution: the k shifts of the input along X are stacked into the channels (k*C) and X joins the batch.

    Same signature as ``lax.conv_general_dilated`` so ``flax.linen.Conv(conv_general_dilated=...)`` can use it and
    the parameters keep their names and shapes; the arguments flax passes for a plain convolution are the only
    ones accepted. X is the leading spatial axis, so folding it into the batch needs no transpose.
    """
    k = rhs.shape[0]
    trivial = all(s == 1 for s in window_strides) and (padding == "SAME" or list(padding) == [(k // 2, k // 2)] * 3)
    trivial &= all(d == 1 for d in (lhs_dilation or (1,))) and all(d == 1 for d in (rhs_dilation or (1,)))
    if lhs.ndim != 5 or rhs.ndim != 5 or feature_group_count != 1 or not trivial or k % 2 == 0:
        raise ValueError(
            "depth_tap_conv: only stride-1 'SAME' 3D convolutions with odd kernels, channels-last, no groups; got "
            f"input {lhs.shape}, kernel {rhs.shape}, strides {window_strides}, padding {padding}"
        )
    n, size_x, size_y, size_z, channels = lhs.shape
    half = k // 2
    padded = jnp.pad(lhs, ((0, 0), (half, half), (0, 0), (0, 0), (0, 0)))
    stacked = jnp.concatenate([padded[:, t : t + size_x] for t in range(k)], axis=-1)  # channel = t * C + c
    stacked = stacked.reshape(n * size_x, size_y, size_z, k * channels)
    kernel_2d = jnp.moveaxis(rhs, 0, 2).reshape(rhs.shape[1], rhs.shape[2], k * channels, rhs.shape[-1])
    out = _conv2d_same(stacked, kernel_2d, precision, preferred_element_type)
    return out.reshape(n, size_x, size_y, size_z, rhs.shape[-1])


# Platforms a step is lowered for; 'auto' takes one form per platform (unlisted ones take the native form).
AUTO_PLATFORMS: tuple[str, ...] = ("cpu", "cuda", "rocm", "tpu")


def _auto_conv(lhs: jax.Array, rhs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
    """``conv_impl='auto'``: the form ``resolve_conv_impl`` picks for each platform the computation is LOWERED for
    (``lax.platform_dependent``), not for the host's default backend, so a step exported on a CPU host for TPU or
    CUDA holds XLA's convolution and the CPU's own lowering the depth-tap form. Only the chosen form is lowered."""
    def native(a: jax.Array, b: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(a, b, *args, **kwargs)

    def taps(a: jax.Array, b: jax.Array) -> jax.Array:
        return depth_tap_conv(a, b, *args, **kwargs)

    forms = {"native": native, "depth_taps": taps}
    chosen = {p: resolve_conv_impl("auto", 3, rhs.shape[0], platform=p, in_channels=lhs.shape[-1])
              for p in AUTO_PLATFORMS}
    if len(set(chosen.values())) == 1:
        return forms[next(iter(chosen.values()))](lhs, rhs)
    return jax.lax.platform_dependent(lhs, rhs, default=native,
                                      **{p: forms[c] for p, c in chosen.items() if c != "native"})


def _conv2d_same_xla(x: jax.Array, w: jax.Array, precision: Any, preferred_element_type: Any) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision,
        preferred_element_type=preferred_element_type,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d_same(x: jax.Array, w: jax.Array, precision: Any, preferred_element_type: Any) -> jax.Array:
    """A stride-1 'SAME' 2D convolution (NHWC, HWIO, odd kernel) whose kernel gradient is one matmul.

    XLA:CPU computes the kernel gradient of a convolution as a convolution over the batch and spatial extent; at
    the Genesis U-Net's largest layers (64x64x32, batch 2) the layer's whole fwd+bwd in the depth-tap form took
    about twice as long that way as with the kernel gradient as ``xp^T @ [g shifted by each tap]``
    (``_conv2d_same_bwd``; figures in the README's performance section). Slicing the input once per tap instead
    (kh*kw matmuls over copies of the wider operand) was slower than XLA's own. The input gradient reuses the same
    shifted cotangent: ``dx = crop([g shifted by each tap] @ w^T)``, one more matmul, where XLA's (a convolution with
    the flipped kernel) took about as long as the forward again at the widest layers."""
    return _conv2d_same_xla(x, w, precision, preferred_element_type)


def _conv2d_same_fwd(x, w, precision, preferred_element_type):
    return _conv2d_same_xla(x, w, precision, preferred_element_type), (x, w)


def _conv2d_same_bwd(precision, preferred_element_type, residuals, g):
    x, w = residuals
    n, size_h, size_w, c = x.shape
    kh, kw = w.shape[0], w.shape[1]
    ph, pw = kh // 2, kw // 2
    # 'SAME' (odd kernels): out[i, j] = sum_{a,b} x[i + a - ph, j + b - pw] w[a, b] (zero outside), so
    # dw[a, b] = sum_{n,i,j} x[n, i, j] g[n, i - a + ph, j - b + pw] and dx[n, i, j] = sum_{a,b} g[n, i - a + ph,
    # j - b + pw] w[a, b]^T. Both read the cotangent shifted by every tap; with all taps' shifts side by side
    # (M, kh*kw*C_out) each gradient is ONE matmul: dw = x^T @ shifted, dx = shifted @ w^T. M counts the voxels
    # only: no rows for padding (a tenth of the rows at 64x64x32, two fifths at 16x16x8).
    gp = jnp.pad(g, ((0, 0), (ph, ph), (pw, pw), (0, 0)))  # gp[i + ph] = g[i]
    shifted = jnp.concatenate(
        [gp[:, 2 * ph - a : 2 * ph - a + size_h, 2 * pw - b : 2 * pw - b + size_w] for a in range(kh)
         for b in range(kw)],
        axis=-1,
    ).reshape(n * size_h * size_w, -1)
    dw = jax.lax.dot_general(x.reshape(-1, c), shifted, (((0,), (0,)), ((), ())), precision=precision,
                             preferred_element_type=jnp.float32)  # (C_in, taps * C_out)
    dw = dw.reshape(c, kh, kw, -1).transpose(1, 2, 0, 3).astype(w.dtype)
    w_rows = jnp.transpose(w, (0, 1, 3, 2)).reshape(-1, c).astype(shifted.dtype)  # row (a, b, o) = w[a, b, :, o]
    dx = jax.lax.dot_general(shifted, w_rows, (((1,), (0,)), ((), ())), precision=precision,
                             preferred_element_type=jnp.float32)  # (M, C_in)
    return dx.reshape(x.shape).astype(x.dtype), dw


_conv2d_same.defvjp(_conv2d_same_fwd, _conv2d_same_bwd)


def conv(
    features: int, ndim: int, kernel: int, name: str, dtype: Dtype | None, impl: str = "auto", **kwargs: Any
) -> nn.Conv:
    """An N-d 'same' convolution with bias and float32 parameters, in the form ``resolve_conv_impl`` picks."""
    if impl == "auto":
        if resolve_conv_impl("native", ndim, kernel) != resolve_conv_impl("depth_taps", ndim, kernel):
            kwargs["conv_general_dilated"] = _auto_conv  # a tap form exists: chosen per lowering platform
    elif resolve_conv_impl(impl, ndim, kernel) == "depth_taps":
        kwargs["conv_general_dilated"] = depth_tap_conv
    return nn.Conv(
        features,
        (kernel,) * ndim,
        padding="SAME",
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
        **kwargs,
    )


def transpose_conv_2x(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides=(2,)*n, padding='VALID')`` (channels-last, ``transpose_kernel=False``,
    kernel (2,)*n + (I, O)) as one matmul and a depth-to-space reshape.

    With kernel 2 and stride 2 the output windows do not overlap: input voxel i writes the 2^n block at 2i, tap a
    of it being ``x[i] @ kernel[1 - a]`` (lax's transposed convolution correlates the dilated input with the
    unflipped kernel, so the taps come out reversed). XLA lowers ``conv_transpose`` as an input-dilated
    convolution instead: 20x slower on XLA:CPU (fwd+bwd, experiments/results/bench_step_cpu_forms.md), and reported
    slow in its gradient on GPU (jax #31662, openxla/xla #34273).
    """
    n = x.ndim - 2
    if kernel.shape[:n] != (2,) * n:
        raise ValueError(f"transpose_conv_2x: kernel must be {(2,) * n} spatially, got {kernel.shape}")
    return _transpose_conv_2x(x, kernel)


def _taps_last(kernel: jax.Array) -> jax.Array:
    """(2,)*n + (I, O) kernel -> (I, 2^n * O) matrix whose column (a, b, .., o) is tap (1-a, 1-b, ..) (the flip)."""
    n = kernel.ndim - 2
    flipped = kernel[(slice(None, None, -1),) * n]
    return jnp.moveaxis(flipped, n, 0).reshape(kernel.shape[n], -1)


def _block_order(n: int) -> tuple[int, ...]:
    """Axes of (N, X, a, Y, b, ..., O) in the order (N, X, Y, .., a, b, .., O): the depth-to-space transpose."""
    return (0, *range(1, 2 * n + 1, 2), *range(2, 2 * n + 1, 2), 2 * n + 1)


def _upsample_blocks(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The matmul (M, I) @ (I, 2^n * O) then the depth-to-space transpose. The backward is written out because XLA's
    own, from an einsum, computed the kernel gradient over a cotangent transposed to put the voxels last, fused
    with that cotangent's producers: the three up-samplings of the width-32 step at 64x64x32, batch 2 took 2.0 s
    (fwd + bwd, profile of one step, one core) that way and 0.9 s with ``_transpose_conv_2x_bwd``. (Alone, with
    the cotangent given, the einsum's gradient was as fast or faster: measure in the step.)"""
    n = x.ndim - 2
    size, features = x.shape[1:-1], kernel.shape[-1]
    blocks = jax.lax.dot_general(x, _taps_last(kernel), (((x.ndim - 1,), (0,)), ((), ())))
    blocks = blocks.reshape(x.shape[0], *size, *(2,) * n, features)  # (N, X, Y, .., a, b, .., O)
    inverse = tuple(sorted(range(2 * n + 2), key=_block_order(n).__getitem__))
    return blocks.transpose(inverse).reshape(x.shape[0], *(2 * s for s in size), features)


_transpose_conv_2x = jax.custom_vjp(_upsample_blocks)


def _transpose_conv_2x_fwd(x, kernel):
    return _upsample_blocks(x, kernel), (x, kernel)


def _transpose_conv_2x_bwd(residuals, g):
    x, kernel = residuals
    n = x.ndim - 2
    size, features = x.shape[1:-1], kernel.shape[-1]
    interleaved = g.reshape(x.shape[0], *(d for s in size for d in (s, 2)), features)  # (N, X, a, Y, b, .., O)
    blocks = interleaved.transpose(_block_order(n)).reshape(-1, 2**n * features)  # row = voxel, (a, b, .., o)
    rows = x.reshape(-1, x.shape[-1])
    taps = _taps_last(kernel).astype(blocks.dtype)
    # dx = blocks @ taps^T; dkernel = rows^T @ blocks: both contract over what is already contiguous
    dx = jax.lax.dot_general(blocks, taps, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    dtaps = jax.lax.dot_general(rows, blocks, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    dkernel = jnp.moveaxis(dtaps.reshape(x.shape[-1], *(2,) * n, features), 0, n)[(slice(None, None, -1),) * n]
    return dx.reshape(x.shape).astype(x.dtype), dkernel.astype(kernel.dtype)


_transpose_conv_2x.defvjp(_transpose_conv_2x_fwd, _transpose_conv_2x_bwd)


class UpConv2x(nn.Module):
    """Learned 2x up-sampling: a kernel-2, stride-2 transposed convolution with bias (PyTorch ``ConvTranspose3d(k=2,
    s=2)``), computed by ``transpose_conv_2x``. Its parameters are those of the ``flax.linen.ConvTranspose`` it
    replaces (``kernel`` (2,)*n + (I, O), ``bias`` (O,), created in that order), so checkpoints and the interop
    mapping are unchanged."""

    features: int
    ndim: int
    dtype: Dtype | None = None
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (2,) * self.ndim + (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return transpose_conv_2x(x, kernel) + bias


def conv_transpose_2x(features: int, ndim: int, name: str, dtype: Dtype | None, **kwargs: Any) -> UpConv2x:
    """Learned 2x up-sampling (``UpConv2x``) named ``name``."""
    return UpConv2x(features, ndim, dtype=dtype, name=name, **kwargs)


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
