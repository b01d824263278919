"""The networks of the library by name: each registered once with its :class:`~genesis_jax.models.spec.NetworkSpec`;
``build_model`` turns a config section (``config.model``) into a module, ``network_spec`` / ``contract`` answer the
questions other rooms ask about a network, and ``adaptation_record`` is what a weights directory carries.

Adding a network
----------------
Write one module in ``genesis_jax/models/`` with the Flax module and, beside it, ``SPEC = NetworkSpec(...)``; add the
module's name to ``NETWORK_MODULES`` below (one line). Nothing outside ``models/`` changes: training, transfer, evaluation, config checks and active
learning read the spec. Its fields:

* ``name``: the ``config.model.name`` that picks it; ``build``: the model config (less ``name``) -> module (a
  field the module does not take becomes a one-line error naming it).
* ``task``: 'segmentation' (dense output, Dice-family losses, sliding-window evaluation) or 'classification'.
* ``tiny_config``: a small model config that builds and runs on CPU in seconds; the spec tests
  (``tests/models/test_network_specs.py``) check every registered network with it.
* ``input_divisor(module)``: every spatial input size must be a multiple of it (config checks refuse other
  ``input_shape``/``patch_shape``); a test checks it against a ``jax.eval_shape`` forward.
* ``encoder_prefixes(module)``: the parameter-path prefixes of the encoder, shallow to deep. Transfer into a
  classifier maps the source's encoder onto these (by position), ``init.freeze_encoder`` freezes them; a test checks
  they select exactly the parameters of ``encoder_apply_kwargs``' forward.
* ``stem_prefixes(module)``: the layer(s) that read the input channels; a pre-trained stem of another channel count
  is re-initialised (named in the transfer warning).
* ``head_prefixes(module)``: the task heads, initialised fresh by a segmentation transfer (``init.keep_head`` keeps
  them).
* ``encoder_apply_kwargs``: ``apply()`` keyword arguments that run only the encoder (e.g. ``{'output':
  'bottleneck'}``); None when everything but the heads is encoder (a classifier).
* ``in_channels(module)``: the input channels it reads (default: the module's ``in_channels`` attribute; a
  classifier answers with its backbone's).
* ``deep_supervision(module)``: ``apply()`` keyword arguments returning a list of every head (summed by the loss),
  or None.
* ``evaluation_config(model_config, config.eval)``: the model config evaluation builds (e.g. UNet++'s pruning level
  and head averaging); it must use the trained variables unchanged.
* ``variant_field`` and ``published_variants``: the model config field choosing a published weights variant, and
  what each maps to (config checks accept exactly these values).

Exported weights record ``adaptation_record(model_config)`` (encoder, stem and head prefixes, network, variant) in
``adaptation.json``; ``finetune --init`` maps a source by that record, so it does not need the source's spec.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from genesis_jax.models.spec import AdaptationRecord, NetworkSpec, Task

# The modules of genesis_jax.models that declare a network (their ``SPEC``), one line each.
NETWORK_MODULES = (
    "unet",  # genesis_unet
    "unetpp",  # unetpp
    "heads",  # genesis_classifier
    "resenc",  # resenc_unet: nnU-Net's ResidualEncoderUNet
    "plain_unet",  # plain_unet: nnU-Net's PlainConvUNet
    "encoder_classifier",  # encoder_classifier: the classification head on any segmentation network's encoder
)


def _registered(modules: tuple[str, ...]) -> dict[str, NetworkSpec]:
    specs: dict[str, NetworkSpec] = {}
    for module in modules:
        spec = importlib.import_module(f"genesis_jax.models.{module}").SPEC
        if spec.name in specs:
            raise ValueError(f"genesis_jax.models.{module}: network {spec.name!r} is already registered")
        specs[spec.name] = spec
    return specs


MODELS: dict[str, NetworkSpec] = _registered(NETWORK_MODULES)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, None: None}


def _dtype(name: Any) -> Any:
    if name in _DTYPES:
        return _DTYPES[name]
    raise ValueError(f"model.dtype must be one of {sorted(k for k in _DTYPES if k)} (or None), got {name!r}")


def network_spec(model_config: Mapping[str, Any]) -> NetworkSpec:
    """The spec of ``model_config['name']``; a ValueError listing the known names otherwise."""
    name = model_config.get("name")
    if name not in MODELS:
        raise ValueError(f"model.name must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def build_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``model_config.name`` with the remaining fields as attributes.

    Raises a ValueError naming the field when the name is unknown or a field does not belong to the network.
    """
    spec = network_spec(model_config)
    cfg = {k: v for k, v in dict(model_config).items() if k != "name"}
    if "dtype" in cfg:
        cfg["dtype"] = _dtype(cfg["dtype"])
    try:
        return spec.build(cfg)
    except TypeError as err:  # an unexpected keyword: name the field
        raise ValueError(f"model config for {spec.name!r} has a field the network does not take: {err}") from None


@dataclasses.dataclass(frozen=True)
class Contract:
    """The spec's answers for one model config (the module built, nothing traced)."""

    spec: NetworkSpec
    module: nn.Module
    model_config: dict[str, Any]

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def input_divisor(self) -> int:
        return int(self.spec.input_divisor(self.module))

    @property
    def in_channels(self) -> int:
        return int(self.spec.in_channels(self.module))

    @property
    def encoder(self) -> tuple[str, ...]:
        return tuple(self.spec.encoder_prefixes(self.module))

    @property
    def stem(self) -> tuple[str, ...]:
        return tuple(self.spec.stem_prefixes(self.module))

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.spec.head_prefixes(self.module))

    @property
    def deep_supervision(self) -> dict[str, Any] | None:
        kwargs = self.spec.deep_supervision(self.module)
        return None if kwargs is None else dict(kwargs)

    @property
    def variant(self) -> str | None:
        field = self.spec.variant_field
        if field is None:
            return None
        value = self.model_config.get(field)
        return value if value is not None else getattr(self.module, field, None)

    def evaluation_config(self, eval_config: Mapping[str, Any]) -> dict[str, Any]:
        return self.spec.evaluation_config(dict(self.model_config), eval_config)

    def adaptation_record(self) -> AdaptationRecord:
        return AdaptationRecord(self.spec.name, self.variant, self.encoder, self.stem, self.heads)


def contract(model_config: Mapping[str, Any]) -> Contract:
    """The contract of the network ``model_config`` builds (a ValueError when it does not build)."""
    return Contract(network_spec(model_config), build_model(model_config), dict(model_config))


def adaptation_record(model_config: Mapping[str, Any]) -> AdaptationRecord:
    """Encoder, stem and head prefixes of the network ``model_config`` builds, as a weights directory records them."""
    return contract(model_config).adaptation_record()
