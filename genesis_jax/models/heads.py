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

from genesis_jax.models.spec import NetworkSpec
from genesis_jax.models.unet import PUBLISHED_VARIANTS, GenesisUNet, apply_activation, encoder_prefixes


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


def build_classifier(cfg: dict[str, Any]) -> GenesisClassifier:
    """The classifier of a model config: the head's fields (num_classes, hidden, activation), the rest the backbone's."""
    cfg = dict(cfg)
    head = {k: cfg.pop(k) for k in ("num_classes", "hidden", "activation") if k in cfg}
    return GenesisClassifier(backbone=GenesisUNet(**cfg, name="backbone"), **head)


SPEC = NetworkSpec(
    name="genesis_classifier",
    build=build_classifier,
    task="classification",
    tiny_config={"name": "genesis_classifier", "variant": "keras", "ndim": 3, "base_width": 2, "depth": 2,
                 "num_classes": 1, "hidden": 8},
    input_divisor=lambda m: m.backbone.pooling_factor,
    encoder_prefixes=lambda m: encoder_prefixes(m.backbone, "backbone/"),
    stem_prefixes=lambda m: ("backbone/encoder_0/conv_0",),
    head_prefixes=lambda m: ("head",),
    variant_field="variant",
    published_variants=PUBLISHED_VARIANTS,
)
