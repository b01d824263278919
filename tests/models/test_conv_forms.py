"""The computed forms of the networks' convolutions agree with XLA's own: the 2x up-sampling as matmul +
depth-to-space against ``lax.conv_transpose`` (the flax ``ConvTranspose`` it replaced), and the depth-tap 3D
convolution against ``lax.conv``, in outputs and gradients; the choice rule of ``conv_impl``."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.models import GenesisUNet, UNetPlusPlus
from genesis_jax.models.layers import (
    UpConv2x, _auto_conv, _conv2d_same, depth_tap_conv, resolve_conv_impl, transpose_conv_2x,
)

HIGHEST = functools.partial(jax.default_matmul_precision, "highest")


def _lax_transpose(x, kernel):
    n = x.ndim - 2
    spec = ("NXYC", "XYIO", "NXYC") if n == 2 else ("NXYZC", "XYZIO", "NXYZC")
    return jax.lax.conv_transpose(x, kernel, (2,) * n, "VALID", dimension_numbers=spec)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 3, 2, 4, 3)])
def test_transpose_conv_2x_equals_lax_conv_transpose_forward_and_gradient(shape):
    n = len(shape) - 2
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    kernel = jax.random.normal(kk, (2,) * n + (shape[-1], 5))
    cotangent = jax.random.normal(kg, (shape[0], *(2 * s for s in shape[1:-1]), 5))
    with HIGHEST():
        ours = jax.jit(transpose_conv_2x)(x, kernel)
        ref = jax.jit(_lax_transpose)(x, kernel)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
        grads = [jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) * cotangent), (0, 1)))(x, kernel)
                 for f in (transpose_conv_2x, _lax_transpose)]
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_upconv_has_the_flax_conv_transpose_parameters_and_outputs(dtype):
    x = jax.random.normal(jax.random.key(1), (1, 2, 3, 2, 4))
    old = nn.ConvTranspose(6, (2, 2, 2), strides=(2, 2, 2), padding="VALID", dtype=dtype)
    new = UpConv2x(6, 3, dtype=dtype, kernel_init=old.kernel_init)
    v_old, v_new = old.init(jax.random.key(2), x), new.init(jax.random.key(2), x)
    assert jax.tree.map(jnp.shape, v_old) == jax.tree.map(jnp.shape, v_new)
    jax.tree.map(np.testing.assert_array_equal, v_old, v_new)  # same names, shapes and initial values
    v = jax.tree.map(lambda p: p + 0.1, v_old)  # a non-zero bias
    with HIGHEST():
        got, want = new.apply(v, x), old.apply(v, x)
    assert got.dtype == want.dtype
    tol = 1e-5 if dtype is None else 3e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)


@pytest.mark.parametrize("k, size_x", [(3, 5), (5, 6), (5, 2)])
def test_depth_tap_conv_equals_lax_conv_forward_and_gradient(k, size_x):
    # every X shift of the stacked taps (kernel 5; a volume thinner than the kernel) against XLA's 3D convolution
    kx, kk, kg = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, (2, size_x, 4, 3, 3))
    kernel = jax.random.normal(kk, (k, k, k, 3, 4))
    cotangent = jax.random.normal(kg, (2, size_x, 4, 3, 4))
    spec = ("NXYZC", "XYZIO", "NXYZC")
    native = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1, 1), padding="SAME",
                               dimension_numbers=spec)
    taps = functools.partial(depth_tap_conv, window_strides=(1, 1, 1), padding="SAME")
    with HIGHEST():
        np.testing.assert_allclose(jax.jit(taps)(x, kernel), jax.jit(native)(x, kernel), rtol=1e-5, atol=1e-5)
        grads = [jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) * cotangent), (0, 1)))(x, kernel)
                 for f in (taps, native)]
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="stride-1 'SAME'"):
        depth_tap_conv(x, kernel, (2, 2, 2), "SAME")


@pytest.mark.parametrize("kernel_shape", [(3, 3), (5, 3), (1, 5)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matmul_gradients_equal_lax_conv(kernel_shape, dtype):
    # the 2D convolution inside the depth-tap form, whose two gradients are our matmuls: every tap's offset
    # (non-square and 1-wide kernels, odd sizes) and both gradients against XLA's, also in bfloat16
    kx, kk, kg = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(kx, (3, 6, 5, 4), dtype)
    kernel = jax.random.normal(kk, (*kernel_shape, 4, 7), dtype)
    cotangent = jax.random.normal(kg, (3, 6, 5, 7), dtype)

    def native(a, b, p, t):
        return jax.lax.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=p, preferred_element_type=t)

    tol = 1e-5 if dtype == jnp.float32 else 5e-2
    with HIGHEST():
        results = [jax.jit(jax.value_and_grad(lambda a, b, f=f: jnp.sum((f(a, b, None, None) * cotangent)
                                                                        .astype(jnp.float32)), (0, 1)))(x, kernel)
                   for f in (_conv2d_same, native)]
    (v_ours, g_ours), (v_ref, g_ref) = results
    np.testing.assert_allclose(v_ours, v_ref, rtol=tol)
    for got, want in zip(g_ours, g_ref):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = float(jnp.max(jnp.abs(want.astype(jnp.float32))))
        np.testing.assert_allclose(np.asarray(got, np.float32) / scale, np.asarray(want, np.float32) / scale,
                                   atol=tol)


@pytest.mark.parametrize(
    "model",
    [GenesisUNet(variant="pytorch", base_width=2, depth=2), UNetPlusPlus(ndim=3, base_width=2, depth=2, dropout=0.0)],
    ids=["unet", "unetpp"],
)
def test_every_conv_impl_gives_the_same_outputs_and_gradients(model):
    x = jax.random.uniform(jax.random.key(4), (2, 8, 4, 4, 1))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    results = {}
    for impl in ("native", "depth_taps", "auto"):
        m = model.clone(conv_impl=impl)
        # the loss of a training step: BatchNorm in training mode, gradient through every layer
        def loss(p, m=m):
            return jnp.mean(m.apply({**variables, "params": p}, x, train=True, mutable=["batch_stats"])[0])

        with HIGHEST():
            results[impl] = jax.jit(jax.value_and_grad(loss))(variables["params"])
    l_native, g_native = results["native"]
    for impl in ("depth_taps", "auto"):
        l_form, g_form = results[impl]
        np.testing.assert_allclose(l_form, l_native, rtol=1e-5)
        assert jax.tree.structure(g_form) == jax.tree.structure(g_native)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), g_form, g_native)


def test_auto_on_cpu_keeps_xla_convolution_for_the_single_channel_image_layer():
    def convolution_ranks(channels):
        x, w = jnp.zeros((1, 4, 4, 4, channels)), jnp.zeros((3, 3, 3, channels, 2))
        hlo = jax.jit(lambda a, b: _auto_conv(a, b, (1, 1, 1), "SAME",
                                              dimension_numbers=("NXYZC", "XYZIO", "NXYZC"))).lower(x, w)
        lines = [ln for ln in hlo.as_text().splitlines() if "stablehlo.convolution" in ln]
        # the input operand's rank: "(tensor<1x4x4x4x1xf32>, ..." has 5 dimensions
        return [re.search(r":\s*\(tensor<((?:\d+x)+)f32>", ln).group(1).count("x") for ln in lines]

    assert convolution_ranks(1) == [5]  # XLA's 3D convolution
    assert convolution_ranks(2) == [4]  # the depth-tap form: one 2D convolution


def test_conv_impl_rule():
    assert resolve_conv_impl("auto", 3, 3, platform="cpu") == "depth_taps"
    assert resolve_conv_impl("auto", 3, 3, platform="gpu") == "native"
    assert resolve_conv_impl("auto", 3, 3, platform="tpu") == "native"
    assert resolve_conv_impl("depth_taps", 2, 3, platform="cpu") == "native"  # no tap form in 2D
    assert resolve_conv_impl("depth_taps", 3, 1, platform="gpu") == "native"  # 1^3 heads stay matmuls
    assert resolve_conv_impl("depth_taps", 3, 3, platform="gpu") == "depth_taps"  # an explicit choice wins
    assert resolve_conv_impl("auto", 3, 3, platform="cpu", in_channels=1) == "native"  # the image layer
    assert resolve_conv_impl("depth_taps", 3, 3, platform="cpu", in_channels=1) == "depth_taps"
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        resolve_conv_impl("fast", 3, 3)
