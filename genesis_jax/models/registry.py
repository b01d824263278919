"""Build any network of the library from its config section (``config.model``) by name."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp

from genesis_jax.models.heads import GenesisClassifier
from genesis_jax.models.resenc import PlainConvUNet, ResidualEncoderUNet
from genesis_jax.models.unet import GenesisUNet
from genesis_jax.models.unetpp import UNetPlusPlus

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, None: None}


def _dtype(name: Any) -> Any:
    if name in _DTYPES:
        return _DTYPES[name]
    raise ValueError(f"model.dtype must be one of {sorted(k for k in _DTYPES if k)} (or None), got {name!r}")


def _genesis_unet(cfg: Mapping[str, Any]) -> nn.Module:
    return GenesisUNet(**cfg)


def _unetpp(cfg: Mapping[str, Any]) -> nn.Module:
    return UNetPlusPlus(**cfg)


def _genesis_classifier(cfg: Mapping[str, Any]) -> nn.Module:
    cfg = dict(cfg)
    head = {k: cfg.pop(k) for k in ("num_classes", "hidden", "activation") if k in cfg}
    backbone = GenesisUNet(**cfg, name="backbone")
    return GenesisClassifier(backbone=backbone, **head)


def _as_tuples(value: Any) -> Any:
    """JSON and ml_collections give lists; module attributes are hashable tuples."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _resenc_unet(cfg: Mapping[str, Any]) -> nn.Module:
    return ResidualEncoderUNet(**{k: _as_tuples(v) for k, v in cfg.items()})


def _plain_unet(cfg: Mapping[str, Any]) -> nn.Module:
    return PlainConvUNet(**{k: _as_tuples(v) for k, v in cfg.items()})


MODELS: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "genesis_unet": _genesis_unet,
    "unetpp": _unetpp,
    "genesis_classifier": _genesis_classifier,
    "resenc_unet": _resenc_unet,  # nnU-Net's ResidualEncoderUNet (models/resenc)
    "plain_unet": _plain_unet,  # nnU-Net's PlainConvUNet
}


def build_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``model_config.name`` with the remaining fields as attributes.

    Raises a ValueError naming the field when the name is unknown or a field does not belong to the network.
    """
    cfg = dict(model_config)
    name = cfg.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
    if "dtype" in cfg:
        cfg["dtype"] = _dtype(cfg["dtype"])
    try:
        return MODELS[name](cfg)
    except TypeError as err:  # an unexpected keyword: name the field
        raise ValueError(f"model config for {name!r} has a field the network does not take: {err}") from None
