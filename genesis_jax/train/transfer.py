"""Transfer learning: initialise a target-task network from pre-trained Genesis weights, or from scratch.

The source variables come from :func:`genesis_jax.train.checkpointing.load_init_weights` (a weights directory,
e.g. imported published weights, or a pre-training / fine-tuning workdir).

What is transferred (Models Genesis, thesis appendix 2 and the published READMEs):
* segmentation: the whole encoder-decoder; the 1^n head (``head`` of the Genesis U-Net, ``head_{j}`` of UNet++) is
  new, or kept with ``keep_head=True`` (as the published nodule-segmentation notebook does);
* classification (``GenesisClassifier``): the encoder (``encoder_*`` into ``backbone/encoder_*``); global average
  pooling, Dense 1024 + ReLU and Dense n are new.
Every target parameter and BatchNorm statistic is either loaded (same path, same shape) or initialised fresh, and
every source array is either used or reported unused; :class:`TransferReport` lists all three and is logged. A
shape mismatch raises a :class:`TransferError` naming the parameter and both shapes.

Also here: the optimiser parameter groups that transfer implies (frozen encoder for a linear probe, a lower learning
rate for transferred layers) and the scratch baselines' kernel initialisers (Keras 'uniform', Glorot, He).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import jax
import numpy as np
import optax
from flax import traverse_util

from genesis_jax.models.initializers import KERNEL_INITIALIZERS

Task = Literal["segmentation", "classification"]
log = logging.getLogger(__name__)



class TransferError(ValueError):
    """Pre-trained weights that do not fit the target network; the message names the parameter."""


@dataclass
class TransferReport:
    """What an initialisation did, path by path ('collection/module/.../leaf')."""

    source: str
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def loaded_params(self) -> set[str]:
        """Paths inside the ``params`` collection (without the collection prefix) that were loaded."""
        return {p.split("/", 1)[1] for p in self.loaded if p.startswith("params/")}

    def lines(self) -> list[str]:
        out = [(f"initialisation from {self.source}: {len(self.loaded)} arrays loaded, {len(self.fresh)} new, "
                f"{len(self.unused)} source arrays not used")]
        out += [f"  loaded  {p}" for p in self.loaded]
        out += [f"  new     {p}" for p in self.fresh]
        out += [f"  unused  {p}" for p in self.unused]
        return out

    def log(self, logger: logging.Logger = log) -> None:
        for line in self.lines():
            logger.info(line)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "fresh": self.fresh, "unused": self.unused}


def _is_head(path: str) -> bool:
    first = path.split("/", 1)[0]
    return first == "head" or first.startswith("head_")


def is_encoder_path(path: str) -> bool:
    """Whether a parameter path (inside a collection) belongs to the encoder: ``encoder_*`` of the Genesis U-Net
    (also under ``backbone/``), or the first column ``X_{i}_0`` of UNet++."""
    parts = path.split("/")
    first = parts[1] if parts[0] == "backbone" and len(parts) > 1 else parts[0]
    return first.startswith("encoder_") or (first.startswith("X_") and first.endswith("_0"))


def _source_candidates(path: str, task: Task) -> list[str]:
    """Source paths a target path may be loaded from, in order."""
    if task == "classification":
        if path.startswith("backbone/"):
            inner = path[len("backbone/"):]
            return [path, inner] if is_encoder_path(inner) else []
        return []  # the classification head is always new
    return [path]


def transfer_variables(
    target: Mapping[str, Any],
    source: Mapping[str, Any],
    task: Task = "segmentation",
    keep_head: bool = False,
    source_name: str = "pre-trained weights",
) -> tuple[dict[str, Any], TransferReport]:
    """Fill ``target`` (freshly initialised variables of the target network) from ``source`` variables.

    Returns the new variables (numpy/jax arrays as given) and the report. Raises TransferError on a shape mismatch.
    """
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
    flat_target = traverse_util.flatten_dict(dict(target), sep="/")
    flat_source = traverse_util.flatten_dict(dict(source), sep="/")
    report = TransferReport(source=source_name)
    used: set[str] = set()
    out: dict[str, Any] = {}
    # parameters first, so a mismatch is reported on the parameter rather than on its BatchNorm statistics
    order = sorted(flat_target, key=lambda k: (not k.startswith("params/"), k))
    for full_path in order:
        value = flat_target[full_path]
        collection, path = full_path.split("/", 1)
        out[full_path] = value
        if task == "segmentation" and _is_head(path) and not keep_head:
            report.fresh.append(full_path)
            continue
        for candidate in _source_candidates(path, task):
            src_key = f"{collection}/{candidate}"
            if src_key not in flat_source:
                continue
            src = flat_source[src_key]
            if tuple(np.shape(src)) != tuple(np.shape(value)):
                raise TransferError(
                    f"{source_name}: parameter {src_key} has shape {tuple(np.shape(src))} but the target network's "
                    f"{full_path} has shape {tuple(np.shape(value))} (different width, depth, channels or classes?)"
                )
            out[full_path] = np.asarray(src, dtype=np.asarray(value).dtype)
            used.add(src_key)
            report.loaded.append(full_path)
            break
        else:
            report.fresh.append(full_path)
    report.unused = sorted(set(flat_source) - used)
    if not report.loaded:
        raise TransferError(
            f"{source_name}: no parameter of the target network was found in the source (target starts with "
            f"{sorted(flat_target)[:3]}, source with {sorted(flat_source)[:3]}): not weights for this network"
        )
    return traverse_util.unflatten_dict(out, sep="/"), report


def scratch_model_config(model_config: Mapping[str, Any], init: str) -> dict[str, Any]:
    """The model config with ``kernel_init`` set for a scratch baseline ('uniform' = Keras RandomUniform(+-0.05),
    'glorot_uniform' = Xavier, 'he_uniform' = MSRA, ...)."""
    if init not in KERNEL_INITIALIZERS:
        raise ValueError(f"scratch init {init!r} unknown; choose one of {sorted(KERNEL_INITIALIZERS)}")
    cfg = dict(model_config)
    cfg["kernel_init"] = init
    return cfg


def parameter_groups(params: Any, transferred: set[str], freeze_encoder: bool = False) -> Any:
    """A pytree of labels for ``optax.multi_transform``: 'frozen' (encoder of a linear probe), 'transferred'
    (loaded from the source) or 'new'."""
    flat = traverse_util.flatten_dict(params, sep="/")
    labels = {}
    for path in flat:
        if freeze_encoder and is_encoder_path(path):
            labels[path] = "frozen"
        elif path in transferred:
            labels[path] = "transferred"
        else:
            labels[path] = "new"
    if freeze_encoder and "frozen" not in labels.values():
        raise TransferError("freeze_encoder: the network has no encoder parameters (encoder_* or X_i_0) to freeze")
    return traverse_util.unflatten_dict(labels, sep="/")


def group_scaling(labels: Any, transferred_lr_scale: float = 1.0) -> optax.GradientTransformation:
    """Scales updates per group after the optimiser: transferred layers by ``transferred_lr_scale`` (their
    effective learning rate is lr * scale), frozen ones to zero, new ones unchanged."""
    return optax.multi_transform(
        {"new": optax.identity(), "transferred": optax.scale(transferred_lr_scale), "frozen": optax.set_to_zero()},
        labels,
    )


def count_group_sizes(params: Any, labels: Any) -> dict[str, int]:
    """Number of scalars per group (for the log)."""
    sizes: dict[str, int] = {}
    for p, label in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
        sizes[label] = sizes.get(label, 0) + int(np.size(p))
    return sizes
