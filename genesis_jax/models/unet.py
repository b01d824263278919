"""The Models Genesis U-Net (2D and 3D), in the two published decoder variants.

``variant='pytorch'``: decoder up-samples with a 2x2x2 stride-2 transposed convolution (19,073,665 parameters at
full size) and every BatchNorm uses batch statistics, also at inference, with eps 1e-5, as the released
``Genesis_Chest_CT.pt`` expects (its ``ContBatchNorm3d``).
``variant='keras'``: nearest-neighbour up-sampling, no weights (16,320,257 parameters: the paper's model), BatchNorm
eps 1e-3 / momentum 0.99 using running averages at inference.

Layout (channels-last, spatial axes (x, y, z) with z the short axis): encoder level d has two 3^n conv + BN + ReLU
blocks with ``w*2^d`` and ``w*2^(d+1)`` channels and a 2x max-pool except at the deepest level; decoder level d
up-samples, concatenates ``[upsampled, skip]`` and applies two conv blocks with ``w*2^(d+1)`` channels; a 1^n
convolution and an activation make the head.

Parameter tree (stable names used by interop and transfer):
``encoder_{d}/{conv_0,bn_0,conv_1,bn_1}``, ``decoder_{d}/{up,conv_0,bn_0,conv_1,bn_1}``, ``head``.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from genesis_jax.models.initializers import kernel_initializer
from genesis_jax.models.layers import BatchNorm, check_input, conv, conv_transpose_2x, max_pool, upsample_nearest
from genesis_jax.models.spec import NetworkSpec

Variant = Literal["pytorch", "keras"]
Output = Literal["prediction", "bottleneck", "features"]

# Published BatchNorm settings per variant: (mode, momentum of the running average, epsilon).
BATCHNORM_SETTINGS = {"pytorch": ("batch", 0.9, 1e-5), "keras": ("standard", 0.99, 1e-3)}


def apply_activation(logits: jax.Array, activation: str | None) -> jax.Array:
    """The head's output activation: 'sigmoid', 'softmax' (over channels), or None for logits."""
    if activation is None or activation == "none":
        return logits
    if activation == "sigmoid":
        return nn.sigmoid(logits)
    if activation == "softmax":
        return nn.softmax(logits, axis=-1)
    raise ValueError(f"unknown head activation {activation!r}; choose 'sigmoid', 'softmax' or None")


class UNetLevel(nn.Module):
    """One U-Net level: optional 2x up-sampling of ``x`` and concatenation ``[upsampled, skip]``, then two
    (conv 3^n -> BatchNorm -> ReLU) blocks."""

    features: tuple[int, int]
    ndim: int
    bn_mode: str
    bn_momentum: float
    bn_epsilon: float
    kernel_init: str
    upsample: Literal["transpose", "nearest"] | None = None
    dtype: Any = None
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, skip: jax.Array | None = None) -> jax.Array:
        init = kernel_initializer(self.kernel_init)
        if self.upsample == "transpose":
            x = conv_transpose_2x(x.shape[-1], self.ndim, "up", self.dtype, kernel_init=init)(x)
        elif self.upsample == "nearest":
            x = upsample_nearest(x, self.ndim)
        if skip is not None:
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        for i, width in enumerate(self.features):
            x = conv(width, self.ndim, 3, f"conv_{i}", self.dtype, self.conv_impl, kernel_init=init)(x)
            x = BatchNorm(
                mode=self.bn_mode, momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype, name=f"bn_{i}"
            )(x, train)
            x = nn.relu(x)
        return x


class GenesisUNet(nn.Module):
    """The Genesis U-Net. ``apply(variables, x)`` returns the activated head output with the input's spatial shape.

    Attributes:
      variant: 'pytorch' or 'keras' (see the module docstring).
      ndim: 3 for cubes (N, X, Y, Z, C), 2 for slices (N, X, Y, C).
      base_width: channels of the first convolution (32 published).
      depth: number of resolution levels (4 published: 3 poolings, so spatial sizes must divide by 2^(depth-1)).
      in_channels, num_classes: input channels and head outputs.
      head_activation: 'sigmoid' (published), 'softmax' or None (logits).
      kernel_init: 'pytorch', 'glorot_uniform', 'he_uniform', 'uniform' or 'he_normal'.
      dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
      conv_impl: how the 3^n convolutions are computed: 'auto' (per backend, see
        ``genesis_jax.models.layers.resolve_conv_impl``), 'native' or 'depth_taps'. Same parameters and outputs.
    """

    variant: Variant = "pytorch"
    ndim: int = 3
    base_width: int = 32
    depth: int = 4
    in_channels: int = 1
    num_classes: int = 1
    head_activation: str | None = "sigmoid"
    kernel_init: str | None = None
    dtype: Any = None
    conv_impl: str = "auto"

    @property
    def pooling_factor(self) -> int:
        return 2 ** (self.depth - 1)

    @property
    def bottleneck_channels(self) -> int:
        return self.base_width * 2**self.depth

    @property
    def _init_name(self) -> str:
        return self.kernel_init or ("pytorch" if self.variant == "pytorch" else "glorot_uniform")

    def _level(self, features: tuple[int, int], name: str, upsample: str | None = None) -> UNetLevel:
        mode, momentum, epsilon = BATCHNORM_SETTINGS[self.variant]
        return UNetLevel(
            features, self.ndim, mode, momentum, epsilon, self._init_name, upsample, self.dtype, self.conv_impl, name=name
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, output: Output = "prediction") -> Any:
        """Run the network.

        output='prediction': the activated head output (N, *spatial, num_classes).
        output='bottleneck': only the encoder runs; returns the deepest features (N, *spatial/2^(depth-1), 16w).
        output='features': a dict with 'bottleneck', 'decoder' (last decoder features, 2w channels) and 'prediction'.
        """
        if self.variant not in BATCHNORM_SETTINGS:
            raise ValueError(f"GenesisUNet: unknown variant {self.variant!r}; choose 'pytorch' or 'keras'")
        check_input(
            x, ndim=self.ndim, in_channels=self.in_channels, divisor=self.pooling_factor, model="GenesisUNet"
        )
        if self.dtype is not None:
            x = x.astype(self.dtype)
        w = self.base_width
        skips = []
        for d in range(self.depth):
            x = self._level((w * 2**d, w * 2 ** (d + 1)), f"encoder_{d}")(x, train)
            if d < self.depth - 1:
                skips.append(x)
                x = max_pool(x, self.ndim)
        bottleneck = x
        if output == "bottleneck":
            return bottleneck
        upsample = "transpose" if self.variant == "pytorch" else "nearest"
        for d in reversed(range(self.depth - 1)):
            x = self._level((w * 2 ** (d + 1),) * 2, f"decoder_{d}", upsample)(x, train, skip=skips[d])
        decoder_features = x
        head = conv(self.num_classes, self.ndim, 1, "head", self.dtype, kernel_init=kernel_initializer(self._init_name))
        logits = head(x)
        prediction = apply_activation(logits.astype(jnp.float32), self.head_activation)
        if output == "features":
            return {"bottleneck": bottleneck, "decoder": decoder_features, "prediction": prediction}
        return prediction


def encoder_prefixes(model: GenesisUNet, under: str = "") -> tuple[str, ...]:
    """The encoder levels ``encoder_0..encoder_{depth-1}`` (``under`` names an enclosing module, e.g. 'backbone/')."""
    return tuple(f"{under}encoder_{d}" for d in range(model.depth))


PUBLISHED_VARIANTS = {
    "pytorch": "Genesis_Chest_CT.pt (the published PyTorch UNet3D; genesis-jax convert reads and writes it)",
    "keras": "Genesis_Chest_CT.h5 (the published Keras model; exported to .pt with nearest-neighbour up-convolutions)",
}

SPEC = NetworkSpec(
    name="genesis_unet",
    build=lambda cfg: GenesisUNet(**cfg),
    task="segmentation",
    tiny_config={"name": "genesis_unet", "variant": "keras", "ndim": 3, "base_width": 2, "depth": 2},
    input_divisor=lambda m: m.pooling_factor,
    encoder_prefixes=encoder_prefixes,
    stem_prefixes=lambda m: ("encoder_0/conv_0",),
    head_prefixes=lambda m: ("head",),
    encoder_apply_kwargs={"output": "bottleneck"},
    variant_field="variant",
    published_variants=PUBLISHED_VARIANTS,
)
