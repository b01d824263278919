"""A fine-tuning config's test set, evaluated: the evaluation network of ``config.eval`` (as the network's spec
builds it, e.g. UNet++'s pruning level and mode) over the test volumes of
:class:`~genesis_jax.data.task_data.TaskData` by sliding window, or over its test crops / candidates. Fine-tuning (after training) and ``genesis-jax evaluate`` call
:func:`evaluate_test_set`; the metrics themselves are :mod:`genesis_jax.evaluation.evaluate`'s.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from genesis_jax.data.task_data import TaskData
from genesis_jax.evaluation.evaluate import evaluate_classification, evaluate_segmentation_arrays, evaluate_volumes
from genesis_jax.evaluation.metric_table import metric_names
from genesis_jax.evaluation.sliding_window import SlidingWindow, slicewise
from genesis_jax.models import build_model, contract


def eval_model_config(model_config: dict[str, Any], eval_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The network used for evaluation, as its spec derives it from ``config.eval`` (UNet++: ``eval.prune_level``
    and ``eval.mode``); it runs the trained variables unchanged."""
    return contract(model_config).evaluation_config(eval_config)


def evaluate_test_set(
    config: ml_collections.ConfigDict,
    model_config: dict[str, Any],
    variables: Any,
    data: TaskData,
    keep_probabilities: bool = False,
) -> dict[str, Any]:
    """Evaluate ``variables`` on the test set of ``data`` with the evaluation network of ``config.eval`` (its spec's
    evaluation config). With ``keep_probabilities`` segmentation results carry 'probabilities' per volume."""
    model = build_model(eval_model_config(model_config, config.eval))
    predict = model.apply
    batch = int(config.eval.batch_size)
    metrics = metric_names(config.task, config.eval.get("metrics"))  # the metric table validation uses too
    if config.task == "classification":
        return evaluate_classification(predict, variables, *data.test_arrays, batch, metrics) if data.test_arrays \
            else {}
    if data.test_volumes:
        window = tuple(config.eval.window) if config.eval.get("window") else tuple(config.input_shape[:-1])
        if len(window) == 2:  # a 2D network over 3D volumes: axial slices
            predict, window = slicewise(predict), (*window, 1)
        sliding = SlidingWindow(predict, window, config.eval.overlap, batch, config.eval.blend,
                                num_classes=int(model_config.get("num_classes", 1)))
        return evaluate_volumes(sliding, variables, data.test_volumes, config.eval.threshold, keep_probabilities,
                                progress=config.logging.progress, class_names=dict(config.get("labels") or {}),
                                metrics=metrics, largest_component=bool(config.eval.get("largest_component", False)),
                                overlay_class=config.eval.get("overlay_class") or None)
    if data.test_arrays is not None:
        return evaluate_segmentation_arrays(predict, variables, *data.test_arrays, batch, metrics)
    return {}
