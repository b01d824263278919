"""Task heads on top of an encoder: the published classification head, on the Genesis U-Net's encoder
(``genesis_classifier``) or on any registered segmentation network's (``encoder_classifier``, e.g. nnU-Net's ResEnc
for active learning). Segmentation needs no module here: it is the whole encoder-decoder with a fresh 1^n
convolution on the last decoder features (``GenesisUNet(num_classes=n)``; transfer replaces its ``head``).

Classification (published TargetNet / Keras README): global average pool of the bottleneck -> Dense 1024 + ReLU
-> Dense n. The backbone's encoder runs alone (its spec's ``encoder_apply_kwargs``); parameters ``backbone/...``
(the backbone's encoder, named as in the segmentation network, so its pre-trained encoder maps by position) and
``head``.

``encoder_classifier`` model config: ``backbone`` (a segmentation network's model config, with its ``name``) and the
head's ``num_classes``, ``hidden``, ``activation``; e.g. ``{"name": "encoder_classifier", "backbone":
{"name": "resenc_unet", ...}, "num_classes": 2, "hidden": 1024, "activation": "none"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genesis_jax.models.spec import NetworkSpec
from genesis_jax.models.unet import PUBLISHED_VARIANTS, GenesisUNet, apply_activation


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


class EncoderClassifier(nn.Module):
    """An encoder + classification head. Parameters: ``backbone`` (the encoder of the ``backbone_network`` module)
    and ``head``."""

    backbone: nn.Module
    num_classes: int = 1
    hidden: int = 1024
    activation: str | None = "sigmoid"
    backbone_network: str = "genesis_unet"  # the backbone's registered name (its spec answers for it)
    encoder_kwargs: tuple[tuple[str, Any], ...] = (("output", "bottleneck"),)  # apply() kwargs: the encoder alone

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        features = self.backbone(x, train=train, **dict(self.encoder_kwargs))
        return ClassificationHead(self.num_classes, self.hidden, self.activation, self.backbone.dtype, name="head")(
            features
        )


GenesisClassifier = EncoderClassifier  # the published classifier is this module on a GenesisUNet backbone
HEAD_FIELDS = ("num_classes", "hidden", "activation")


def build_classifier(cfg: dict[str, Any]) -> EncoderClassifier:
    """The Genesis classifier of a model config: the head's fields (num_classes, hidden, activation), the rest the
    backbone's."""
    cfg = dict(cfg)
    head = {k: cfg.pop(k) for k in HEAD_FIELDS if k in cfg}
    return EncoderClassifier(backbone=GenesisUNet(**cfg, name="backbone"), **head)


def build_encoder_classifier(cfg: dict[str, Any]) -> EncoderClassifier:
    """An ``encoder_classifier`` model config (module docstring) -> the module; a ValueError when the backbone is no
    segmentation network with an encoder that runs alone, a TypeError naming a field that belongs nowhere."""
    from genesis_jax.models.registry import build_model, network_spec  # the registry imports this module

    cfg = dict(cfg)
    backbone = cfg.pop("backbone", None)
    if not hasattr(backbone, "keys"):  # a dict or a ConfigDict
        raise ValueError("model.backbone: an encoder_classifier needs the backbone's model config (a dict with its "
                         "'name')")
    backbone = dict(backbone)
    spec = network_spec(backbone)
    if spec.task != "segmentation" or spec.encoder_apply_kwargs is None:
        raise ValueError(f"model.backbone.name={spec.name!r}: not a segmentation network whose encoder runs alone")
    head = {k: cfg.pop(k) for k in HEAD_FIELDS if k in cfg}
    if cfg:
        raise TypeError(f"unexpected field(s) {sorted(cfg)} (the backbone's fields go under model.backbone)")
    return EncoderClassifier(backbone=build_model(backbone), backbone_network=spec.name,
                             encoder_kwargs=tuple(spec.encoder_apply_kwargs.items()), **head)


def _backbone(m: EncoderClassifier, facts: Callable[[NetworkSpec, nn.Module], Any]) -> Any:
    """One fact of the backbone's own spec (the registry imports this module, so it is read when asked)."""
    from genesis_jax.models.registry import MODELS

    return facts(MODELS[m.backbone_network], m.backbone)


def _under_backbone(prefixes: Any) -> tuple[str, ...]:
    return tuple(f"backbone/{p}" for p in prefixes)


def classifier_spec(name: str, build: Callable[[dict[str, Any]], EncoderClassifier], tiny_config: dict[str, Any],
                    **variants: Any) -> NetworkSpec:
    """The contract of a classifier: its backbone's input divisor, encoder and stem (under ``backbone/``), the head."""
    return NetworkSpec(
        name=name,
        build=build,
        task="classification",
        tiny_config=tiny_config,
        input_divisor=lambda m: _backbone(m, lambda spec, b: spec.input_divisor(b)),
        encoder_prefixes=lambda m: _under_backbone(_backbone(m, lambda spec, b: spec.encoder_prefixes(b))),
        stem_prefixes=lambda m: _under_backbone(_backbone(m, lambda spec, b: spec.stem_prefixes(b))),
        in_channels=lambda m: _backbone(m, lambda spec, b: spec.in_channels(b)),
        head_prefixes=lambda m: ("head",),
        **variants,
    )


SPEC = classifier_spec(
    "genesis_classifier", build_classifier,
    {"name": "genesis_classifier", "variant": "keras", "ndim": 3, "base_width": 2, "depth": 2, "num_classes": 1,
     "hidden": 8},
    variant_field="variant", published_variants=PUBLISHED_VARIANTS,
)
