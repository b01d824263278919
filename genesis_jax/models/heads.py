"""Task heads on top of a Genesis U-Net: the published classification head and a segmentation head.

Classification (published TargetNet / Keras README): global average pool of the bottleneck -> Dense 1024 + ReLU
-> Dense n. Segmentation: the whole encoder-decoder with a fresh 1^n convolution on the last decoder features
(that is simply ``GenesisUNet(num_classes=n)``; transfer replaces its ``head``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genesis_jax.models.unet import GenesisUNet, apply_activation


class ClassificationHead(nn.Module):
    """GAP -> Dense(hidden) + ReLU -> Dense(num_classes) -> activation."""

    num_classes: int = 1
    hidden: int = 1024
    activation: str | None = "sigmoid"
    dtype: Any = None

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        pooled = jnp.mean(features.astype(jnp.float32), axis=tuple(range(1, features.ndim - 1)))
        h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="hidden")(pooled))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(h)
        return apply_activation(logits.astype(jnp.float32), self.activation)


class GenesisClassifier(nn.Module):
    """Genesis encoder + classification head. Parameters: ``backbone`` (encoder_* of a GenesisUNet) and ``head``."""

    backbone: GenesisUNet
    num_classes: int = 1
    hidden: int = 1024
    activation: str | None = "sigmoid"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = self.backbone(x, train=train, output="bottleneck")
        return ClassificationHead(self.num_classes, self.hidden, self.activation, self.backbone.dtype, name="head")(
            features
        )
