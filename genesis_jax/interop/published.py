"""One entry point for a published weights file of either framework: ``read_published`` (numpy variables, model
config, metadata: what the converter writes) and ``load_published`` (a ready model and its variables). A PyTorch file
holding ``network_weights`` is an nnU-Net / nnssl checkpoint (``genesis_jax.interop.nnunet``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genesis_jax.interop.keras_h5 import read_keras_h5
from genesis_jax.interop.mapping import InteropError
from genesis_jax.interop.nnunet import is_nnunet_checkpoint, read_nnunet_checkpoint
from genesis_jax.interop.pytorch import load_torch_file, read_pytorch_checkpoint
from genesis_jax.models import build_model

PYTORCH_SUFFIXES = (".pt", ".pth", ".tar")
KERAS_SUFFIXES = (".h5", ".hdf5")


def published_format(path: str | Path) -> str:
    """'pytorch' or 'keras_h5' from the file name; an InteropError for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in PYTORCH_SUFFIXES:
        return "pytorch"
    if suffix in KERAS_SUFFIXES:
        return "keras_h5"
    raise InteropError(
        f"{path}: unknown weights format {suffix!r}; expected a PyTorch checkpoint ({', '.join(PYTORCH_SUFFIXES)}) "
        f"or a Keras HDF5 file ({', '.join(KERAS_SUFFIXES)})"
    )


def read_published(path: str | Path, num_classes: int | None = None) -> tuple[dict, dict, dict]:
    """(variables as numpy float32, model_config, metadata) of a published .pt ('pytorch' variant) or .h5
    ('keras' variant) file; ``num_classes`` given: a head with another class count is refused."""
    if published_format(path) == "keras_h5":
        return read_keras_h5(path, num_classes=num_classes)
    path = Path(path).expanduser()
    checkpoint = load_torch_file(path)
    if not is_nnunet_checkpoint(checkpoint):
        return read_pytorch_checkpoint(checkpoint, path, num_classes)
    variables, model_config, metadata = read_nnunet_checkpoint(checkpoint, path)
    if num_classes is not None and model_config["num_classes"] != num_classes:
        raise InteropError(f"{path}: the segmentation head has {model_config['num_classes']} output(s), but "
                           f"{num_classes} were expected")
    return variables, model_config, metadata


def load_published(path: str | Path, num_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The published network and its weights, ready to run: ``model.apply(variables, x)`` with ``x`` of shape
    (N, X, Y, Z, 1) (sizes divisible by 8) returns the sigmoid output (N, X, Y, Z, num_classes) (an nnU-Net / nnssl
    checkpoint gives its ResEnc or plain U-Net, returning logits, see ``genesis_jax.interop.nnunet``); no mutable
    collection is needed (the 'pytorch' variant normalises with batch statistics, as the published model does,
    without updating the carried running statistics)."""
    variables, model_config, _ = read_published(path, num_classes=num_classes)
    return build_model(model_config), jax.tree.map(jnp.asarray, variables)
