"""Framework-free core of the weight converters: the U-Net shape a published file describes (``UNetLayout``), the
list of Flax variables that shape implies (``variable_slots``), and assembling / checking variable trees.

The published formats only differ in how they name a slot and lay out a kernel; that lives in ``pytorch.py`` and
``keras_h5.py``. The Flax side is read from ``GenesisUNet`` itself (``jax.eval_shape`` of its init), so a change of
the network's parameter tree shows up here as a mismatch instead of silently mis-mapped weights.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genesis_jax.models import GenesisUNet, build_model

PUBLISHED_DEPTH = 4
PUBLISHED_BASE_WIDTH = 32


class InteropError(ValueError):
    """A weights file that cannot be converted; the message names the file and the first offending entry."""


@dataclasses.dataclass(frozen=True)
class UNetLayout:
    """The hyper-parameters of a Genesis U-Net that a weights file determines (the published one: 'pytorch' or
    'keras' variant, base width 32, depth 4, 1 input channel, 1 class)."""

    variant: str
    base_width: int = PUBLISHED_BASE_WIDTH
    depth: int = PUBLISHED_DEPTH
    in_channels: int = 1
    num_classes: int = 1

    def model_config(self) -> dict[str, Any]:
        """The ``config.model`` section that ``genesis_jax.models.build_model`` turns into this network."""
        return {
            "name": "genesis_unet",
            "variant": self.variant,
            "ndim": 3,
            "base_width": self.base_width,
            "depth": self.depth,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "head_activation": "sigmoid",
        }

    def build(self) -> GenesisUNet:
        return GenesisUNet(
            variant=self.variant,
            ndim=3,
            base_width=self.base_width,
            depth=self.depth,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            head_activation="sigmoid",
        )

    @classmethod
    def from_model_config(cls, model_config: Mapping[str, Any], source: str) -> "UNetLayout":
        """The layout of a weights directory's model config; only a 3D Genesis U-Net has a published counterpart."""
        name = model_config.get("name")
        if name != "genesis_unet":
            raise InteropError(
                f"{source}: model.name is {name!r}; only a 'genesis_unet' has a published (PyTorch/Keras) counterpart"
            )
        try:
            model = build_model(model_config)
        except ValueError as err:
            raise InteropError(f"{source}: {err}") from None
        if model.ndim != 3:
            raise InteropError(f"{source}: model.ndim is {model.ndim}; the published networks are 3D (ndim=3)")
        return cls(model.variant, model.base_width, model.depth, model.in_channels, model.num_classes)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One variable of the Flax model: ``variables[collection][*module][leaf]`` with ``shape``."""

    collection: str  # 'params' or 'batch_stats'
    module: tuple[str, ...]  # ('encoder_0', 'conv_0'), ('decoder_2', 'up'), ('head',)
    leaf: str  # kernel, bias, scale, mean, var
    shape: tuple[int, ...]

    @property
    def path(self) -> tuple[str, ...]:
        return (self.collection, *self.module, self.leaf)

    @property
    def is_kernel(self) -> bool:
        return self.leaf == "kernel"

    @property
    def is_transposed_conv(self) -> bool:
        return self.module[-1] == "up"

    def __str__(self) -> str:
        return "/".join(self.path)


def _published_order(path: tuple[str, ...]) -> tuple:
    """Sort key putting variables in the published modules' order: encoder levels down, decoder levels up, head;
    inside a level the up-sampling first, then conv/BN pairs; inside a layer weight, bias, statistics."""
    collection, *module, leaf = path
    level = module[0]
    if level.startswith("encoder_"):
        level_rank = (0, int(level.split("_")[1]))
    elif level.startswith("decoder_"):
        level_rank = (1, -int(level.split("_")[1]))
    else:
        level_rank = (2, 0)
    layer = module[1] if len(module) > 1 else ""
    layer_rank = (-1, 0) if layer == "up" else (int(layer.split("_")[1]) if layer else 0, layer.startswith("bn"))
    leaf_rank = ["kernel", "scale", "bias", "mean", "var"].index(leaf)
    return level_rank, layer_rank, leaf_rank


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


@functools.lru_cache(maxsize=16)
def variable_slots(layout: UNetLayout) -> tuple[Slot, ...]:
    """Every variable of the Flax model for ``layout``, in the published modules' order (shapes only; nothing
    is computed)."""
    model = layout.build()
    factor = model.pooling_factor
    x = jax.ShapeDtypeStruct((1, factor, factor, factor, layout.in_channels), jnp.float32)
    shapes = jax.eval_shape(lambda inputs: model.init(jax.random.key(0), inputs), x)
    flat = _flatten(shapes)
    return tuple(
        Slot(path[0], tuple(path[1:-1]), path[-1], tuple(flat[path].shape))
        for path in sorted(flat, key=_published_order)
    )


def check_weight_values(name: str, array: np.ndarray, source: Any, dtype: Any = None) -> None:
    """Refuse a weight that is not floating point (``dtype``: its dtype before any conversion) or not finite."""
    dtype = np.asarray(array).dtype if dtype is None else dtype
    if not np.issubdtype(np.dtype(dtype), np.floating):
        raise InteropError(f"{source}: {name} has dtype {np.dtype(dtype)}; network weights are floating point")
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise InteropError(f"{source}: {name} has {bad} NaN/Inf value(s) of {np.size(array)}; refusing damaged weights")


def assemble(slots: Iterable[Slot], arrays: Mapping[Slot, np.ndarray]) -> dict[str, Any]:
    """Nest ``arrays`` (one float32 array per slot) into a Flax variables dict."""
    variables: dict[str, Any] = {}
    for slot in slots:
        node = variables
        for key in (slot.collection, *slot.module):
            node = node.setdefault(key, {})
        node[slot.leaf] = np.asarray(arrays[slot], dtype=np.float32)
    return variables


def gather(variables: Mapping[str, Any], slots: Iterable[Slot], source: str) -> dict[Slot, np.ndarray]:
    """The array of each slot from a variables tree, refusing a tree with missing, extra or mis-shaped entries
    (the message names the first one)."""
    slots = list(slots)
    flat = _flatten({k: v for k, v in variables.items() if k in ("params", "batch_stats")})
    extra = [k for k in flat if k not in {s.path for s in slots}]
    for slot in slots:
        if slot.path not in flat:
            raise InteropError(f"{source}: variable {slot} is missing (the model config and the weights disagree)")
    if extra:
        raise InteropError(
            f"{source}: unexpected variable {'/'.join(extra[0])} ({len(extra)} unexpected in all) for this model"
        )
    arrays = {}
    for slot in slots:
        value = np.asarray(flat[slot.path])
        if value.shape != slot.shape:
            raise InteropError(f"{source}: variable {slot} has shape {value.shape}, the model expects {slot.shape}")
        check_weight_values(f"variable {slot}", value, source)
        arrays[slot] = value
    return arrays
