"""The contract a network declares beside its module (:class:`NetworkSpec`) and the part of it a weights directory
carries (:class:`AdaptationRecord`).

Everything outside ``models/`` that needs a fact about a network (what its input must divide by, which parameters
are its encoder, stem and heads, whether it is deep-supervised, how evaluation builds it, which published weights it
maps to) asks the spec of ``config.model.name`` through :mod:`genesis_jax.models.registry` and knows no network by
name. The spec's functions take the built module (``build(model_config)``), so the module's own defaults apply.

Parameter paths are '/'-joined module names inside a collection (``encoder_0/conv_0/kernel``); a *prefix* selects a
module and everything below it (``encoder_1`` selects ``encoder_1/...`` but not ``encoder_10/...``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import flax.linen as nn

Task = Literal["segmentation", "classification"]
Prefixes = tuple[str, ...]


def _no_deep_supervision(module: nn.Module) -> None:
    return None


def _module_in_channels(module: nn.Module) -> int:
    return int(module.in_channels)


def _same_network(model_config: dict[str, Any], eval_config: Mapping[str, Any]) -> dict[str, Any]:
    return dict(model_config)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """What one network promises the rest of the library (see "Adding a network" in
    :mod:`genesis_jax.models.registry` for how each field is used)."""

    name: str  # config.model.name
    build: Callable[[dict[str, Any]], nn.Module]  # the model config (less 'name') -> module
    task: Task  # what its output is for: dense 'segmentation' maps or 'classification' scores
    tiny_config: Mapping[str, Any]  # a small model config (with 'name') that tests and examples build on CPU
    input_divisor: Callable[[nn.Module], int]  # every spatial input size must be a multiple of this
    encoder_prefixes: Callable[[nn.Module], Prefixes]  # modules a pre-trained encoder consists of, shallow to deep
    stem_prefixes: Callable[[nn.Module], Prefixes]  # modules that read the input channels (new when they differ)
    head_prefixes: Callable[[nn.Module], Prefixes]  # task heads: fresh in a transfer unless the head is kept
    # apply() keyword arguments that run only the encoder (deepest features); None: all but the heads is encoder
    encoder_apply_kwargs: Mapping[str, Any] | None = None
    # apply() keyword arguments returning every head for a deep-supervision loss (a list), or None
    deep_supervision: Callable[[nn.Module], Mapping[str, Any] | None] = _no_deep_supervision
    # the network evaluation builds from the trained one and ``config.eval`` (pruning, head averaging), same variables
    evaluation_config: Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]] = _same_network
    # the input channels it reads (default: the module's ``in_channels``)
    in_channels: Callable[[nn.Module], int] = _module_in_channels
    # the model config field that picks a published weights variant, and what each variant maps to
    variant_field: str | None = None
    published_variants: Mapping[str, str] = dataclasses.field(default_factory=dict)


def has_prefix(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or lies below one of them."""
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def prefix_index(path: str, prefixes: Prefixes) -> tuple[int, str] | None:
    """(index of the prefix ``path`` lies below, the rest of the path) or None."""
    for i, p in enumerate(prefixes):
        if path.startswith(p + "/"):
            return i, path[len(p) + 1:]
    return None


@dataclasses.dataclass(frozen=True)
class AdaptationRecord:
    """Which parameters of a weights directory are encoder, stem and heads (nnssl's checkpoints carry the same
    idea as an "adaptation plan"), written beside the weights as ``adaptation.json`` so that ``--init`` can map
    them without knowing the network that made them."""

    network: str
    variant: str | None
    encoder: Prefixes
    stem: Prefixes
    heads: Prefixes

    def as_dict(self) -> dict[str, Any]:
        return {"format": 1, "network": self.network, "variant": self.variant, "encoder": list(self.encoder),
                "stem": list(self.stem), "heads": list(self.heads)}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], source: Any) -> AdaptationRecord:
        """The record of a parsed ``adaptation.json``; a ValueError naming ``source`` when a field is missing."""
        try:
            return cls(str(value["network"]), value.get("variant"), tuple(value["encoder"]), tuple(value["stem"]),
                       tuple(value["heads"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{source}: not an adaptation record (missing or bad field {err})") from None
