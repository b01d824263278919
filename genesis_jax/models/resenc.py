"""nnU-Net's U-Nets (``dynamic_network_architectures``' ``ResidualEncoderUNet`` and ``PlainConvUNet``) in 2D and 3D.

Both follow nnU-Net's plans: ``features_per_stage``, per-stage ``kernel_sizes`` and ``strides`` (stage 0 usually
stride 1; a stride may differ per axis), ``n_blocks_per_stage`` (residual) or ``n_conv_per_stage`` (plain), and
``n_conv_per_stage_decoder``; every convolution is conv (+bias) -> instance norm (affine, eps 1e-5) -> leaky ReLU
(slope 0.01), padded by ``(k - 1) // 2`` on both sides as PyTorch pads (not XLA's 'SAME', which pads a strided
convolution on one side only).

Residual encoder: a stem (one conv block, stride 1), then per stage ResNet-D ``BasicBlockD``s: conv block ->
conv + norm, added to the skip (average pooling by the stride, then a bias-free 1^n conv + norm when the width
changes), then leaky ReLU. Plain encoder: per stage ``n_conv_per_stage`` conv blocks, the first strided.
Decoder (both): per level a transposed convolution with kernel = stride (non-overlapping), concatenation
``[up-sampled, skip]``, ``n_conv_per_stage_decoder`` conv blocks, and a 1^n segmentation conv. nnU-Net builds a
segmentation conv for every decoder level whether or not deep supervision is on; so do these modules (the parameter
count equals the PyTorch network's); with ``deep_supervision=False`` only the full-resolution one is returned.

Layout: channels-last, spatial axes in the PyTorch order (N, X, Y, Z, C) for nnU-Net's (N, C, X, Y, Z).
Parameter tree (stable names used by ``genesis_jax.interop.nnunet``; ``encoder_*`` is the encoder, ``head*`` the
segmentation convs, as transfer learning expects):
``encoder_stem/{conv_0,norm_0}`` (residual only), ``encoder_{s}/block_{b}_{conv1,norm1,conv2,norm2,skip_conv,
skip_norm}`` (residual) or ``encoder_{s}/{conv_i,norm_i}`` (plain), ``decoder_{level}/{up,conv_i,norm_i}`` (level 0 =
full resolution), ``head`` (level 0) and ``head_{level}`` (deep-supervision levels >= 1).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genesis_jax.models.initializers import kernel_initializer
from genesis_jax.models.layers import check_input, conv, transpose_conv_2x
from genesis_jax.models.spec import NetworkSpec
from genesis_jax.models.unet import apply_activation

NNUNET_KERNEL_INIT = "nnunet"  # InitWeights_He(1e-2): kaiming_normal_(a=0.01), zero biases


def per_axis(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    """A kernel size or stride as one int per spatial axis."""
    if isinstance(value, int):
        return (value,) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"expected {ndim} values (one per spatial axis), got {value}")
    return value


class InstanceNorm(nn.Module):
    """PyTorch ``InstanceNorm{2,3}d(affine=True)``: each sample and channel normalised over its spatial extent with the
    biased variance; statistics in float32 whatever the compute dtype. No running statistics (nnU-Net keeps none)."""

    epsilon: float = 1e-5
    dtype: Any = None
    zero_init: bool = False  # scale starts at 0 (nnU-Net's init_last_bn_before_add_to_0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale_init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
        scale = self.param("scale", scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        axes = tuple(range(1, x.ndim - 1))
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=axes, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(self.dtype or x.dtype)


def _transpose_kernel_init(name: str) -> Any:
    """The transposed convolution's initialiser: PyTorch computes the fan-in of a (I, O, *k) weight from O * prod(k),
    so the He variant scales by the output width (flax's (*k, I, O) kernel: in_axis=-1)."""
    if name == NNUNET_KERNEL_INIT:
        return nn.initializers.variance_scaling(2.0 / (1 + 0.01**2), "fan_in", "normal", in_axis=-1, out_axis=-2)
    return kernel_initializer(name)


class StridedUpConv(nn.Module):
    """PyTorch ``ConvTranspose{2,3}d(kernel_size=stride, stride=stride)``: each input voxel writes its own
    ``prod(stride)`` block. The kernel is (*stride, I, O) in ``lax.conv_transpose``'s orientation (the PyTorch taps
    spatially flipped, as ``genesis_jax.models.layers.UpConv2x`` stores them); a stride of 2 on every axis uses that
    layer's matmul with its hand-written backward."""

    features: int
    stride: tuple[int, ...]
    use_bias: bool = True
    dtype: Any = None
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = len(self.stride)
        kernel = self.param("kernel", self.kernel_init, (*self.stride, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32) if self.use_bias else None
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        if self.stride == (2,) * n:
            y = transpose_conv_2x(x, kernel)
        else:
            taps = jnp.moveaxis(kernel[(slice(None, None, -1),) * n], n, 0).reshape(x.shape[-1], -1)
            blocks = jax.lax.dot_general(x, taps, (((x.ndim - 1,), (0,)), ((), ())))
            size = x.shape[1:-1]
            blocks = blocks.reshape(x.shape[0], *size, *self.stride, self.features)  # (N, X, Y, .., a, b, .., O)
            order = (0, *(i for axis in range(n) for i in (1 + axis, 1 + n + axis)), 2 * n + 1)
            y = blocks.transpose(order).reshape(x.shape[0], *(s * k for s, k in zip(size, self.stride)), self.features)
        return y if bias is None else y + bias.astype(y.dtype)


class _ConvFactory:
    """The convolutions of one network: PyTorch's symmetric padding, its kernel initialiser and compute form."""

    def __init__(self, ndim: int, kernel_init: str, dtype: Any, conv_impl: str):
        self.ndim, self.init, self.dtype, self.conv_impl = ndim, kernel_initializer(kernel_init), dtype, conv_impl

    def __call__(self, features: int, kernel: tuple[int, ...], stride: tuple[int, ...], use_bias: bool,
                 name: str) -> nn.Module:
        if stride == (1,) * self.ndim and len(set(kernel)) == 1 and kernel[0] % 2 == 1:
            # stride 1, odd cube: 'SAME' pads symmetrically, and the CPU fast form of genesis_jax.models.layers applies
            return conv(features, self.ndim, kernel[0], name, self.dtype, self.conv_impl, kernel_init=self.init,
                        use_bias=use_bias)
        return nn.Conv(features, kernel, strides=stride, padding=[((k - 1) // 2, (k - 1) // 2) for k in kernel],
                       use_bias=use_bias, dtype=self.dtype, param_dtype=jnp.float32, kernel_init=self.init, name=name)


def _norm_act(x: jax.Array, norm: InstanceNorm, slope: float) -> jax.Array:
    return nn.leaky_relu(norm(x), slope)


class _Stage(nn.Module):
    """What every stage shares: ``count`` blocks of width ``features``, the first with ``stride``."""

    features: int
    count: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    conv_bias: bool
    norm_epsilon: float
    slope: float
    convs: Any  # _ConvFactory
    dtype: Any = None


class ResidualStage(_Stage):
    """One encoder stage of ``ResidualEncoder``: ``count`` ResNet-D basic blocks."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ones = (1,) * len(self.stride)
        for b in range(self.count):
            stride = self.stride if b == 0 else ones
            block = f"block_{b}"
            residual = x
            if stride != ones:
                residual = nn.avg_pool(residual, stride, strides=stride)
            if x.shape[-1] != self.features:
                residual = self.convs(self.features, ones, ones, False, f"{block}_skip_conv")(residual)
                residual = InstanceNorm(self.norm_epsilon, self.dtype, name=f"{block}_skip_norm")(residual)
            y = self.convs(self.features, self.kernel, stride, self.conv_bias, f"{block}_conv1")(x)
            y = _norm_act(y, InstanceNorm(self.norm_epsilon, self.dtype, name=f"{block}_norm1"), self.slope)
            y = self.convs(self.features, self.kernel, ones, self.conv_bias, f"{block}_conv2")(y)
            # nnU-Net's init_last_bn_before_add_to_0: each block starts as its skip path
            y = InstanceNorm(self.norm_epsilon, self.dtype, zero_init=True, name=f"{block}_norm2")(y)
            x = nn.leaky_relu(y + residual.astype(y.dtype), self.slope)
        return x


class ConvStage(_Stage):
    """``StackedConvBlocks``: ``count`` conv -> norm -> leaky ReLU blocks. As a decoder level (``up_stride`` given)
    it first up-samples its input (``up``) and concatenates ``[up-sampled, skip]``."""

    up_stride: tuple[int, ...] | None = None
    up_init: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array | None = None) -> jax.Array:
        ones = (1,) * len(self.stride)
        if self.up_stride is not None:
            x = StridedUpConv(self.features, self.up_stride, self.conv_bias, self.dtype, self.up_init, name="up")(x)
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        for i in range(self.count):
            x = self.convs(self.features, self.kernel, self.stride if i == 0 else ones, self.conv_bias, f"conv_{i}")(x)
            x = _norm_act(x, InstanceNorm(self.norm_epsilon, self.dtype, name=f"norm_{i}"), self.slope)
        return x


class DynamicUNet(nn.Module):
    """nnU-Net's encoder-decoder (see the module docstring); ``ResidualEncoderUNet`` and ``PlainConvUNet`` pick the
    encoder. ``apply(variables, x)`` returns the segmentation logits (N, *spatial, num_classes) or, with
    ``deep_supervision``, a list of them from full resolution down (nnU-Net's order).

    Attributes (nnU-Net's ``arch_kwargs`` names):
      ndim: 2 or 3.  in_channels, num_classes: input channels and segmentation outputs.
      features_per_stage, kernel_sizes, strides: one entry per stage (an int or one value per axis).
      n_blocks_per_stage: residual blocks (ResEnc) or conv blocks (plain) per stage.
      n_conv_per_stage_decoder: conv blocks per decoder level (n_stages - 1 entries).
      conv_bias: bias on the 3^n and transposed convolutions (nnU-Net's plans: True).
      norm_epsilon, negative_slope: instance norm eps (1e-5) and leaky ReLU slope (0.01).
      deep_supervision: return every level's segmentation.
      head_activation: None (logits, as nnU-Net), 'sigmoid' or 'softmax'.
      kernel_init: 'nnunet' (He normal, a=0.01, as nnU-Net) or a name of ``genesis_jax.models.initializers``.
      dtype: compute dtype (parameters stay float32). conv_impl: see ``genesis_jax.models.layers.resolve_conv_impl``.
    """

    ndim: int = 3
    in_channels: int = 1
    num_classes: int = 1
    features_per_stage: tuple[int, ...] = (32, 64, 128, 256, 320, 320)
    kernel_sizes: Any = 3
    strides: Any = (1, 2, 2, 2, 2, 2)
    n_blocks_per_stage: tuple[int, ...] = (1, 3, 4, 6, 6, 6)
    n_conv_per_stage_decoder: tuple[int, ...] = (1, 1, 1, 1, 1)
    conv_bias: bool = True
    norm_epsilon: float = 1e-5
    negative_slope: float = 0.01
    deep_supervision: bool = False
    head_activation: str | None = None
    kernel_init: str | None = None
    dtype: Any = None
    conv_impl: str = "auto"

    residual_encoder = True

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def _per_stage(self, value: Any) -> list[tuple[int, ...]]:
        """One value per stage (a single int applies to all), each as one int per axis."""
        values = value if isinstance(value, (list, tuple)) else [value] * self.n_stages
        return [per_axis(v, self.ndim) for v in values]

    def stage_kernels(self) -> list[tuple[int, ...]]:
        return self._per_stage(self.kernel_sizes)

    def stage_strides(self) -> list[tuple[int, ...]]:
        return self._per_stage(self.strides)

    @property
    def input_divisor(self) -> tuple[int, ...]:
        """What each spatial size must be divisible by: the product of the strides along that axis."""
        return tuple(math.prod(s[axis] for s in self.stage_strides()) for axis in range(self.ndim))

    @property
    def smallest_input(self) -> tuple[int, ...]:
        """The smallest spatial input the network accepts: twice the strides' product along each axis (one voxel at
        the bottleneck would leave its instance normalisation nothing to normalise)."""
        return tuple(2 * d for d in self.input_divisor)

    def _check(self, x: jax.Array) -> None:
        n = self.n_stages
        for name, value in (("kernel_sizes", self.stage_kernels()), ("strides", self.stage_strides()),
                            ("n_blocks_per_stage", self.n_blocks_per_stage)):
            if len(value) != n:
                raise ValueError(f"{type(self).__name__}: {name} has {len(value)} entries for {n} stages")
        if len(self.n_conv_per_stage_decoder) != n - 1:
            raise ValueError(f"{type(self).__name__}: n_conv_per_stage_decoder has "
                             f"{len(self.n_conv_per_stage_decoder)} entries; {n} stages need {n - 1}")
        check_input(x, ndim=self.ndim, in_channels=self.in_channels, divisor=1, model=type(self).__name__)
        for axis, (size, divisor) in enumerate(zip(x.shape[1:-1], self.input_divisor)):
            if size % divisor:
                raise ValueError(f"{type(self).__name__}: spatial dimension {'XYZ'[axis]} (axis {axis + 1}) has size "
                                 f"{size}, not divisible by {divisor} (the product of the strides along it); "
                                 f"input shape {tuple(x.shape)}")
        bottleneck = [size // divisor for size, divisor in zip(x.shape[1:-1], self.input_divisor)]
        if math.prod(bottleneck) == 1:  # instance norm over one voxel outputs its bias: the input is lost
            raise ValueError(f"{type(self).__name__}: input shape {tuple(x.shape)} leaves a "
                             f"{'x'.join(map(str, bottleneck))} bottleneck, where instance normalisation outputs only "
                             "its bias (PyTorch refuses it); use a larger patch or fewer stages")

    def _encoder(self, x: jax.Array, convs: _ConvFactory) -> list[jax.Array]:
        kernels, strides, skips = self.stage_kernels(), self.stage_strides(), []
        ones = (1,) * self.ndim
        common = dict(conv_bias=self.conv_bias, norm_epsilon=self.norm_epsilon, slope=self.negative_slope,
                      convs=convs, dtype=self.dtype)
        if self.residual_encoder:
            x = ConvStage(self.features_per_stage[0], 1, kernels[0], ones, name="encoder_stem", **common)(x)
        for s in range(self.n_stages):
            stage = ResidualStage if self.residual_encoder else ConvStage
            x = stage(self.features_per_stage[s], self.n_blocks_per_stage[s], kernels[s], strides[s],
                      name=f"encoder_{s}", **common)(x)
            skips.append(x)
        return skips

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, output: str = "prediction") -> Any:
        """``output='prediction'``: the segmentation (see the class docstring); ``'bottleneck'``: only the encoder
        runs and its deepest features are returned. ``train`` is accepted for the common calling convention; the
        network behaves the same either way (instance norm, no dropout)."""
        del train
        if output not in ("prediction", "bottleneck"):
            raise ValueError(f"{type(self).__name__}: output must be 'prediction' or 'bottleneck', got {output!r}")
        self._check(x)
        init_name = self.kernel_init or NNUNET_KERNEL_INIT
        convs = _ConvFactory(self.ndim, init_name, self.dtype, self.conv_impl)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        skips = self._encoder(x, convs)
        if output == "bottleneck":
            return skips[-1]
        kernels, strides = self.stage_kernels(), self.stage_strides()
        x, outputs = skips[-1], []
        for s in range(1, self.n_stages):
            level = self.n_stages - 1 - s
            x = ConvStage(self.features_per_stage[level], self.n_conv_per_stage_decoder[s - 1], kernels[level],
                          (1,) * self.ndim, self.conv_bias, self.norm_epsilon, self.negative_slope, convs, self.dtype,
                          up_stride=strides[level + 1], up_init=_transpose_kernel_init(init_name),
                          name=f"decoder_{level}")(x, skips[level])
            head = convs(self.num_classes, (1,) * self.ndim, (1,) * self.ndim, True,
                         "head" if level == 0 else f"head_{level}")
            outputs.append(apply_activation(head(x).astype(jnp.float32), self.head_activation))
        outputs = outputs[::-1]  # full resolution first, as nnU-Net returns them
        return outputs if self.deep_supervision else outputs[0]


class ResidualEncoderUNet(DynamicUNet):
    """``dynamic_network_architectures.architectures.unet.ResidualEncoderUNet`` (BasicBlockD, default stem)."""

    residual_encoder = True


def _as_tuples(value: Any) -> Any:
    """JSON and ml_collections give lists; module attributes are hashable tuples."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def nnunet_spec(name: str, module: type[DynamicUNet], tiny_config: dict[str, Any], stem: str) -> NetworkSpec:
    """The network contract shared by nnU-Net's U-Nets (``stem``: the module that reads the input channels).

    Deep supervision is not declared: nnU-Net's lower heads are at lower resolution and its loss down-samples the
    target, which the library's deep-supervision loss (full-resolution heads, summed) does not do; the heads are
    there (``deep_supervision=True``) for nnU-Net-style training code."""
    return NetworkSpec(
        name=name,
        build=lambda cfg: module(**{k: _as_tuples(v) for k, v in cfg.items()}),
        task="segmentation",
        tiny_config=tiny_config,
        input_divisor=lambda m: math.lcm(*m.input_divisor),
        encoder_prefixes=lambda m: (*(("encoder_stem",) if m.residual_encoder else ()),
                                    *(f"encoder_{s}" for s in range(m.n_stages))),
        stem_prefixes=lambda m: (stem,),
        head_prefixes=lambda m: ("head", *(f"head_{level}" for level in range(1, m.n_stages - 1))),
        encoder_apply_kwargs={"output": "bottleneck"},
    )


SPEC = nnunet_spec(
    "resenc_unet", ResidualEncoderUNet,
    {"name": "resenc_unet", "ndim": 3, "features_per_stage": (2, 4, 4), "strides": (1, 2, 2),
     "kernel_sizes": 3, "n_blocks_per_stage": (1, 2, 1), "n_conv_per_stage_decoder": (1, 1)},
    stem="encoder_stem/conv_0",
)
