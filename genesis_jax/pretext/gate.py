"""The restoration quality gate: is a pre-trained network better than predicting a constant?

A restoration network that learned nothing still scores a small MSE on [0, 1] CT, because most voxels sit near the
mean. The gate compares, on the held-out validation batches (the same deformed batches the validation loss uses):

* ``restoration_mse``: the network's error on the voxels its pretext scores (all of them, or the masked ones);
* ``batch_mean_mse`` / ``image_mean_mse``: the error of predicting the batch's mean / each image's mean there;
* ``clean_identity_mse``: the network's error on CLEAN (undeformed, unmasked) inputs against themselves.

It passes when ``restoration_mse <= max_ratio * batch_mean_mse`` and (where the pretext's gate has one)
``clean_identity_mse <= max_clean_mse``. Pre-training logs the figures at every validation and records them in
``summary.json`` and the exported ``weights/metadata.json`` (``pretext_gate``); fine-tuning records its init's
record as ``init_gate``. :func:`warning_line` is the one line ``finetune --init``, ``evaluate`` and ``al`` print for
weights that failed the gate or record none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from genesis_jax.evaluation.metrics import mean_squared_error
from genesis_jax.models.weights import read_metadata
from genesis_jax.pretext.base import GateSettings

RECORD_KEY = "pretext_gate"  # in a pre-training run's weights/metadata.json and summary.json
INIT_RECORD_KEY = "init_gate"  # in a fine-tuning run's weights/metadata.json: the record of the weights it began from
FIGURES = ("restoration_mse", "batch_mean_mse", "image_mean_mse", "clean_identity_mse")


def batch_figures(predictions: jax.Array, image: jax.Array, weights: jax.Array | None) -> dict[str, jax.Array]:
    """One batch's restoration, batch-mean and per-image-mean MSE over the scored voxels (``weights``; None: all).
    Jit-able; every sample scores the same number of voxels, so the mean over equal batches is the set's."""
    w = jnp.ones(image.shape, jnp.float32) if weights is None else jnp.broadcast_to(
        jnp.asarray(weights, jnp.float32), image.shape)
    image = jnp.asarray(image, jnp.float32)
    axes = tuple(range(1, image.ndim))
    batch_mean = jnp.sum(w * image) / jnp.maximum(jnp.sum(w), 1.0)
    image_mean = jnp.sum(w * image, axes, keepdims=True) / jnp.maximum(jnp.sum(w, axes, keepdims=True), 1.0)
    return {
        "restoration_mse": mean_squared_error(image, predictions, w),
        "batch_mean_mse": mean_squared_error(image, jnp.broadcast_to(batch_mean, image.shape), w),
        "image_mean_mse": mean_squared_error(image, jnp.broadcast_to(image_mean, image.shape), w),
    }


def gate_record(figures: Mapping[str, float], settings: GateSettings, scored: str) -> dict[str, Any]:
    """The gate's verdict on the set's figures (:data:`FIGURES`): the figures, the thresholds, the ratio to the
    batch-mean predictor, which voxels were scored, and ``passed``."""
    restoration, batch_mean = float(figures["restoration_mse"]), float(figures["batch_mean_mse"])
    clean = float(figures["clean_identity_mse"])
    ratio = restoration / batch_mean if batch_mean > 0 else math.inf
    passed = ratio <= settings.max_ratio
    if settings.max_clean_mse is not None:
        passed = passed and clean <= settings.max_clean_mse
    return {**{k: float(figures[k]) for k in FIGURES}, "ratio_to_batch_mean": ratio, "scored": scored,
            "max_ratio": settings.max_ratio, "max_clean_mse": settings.max_clean_mse, "passed": bool(passed)}


def _why(record: Mapping[str, Any]) -> str:
    parts = [f"restoration MSE {record['restoration_mse']:.4g} = {record['ratio_to_batch_mean']:.3g} x the "
             f"batch-mean predictor's (gate <= {record['max_ratio']:g})"]
    if record.get("max_clean_mse") is not None:
        parts.append(f"clean identity MSE {record['clean_identity_mse']:.4g} (gate <= {record['max_clean_mse']:g})")
    return "; ".join(parts)


def warning_line(metadata: Mapping[str, Any], source: Any) -> str | None:
    """The one warning line for weights (their ``metadata.json``) that failed the quality gate or record none;
    None for weights that passed it, and for fine-tuned weights trained from scratch."""
    record = metadata.get(RECORD_KEY)
    what = "these pre-trained weights"
    if record is None and INIT_RECORD_KEY in metadata:  # fine-tuned weights: the gate of the weights they began from
        record = metadata[INIT_RECORD_KEY]
        if isinstance(record, Mapping) and record.get("init") == "scratch":
            return None
        what = "these weights were fine-tuned from pre-trained weights that"
        if record is None:
            return (f"warning: {source}: {what} record no restoration quality gate (nothing shows the pre-training "
                    "learned more than a constant)")
        return None if record.get("passed") else f"warning: {source}: {what} failed the restoration quality gate " \
                                                 f"({_why(record)})"
    if record is None and metadata.get("source") == "genesis_jax finetune":  # fine-tuned before the gate existed
        return (f"warning: {source}: these fine-tuned weights record no restoration quality gate of the weights "
                "they began from")
    if record is None:
        return (f"warning: {source}: {what} record no restoration quality gate (nothing shows they restore better "
                "than a constant predictor)")
    if record.get("passed"):
        return None
    return f"warning: {source}: {what} failed the restoration quality gate ({_why(record)})"


def weights_warning(path: Any) -> str | None:
    """:func:`warning_line` for the weights at ``path`` (a weights directory or a training workdir), read from
    their metadata alone: what ``finetune --init``, ``evaluate --weights`` and ``al`` print."""
    return warning_line(read_metadata(path), path)


def init_record(init: Any) -> dict[str, Any] | None:
    """What a fine-tuning run records as ``init_gate`` for its ``--init``: ``{'init': 'scratch'}`` for none, else
    the init weights' own record (their pre-training gate, or the one their own init recorded; None: no record)."""
    if not init or init == "scratch":
        return {"init": "scratch"}
    metadata = read_metadata(init)
    return metadata.get(RECORD_KEY, metadata.get(INIT_RECORD_KEY))
