"""The published PyTorch checkpoint (``Genesis_Chest_CT.pt``, ``pytorch/unet3d.py``'s ``UNet3D``) in and out.

Reads ``{'epoch', 'state_dict', 'optimizer_state_dict'}`` or a bare state_dict, with or without the DataParallel
``module.`` prefix, through ``torch.load(weights_only=True)`` (no arbitrary unpickling). Layouts: ``Conv3d``
weights (O, I, kD, kH, kW) become Flax kernels (kD, kH, kW, I, O); ``ConvTranspose3d`` weights (I, O, kD, kH, kW)
become (kD, kH, kW, I, O) flipped along the three spatial axes (PyTorch's transposed convolution is the adjoint of
its correlation, Flax's ``ConvTranspose`` with ``transpose_kernel=False`` is not); BatchNorm weight/bias/running
statistics become scale/bias and batch_stats mean/var (``num_batches_tracked`` is ignored on import and written
as 0 on export). torch is imported only when a .pt file is read or written.

Both variants export. A 'keras'-variant U-Net (what the fine-tuning configs train) up-samples by nearest neighbour
without weights; its file gets the UNet3D layout with each ``up_conv`` set to the transposed convolution that IS
nearest-neighbour up-sampling (identity channel map on every 2x2x2 tap, zero bias), and the checkpoint dict records
``'genesis_jax': {'variant': 'keras', 'batchnorm': {...}}``: in PyTorch, build UNet3D with ``nn.BatchNorm3d(c,
eps=1e-3, momentum=0.01)`` in place of ``ContBatchNorm3d`` and call ``model.eval()`` (the Keras inference: running
statistics), and ``load_state_dict(checkpoint['state_dict'])`` reproduces the Flax outputs. Reading such a file back
gives the 'keras' variant again (its up-convolutions checked to be nearest-neighbour).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from genesis_jax.interop.mapping import (
    PUBLISHED_DEPTH,
    InteropError,
    Slot,
    UNetLayout,
    assemble,
    check_weight_values,
    gather,
    variable_slots,
)
from genesis_jax.models.unet import BATCHNORM_SETTINGS
from genesis_jax.workdir import write_file_atomically

INSTALL_HINT = "pip install 'genesis-jax[torch]'"
DATA_PARALLEL_PREFIX = "module."
_FIRST_CONV = "down_tr64.ops.0.conv1.weight"
_HEAD_CONV = "out_tr.final_conv.weight"
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
RECORD_KEY = "genesis_jax"  # the checkpoint dict's entry saying which variant the file holds (keras exports)


def variant_record(variant: str) -> dict[str, Any]:
    """What a .pt of ``variant`` records about the network PyTorch must build to reproduce it."""
    _, momentum, epsilon = BATCHNORM_SETTINGS[variant]
    statistics = "batch" if variant == "pytorch" else "running"
    return {"variant": variant, "batchnorm": {"eps": epsilon, "momentum": round(1.0 - momentum, 6),
                                              "statistics_at_inference": statistics},
            "up_conv": "learned" if variant == "pytorch" else "nearest-neighbour (fixed identity taps)"}


def _nearest_up(slot: Slot) -> np.ndarray:
    """The Flax value of an up-sampling slot that makes the transposed convolution nearest-neighbour up-sampling."""
    if slot.leaf == "bias":
        return np.zeros(slot.shape, np.float32)
    fan_in, fan_out = slot.shape[-2:]
    return np.broadcast_to(np.eye(fan_in, fan_out, dtype=np.float32), slot.shape).copy()


def import_torch() -> Any:
    """torch, or an InteropError saying which extra installs it."""
    try:
        import torch
    except ImportError:
        raise InteropError(f"reading or writing PyTorch .pt files needs PyTorch: {INSTALL_HINT}") from None
    return torch


def published_name(slot: Slot) -> str:
    """The UNet3D state_dict key of a Flax variable, e.g. encoder_0/bn_1/mean -> down_tr64.ops.1.bn1.running_mean."""
    level, *layer = slot.module
    if level == "head":
        return f"out_tr.final_conv.{_LEAF_NAMES[slot.leaf]}"
    kind, index = level.split("_")
    block = f"{'down' if kind == 'encoder' else 'up'}_tr{64 << int(index)}"
    (layer_name,) = layer
    if layer_name == "up":
        module = "up_conv"
    else:
        op, i = layer_name.split("_")
        module = f"ops.{i}.{'conv1' if op == 'conv' else 'bn1'}"
    return f"{block}.{module}.{_LEAF_NAMES[slot.leaf]}"


def _to_flax(slot: Slot, array: np.ndarray) -> np.ndarray:
    if not slot.is_kernel:
        return array
    if slot.is_transposed_conv:  # (I, O, kD, kH, kW) -> (kD, kH, kW, I, O), spatially flipped
        return np.ascontiguousarray(array.transpose(2, 3, 4, 0, 1)[::-1, ::-1, ::-1])
    return np.ascontiguousarray(array.transpose(2, 3, 4, 1, 0))  # (O, I, k, k, k) -> (k, k, k, I, O)


def _to_torch(slot: Slot, array: np.ndarray) -> np.ndarray:
    if not slot.is_kernel:
        return array
    if slot.is_transposed_conv:
        return np.ascontiguousarray(array[::-1, ::-1, ::-1].transpose(3, 4, 0, 1, 2))
    return np.ascontiguousarray(array.transpose(4, 3, 0, 1, 2))


def _torch_shape(slot: Slot) -> tuple[int, ...]:
    if not slot.is_kernel:
        return slot.shape
    *spatial, fan_in, fan_out = slot.shape
    return (fan_in, fan_out, *spatial) if slot.is_transposed_conv else (fan_out, fan_in, *spatial)


def _numpy_scalar_globals() -> list[Any]:
    """The numpy reconstructors a checkpoint's plain numbers may pickle (nnU-Net logs numpy floats): data only, no
    code; under the name numpy 1.x wrote (``numpy.core``) as well as numpy 2's."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def load_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of a checkpoint (tensors, containers, numbers, numpy scalars; no pickled
    code runs); an InteropError naming the file when it cannot be read."""
    torch = import_torch()
    if not path.is_file():
        raise InteropError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch reports any unpickling failure as "Weights only load failed"; only "Unsupported global" means a
        # well-formed pickle of Python objects (random bytes give "Unsupported operand")
        if "Unsupported global" in str(err):
            raise InteropError(
                f"{path}: holds pickled Python objects besides tensors (e.g. a whole nn.Module), which are not "
                "unpickled for safety (torch.load(weights_only=True)); save model.state_dict() instead"
            ) from None
        raise InteropError(f"{path}: cannot read the PyTorch checkpoint ({path.stat().st_size} bytes; not a "
                           "torch.save file, or truncated or damaged)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        size = path.stat().st_size
        raise InteropError(
            f"{path}: cannot read the PyTorch checkpoint ({size} bytes; truncated, damaged or not a torch.save "
            f"file): {(str(err).strip().splitlines() or [type(err).__name__])[0]}"
        ) from None


def _state_dict(checkpoint: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The unprefixed state_dict of a loaded checkpoint and provenance facts about it."""
    torch = import_torch()
    info: dict[str, Any] = {}
    if not isinstance(checkpoint, Mapping):
        raise InteropError(f"{path}: holds a {type(checkpoint).__name__}, not a checkpoint dict or a state_dict")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        info["checkpoint_keys"] = sorted(str(k) for k in checkpoint)
        if isinstance(checkpoint.get("epoch"), int):
            info["epoch"] = checkpoint["epoch"]
        state = checkpoint["state_dict"]
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        keys = ", ".join(repr(k) for k in list(checkpoint)[:8])
        raise InteropError(
            f"{path}: neither a bare state_dict nor a checkpoint with a 'state_dict' entry (top-level keys: {keys})"
        )
    stripped = {}
    for key, value in state.items():
        name = str(key)
        while name.startswith(DATA_PARALLEL_PREFIX):
            name = name[len(DATA_PARALLEL_PREFIX) :]
            info["stripped_prefix"] = DATA_PARALLEL_PREFIX
        if name in stripped:
            raise InteropError(f"{path}: key {name!r} appears both with and without the 'module.' prefix")
        stripped[name] = value
    return stripped, info


def _layout(state: Mapping[str, Any], path: Path, num_classes: int | None) -> UNetLayout:
    """Widths, depth and class count read from the anchor tensors; a file without them is another network."""
    for anchor in (_FIRST_CONV, _HEAD_CONV):
        if anchor not in state:
            sample = ", ".join(repr(k) for k in list(state)[:5])
            raise InteropError(
                f"{path}: not a Models Genesis UNet3D checkpoint: it has no {anchor!r} (its first keys: {sample})"
            )
        if tuple(state[anchor].shape)[2:] != ((3, 3, 3) if anchor == _FIRST_CONV else (1, 1, 1)):
            raise InteropError(
                f"{path}: {anchor!r} has shape {tuple(state[anchor].shape)}, not a 3D UNet3D convolution weight"
            )
    width, in_channels = tuple(state[_FIRST_CONV].shape)[:2]
    found_classes = int(state[_HEAD_CONV].shape[0])
    if num_classes is not None and found_classes != num_classes:
        raise InteropError(
            f"{path}: the head {_HEAD_CONV!r} has shape {tuple(state[_HEAD_CONV].shape)}, i.e. {found_classes} "
            f"output class(es), but {num_classes} were expected"
        )
    depth = sum(1 for d in range(16) if f"down_tr{64 << d}.ops.0.conv1.weight" in state) or PUBLISHED_DEPTH
    return UNetLayout("pytorch", int(width), depth, int(in_channels), found_classes)


def _check_keys(state: Mapping[str, Any], names: dict[str, Slot], path: Path, layout: UNetLayout) -> None:
    """Refuse a state_dict whose keys or shapes differ from UNet3D's, naming the first difference."""
    what = (
        f"the UNet3D layout (base width {layout.base_width}, depth {layout.depth}, "
        f"{layout.in_channels} input channel(s), {layout.num_classes} class(es))"
    )
    missing = [name for name in names if name not in state]
    if missing:
        raise InteropError(f"{path}: key {missing[0]!r} of {what} is missing ({len(missing)} missing in all)")
    unexpected = [k for k in state if k not in names and not k.endswith(".num_batches_tracked")]
    if unexpected:
        raise InteropError(
            f"{path}: unexpected key {unexpected[0]!r} for {what} ({len(unexpected)} unexpected in all)"
        )
    for name, slot in names.items():
        shape = tuple(state[name].shape)
        if shape != _torch_shape(slot):
            raise InteropError(f"{path}: {name!r} has shape {shape}; {what} needs {_torch_shape(slot)}")


def read_pytorch(path: str | Path, num_classes: int | None = None) -> tuple[dict, dict, dict]:
    """Convert a published-format .pt file: returns (variables as numpy float32, model_config, metadata).

    ``num_classes``: when given, a head with another number of outputs is refused.
    """
    path = Path(path).expanduser()
    return read_pytorch_checkpoint(load_torch_file(path), path, num_classes)


def read_pytorch_checkpoint(checkpoint: Any, path: Path, num_classes: int | None = None) -> tuple[dict, dict, dict]:
    """:func:`read_pytorch` of a checkpoint already loaded from ``path``."""
    torch = import_torch()
    state, info = _state_dict(checkpoint, path)
    layout = _layout(state, path, num_classes)
    slots = variable_slots(layout)
    names = {published_name(slot): slot for slot in slots}
    _check_keys(state, names, path, layout)
    record = checkpoint.get(RECORD_KEY) if isinstance(checkpoint, Mapping) else None
    keras = isinstance(record, Mapping) and record.get("variant") == "keras"
    arrays = {}
    for name, slot in names.items():
        original = state[name]
        tensor = original.detach().to(device="cpu", dtype=torch.float32)
        # the dtype is judged before the float32 cast (torch dtypes have no numpy twin for bfloat16)
        check_weight_values(repr(name), tensor.numpy(), path, np.float32 if original.is_floating_point() else
                            str(original.dtype).removeprefix("torch."))
        arrays[slot] = _to_flax(slot, tensor.numpy())
    metadata = {"source": str(path.resolve()), "source_format": "pytorch", **info}
    if keras:  # a keras-variant export: its up-convolutions must be the nearest-neighbour ones, then dropped
        for slot in slots:
            if slot.is_transposed_conv and not np.array_equal(arrays[slot], _nearest_up(slot)):
                raise InteropError(f"{path}: records the 'keras' variant, but {published_name(slot)!r} is not a "
                                   "nearest-neighbour up-sampling")
        layout = dataclasses.replace(layout, variant="keras")
        slots = variable_slots(layout)
        metadata["exported_variant"] = "keras"
    return assemble(slots, arrays), layout.model_config(), metadata


def write_pytorch(
    variables: Mapping[str, Any],
    model_config: Mapping[str, Any],
    path: str | Path,
    *,
    epoch: int = 0,
    module_prefix: bool = False,
    bare: bool = False,
    source: str | None = None,
) -> Path:
    """Write the variables of a Genesis U-Net as a state_dict in the published UNet3D's layout.

    By default the file is ``{'epoch': epoch, 'state_dict': ...}`` like the published checkpoint, keys without
    the ``module.`` prefix (``module_prefix=True`` adds it, as a DataParallel model saves); ``bare=True`` writes
    the state_dict alone. ``source`` names where the variables came from in error messages. A 'keras'-variant
    network is written with nearest-neighbour up-convolutions and its variant record (see the module docstring);
    it needs the checkpoint dict, so ``bare`` is refused for it.
    """
    torch = import_torch()
    path = Path(path).expanduser()
    source = source or str(path)
    layout = UNetLayout.from_model_config(model_config, source)
    if layout.variant != "pytorch" and bare:
        raise InteropError(f"{source}: a {layout.variant!r}-variant U-Net needs the checkpoint dict's variant record "
                           "(its BatchNorm differs from the published UNet3D's); export it without --bare-state-dict")
    arrays = gather(variables, variable_slots(layout), source)
    slots = variable_slots(dataclasses.replace(layout, variant="pytorch"))  # the UNet3D layout, up_conv included
    arrays.update({slot: _nearest_up(slot) for slot in slots if slot.is_transposed_conv and slot not in arrays})
    prefix = DATA_PARALLEL_PREFIX if module_prefix else ""
    state: dict[str, Any] = {}
    for slot in slots:
        name = published_name(slot)
        state[prefix + name] = torch.from_numpy(_to_torch(slot, np.asarray(arrays[slot], np.float32)).copy())
        if slot.leaf == "var":  # BatchNorm's last buffer; UNet3D's strict load_state_dict expects it
            state[prefix + name.replace("running_var", "num_batches_tracked")] = torch.tensor(0, dtype=torch.long)
    checkpoint = {"epoch": int(epoch), "state_dict": state}
    if layout.variant != "pytorch":
        checkpoint[RECORD_KEY] = variant_record(layout.variant)
    # Serialised in memory first: torch.save on a full disk fails with an opaque zip-writer message; the bytes then
    # go through a temporary file renamed into place, so a failure or a kill leaves nothing at ``path``.
    buffer = io.BytesIO()
    torch.save(state if bare else checkpoint, buffer)
    return write_file_atomically(path, buffer.getbuffer())
