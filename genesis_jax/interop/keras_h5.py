"""The published Keras weights (``Genesis_Chest_CT.h5``, ``keras/unet3d.py``'s ``unet_model_3d``) in, read with
h5py (no TensorFlow).

Both Keras 2 HDF5 layouts are read: a whole-model file (``model.save``: weights under ``model_weights/``) and a
weights-only file (``model.save_weights``: weights at the root); each layer group lists its arrays in the
``weight_names`` attribute (``depth_0_conv/kernel:0``, ...). Published layer names: ``depth_{i}_conv`` /
``depth_{i}_bn`` with i = 0..7 the encoder blocks (two per level, top level first) and 8..13 the decoder blocks
(deepest level first); the 1x1x1 head is auto-named (``conv3d_15`` or similar) and found as the only other layer
with weights. Keras kernels are already (kD, kH, kW, in, out), the Flax layout; BatchNorm gamma/beta/moving_mean/
moving_variance become scale/bias and batch_stats mean/var of the 'keras' variant (eps 1e-3, running averages at
inference, nearest-neighbour up-sampling).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from genesis_jax.interop.mapping import (
    InteropError,
    Slot,
    UNetLayout,
    assemble,
    check_weight_values,
    variable_slots,
)

INSTALL_HINT = "pip install 'genesis-jax[torch]'"  # the extra that carries h5py along with torch
_BLOCK = re.compile(r"^depth_(\d+)_(conv|bn)$")
_LEAF_NAMES = {
    ("conv", "kernel"): "kernel",
    ("conv", "bias"): "bias",
    ("bn", "scale"): "gamma",
    ("bn", "bias"): "beta",
    ("bn", "mean"): "moving_mean",
    ("bn", "var"): "moving_variance",
}


def import_h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise InteropError(f"reading Keras .h5 files needs h5py: {INSTALL_HINT}") from None
    return h5py


def _decode(names: Any) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_layers(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {weight name without scope and ':0': array}} for every layer that has weights."""
    h5py = import_h5py()
    if not path.is_file():
        raise InteropError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        size = path.stat().st_size
        raise InteropError(
            f"{path}: cannot open the HDF5 file ({size} bytes; truncated, damaged or not HDF5): {err}"
        ) from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    try:
        with handle:
            root = handle["model_weights"] if "model_weights" in handle else handle
            names = _decode(root.attrs["layer_names"]) if "layer_names" in root.attrs else list(root)
            for layer in names:
                group = root.get(layer)
                if not isinstance(group, h5py.Group):
                    continue
                if "weight_names" in group.attrs:
                    weight_names = _decode(group.attrs["weight_names"])
                else:  # no index: every dataset below the layer group
                    weight_names = []
                    group.visititems(lambda n, obj: weight_names.append(n) if isinstance(obj, h5py.Dataset) else None)
                weights = {}
                for name in weight_names:
                    short = name.rsplit("/", 1)[-1].split(":")[0]
                    weights[short] = np.asarray(group[name], dtype=np.float32)
                if weights:
                    layers[layer] = weights
    except (OSError, KeyError) as err:
        raise InteropError(f"{path}: cannot read the Keras weights (truncated or damaged?): {err}") from None
    return layers


def _head_layer(layers: dict[str, dict[str, np.ndarray]], path: Path) -> str:
    others = [name for name in layers if not _BLOCK.match(name)]
    heads = [n for n in others if "kernel" in layers[n] and layers[n]["kernel"].shape[:3] == (1, 1, 1)]
    if len(others) != 1 or len(heads) != 1:
        raise InteropError(
            f"{path}: expected exactly one layer with weights besides depth_{{i}}_conv/bn, the 1x1x1 head "
            f"convolution; found {others or 'none'}: not the published unet_model_3d"
        )
    return heads[0]


def _layout(layers: dict[str, dict[str, np.ndarray]], head: str, path: Path, num_classes: int | None) -> UNetLayout:
    if "depth_0_conv" not in layers or "kernel" not in layers["depth_0_conv"]:
        found = ", ".join(list(layers)[:6]) or "none"
        raise InteropError(
            f"{path}: not a Models Genesis Keras model: no 'depth_0_conv' kernel (layers with weights: {found})"
        )
    first = layers["depth_0_conv"]["kernel"]
    if first.ndim != 5:
        raise InteropError(f"{path}: depth_0_conv/kernel has shape {first.shape}, not a 3D convolution kernel")
    n_conv = sum(1 for name in layers if name.endswith("_conv") and _BLOCK.match(name))
    if (n_conv + 2) % 4:
        raise InteropError(
            f"{path}: {n_conv} depth_{{i}}_conv layers; a U-Net of depth D has 4D-2 (14 published)"
        )
    kernel = layers[head]["kernel"]
    if num_classes is not None and kernel.shape[-1] != num_classes:
        raise InteropError(
            f"{path}: the head {head!r} kernel has shape {kernel.shape}, i.e. {kernel.shape[-1]} output class(es), "
            f"but {num_classes} were expected"
        )
    return UNetLayout("keras", int(first.shape[-1]), (n_conv + 2) // 4, int(first.shape[-2]), int(kernel.shape[-1]))


def keras_name(slot: Slot, layout: UNetLayout, head: str) -> tuple[str, str]:
    """(layer, weight) of a Flax variable, e.g. decoder_2/bn_0/var -> ('depth_8_bn', 'moving_variance')."""
    level, *layer = slot.module
    if level == "head":
        return head, slot.leaf
    kind, index = level.split("_")
    op, i = layer[0].split("_")
    if kind == "encoder":
        block = 2 * int(index) + int(i)
    else:  # decoder blocks follow the encoder's 2*depth, deepest decoder level first
        block = 2 * layout.depth + 2 * (layout.depth - 2 - int(index)) + int(i)
    return f"depth_{block}_{op}", _LEAF_NAMES[(op, slot.leaf)]


def read_keras_h5(path: str | Path, num_classes: int | None = None) -> tuple[dict, dict, dict]:
    """Convert a published-format Keras .h5 file: returns (variables as numpy float32, model_config, metadata) of
    the 'keras' variant. ``num_classes``: when given, a head with another number of outputs is refused."""
    path = Path(path).expanduser()
    layers = _read_layers(path)
    head = _head_layer(layers, path)
    layout = _layout(layers, head, path, num_classes)
    slots = variable_slots(layout)
    names = {slot: keras_name(slot, layout, head) for slot in slots}
    used = set(names.values())
    used_layers = {layer for layer, _ in used}
    for slot, (layer, weight) in names.items():
        if layer not in layers or weight not in layers[layer]:
            raise InteropError(f"{path}: weight {layer}/{weight} of the published layout is missing")
        shape = layers[layer][weight].shape
        if shape != slot.shape:
            raise InteropError(f"{path}: {layer}/{weight} has shape {shape}; the published layout needs {slot.shape}")
    for layer, weights in layers.items():
        extra = [w for w in weights if (layer, w) not in used]
        if layer not in used_layers or extra:
            raise InteropError(f"{path}: unexpected weights in layer {layer!r} ({extra or list(weights)})")
    arrays = {slot: layers[layer][weight] for slot, (layer, weight) in names.items()}
    for slot, (layer, weight) in names.items():
        check_weight_values(f"{layer}/{weight}", arrays[slot], path)
    metadata = {"source": str(path.resolve()), "source_format": "keras_h5", "head_layer": head}
    return assemble(slots, arrays), layout.model_config(), metadata
