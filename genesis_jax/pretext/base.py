"""The pretext protocol: what one self-supervised pre-training task supplies to ``genesis_jax.train.pretrain``.

After big_vision's uvim tasks (a task = input preparation on the device, a loss, outputs for previews), a pretext
is ONE module under ``genesis_jax/pretext/`` with two functions, registered by name in
:mod:`genesis_jax.pretext.registry`:

    check_config(checker, pretext_config, config) -> None   # field checks, one line naming the field
    build(config, transform=None) -> Pretext               # the task built for one config

A :class:`Pretext` holds pure JAX functions the training steps jit: ``prepare(key, batch) -> (inputs, targets)``
(a batch of clean cubes becomes network inputs and targets ON THE DEVICE: deformations, slicing, masks), ``clean``
(the undeformed inputs and their targets: the identity check of the quality gate), ``loss(targets, output)`` of
one head, ``scored(targets) -> (image, weights)`` (which voxels the loss and the gate score: all, or a mask), and
the preview's column titles and panels. ``targets`` is any pytree the pretext's own functions read (an array, or
``{'image', 'mask'}`` for masked image modelling), so the steps carry a loss mask without knowing it.

A pretext may own trainable parameters (``params``: their initial values by name, e.g. masked image modelling's
learned mask token). Its ``prepare`` and ``clean`` then take them as a third argument,
``prepare(key, batch, params)``; the train step differentiates through ``prepare`` and the network's optimiser
updates them (``genesis_jax.train.state.TrainState.task_params``); checkpoints keep them and resume them exactly;
they are never part of the exported network weights (``weights/`` and ``--init`` see the network alone).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

Batch = Mapping[str, jax.Array]
PrepareFn = Callable[..., tuple[jax.Array, Any]]  # (key, batch[, params]) -> (inputs, targets)
PanelsFn = Callable[[np.ndarray, np.ndarray, Any], Sequence[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class GateSettings:
    """The restoration quality gate's thresholds (``config.pretext.gate``): the scored error must be at most
    ``max_ratio`` x the batch-mean predictor's, and the identity error on clean inputs at most ``max_clean_mse``
    (None: not part of this pretext's gate)."""

    max_ratio: float = 0.7
    max_clean_mse: float | None = 0.005


@dataclasses.dataclass(frozen=True)
class Pretext:
    """One pretext task built for one config (``build(config)`` of a pretext module)."""

    name: str
    prepare: PrepareFn  # (key, clean batch[, params]) -> (inputs, targets): the training and validation pairs
    clean: PrepareFn  # (key, clean batch[, params]) -> (clean inputs, targets): what the gate's identity check feeds
    loss: Callable[[Any, jax.Array], jax.Array]  # loss(targets, output of one head) -> scalar
    scored: Callable[[Any], tuple[jax.Array, jax.Array | None]]  # targets -> (target image, weights or None = all)
    preview_columns: tuple[str, ...]  # the titles of the preview's columns
    preview_panels: PanelsFn  # (inputs, predictions, targets) on the host -> one array per column
    gate: GateSettings = GateSettings()
    scored_voxels: str = "all voxels"  # what ``scored`` weights, in words (the gate record says it)
    params: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)  # own trainable parameters, initial


def whole_image(targets: jax.Array) -> tuple[jax.Array, None]:
    """``scored`` of a pretext whose loss covers every voxel and whose targets are the image itself."""
    return targets, None


def gate_settings(pretext_config: Any, default: GateSettings = GateSettings()) -> GateSettings:
    """``config.pretext.gate`` (fields missing: the pretext's defaults) as :class:`GateSettings`."""
    gate = (pretext_config or {}).get("gate") or {}
    clean = gate.get("max_clean_mse", default.max_clean_mse)
    return GateSettings(max_ratio=float(gate.get("max_ratio", default.max_ratio)),
                        max_clean_mse=None if clean is None else float(clean))
