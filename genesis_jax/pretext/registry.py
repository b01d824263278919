"""The one place pretexts are registered: ``config.pretext.name`` -> its module (:mod:`genesis_jax.pretext.base`
says what a module provides). A new pretext is a module in this package, one line here and a config."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from genesis_jax.pretext import genesis, genesis_mim, mim
from genesis_jax.pretext.base import Pretext

PRETEXTS: dict[str, ModuleType] = {
    "genesis": genesis,
    "mim": mim,
    "genesis_mim": genesis_mim,
}
DEFAULT = "genesis"  # a pre-training config without a ``pretext`` block (written before pretexts were plug-ins)


def pretext_name(config: Any) -> str:
    """``config.pretext.name``, or the default for a config without a ``pretext`` block."""
    block = config.get("pretext") if hasattr(config, "get") else None
    return str(block.get("name", DEFAULT)) if block else DEFAULT


def build_pretext(config: Any, transform: Any = None) -> Pretext:
    """The pretext ``config`` names, built for it (``transform`` replaces restoration deformations where used)."""
    name = pretext_name(config)
    if name not in PRETEXTS:
        raise ValueError(f"config.pretext.name={name!r}: unknown pretext; choose one of {sorted(PRETEXTS)}")
    return PRETEXTS[name].build(config, transform)
