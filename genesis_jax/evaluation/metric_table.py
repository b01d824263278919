"""The one metric table of fine-tuning validation and test evaluation: a metric is one function of what a set
collected (:class:`Collected`) plus one line in :data:`METRICS`; ``config.eval.metrics`` picks which are reported
(default: :data:`DEFAULT_METRICS` of the task). ``genesis_jax.train.finetune`` (validation, ``val_<name>``) and
:mod:`genesis_jax.evaluation.evaluate` (the test set's ``set`` figures) both compute through
:func:`compute_metrics`, so a metric added here is reported by both.

Per-volume figures of whole-volume tests (Dice, IoU, HD95 of each volume, in mm) stay
:func:`genesis_jax.evaluation.evaluate.segmentation_volume_metrics`: they need a volume's spacing, not a set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from genesis_jax.evaluation.metrics import SegmentationAccumulator, roc_auc

TASKS = ("segmentation", "classification")


class Collected:
    """What a set's metrics read, streamed batch by batch: for segmentation the confusion counts and soft Dice of
    :class:`~genesis_jax.evaluation.metrics.SegmentationAccumulator`; for classification the labels and the
    network's probabilities (host arrays)."""

    def __init__(self) -> None:
        self.segmentation = SegmentationAccumulator()
        self._labels: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    def add_segmentation(self, labels: Any, probabilities: Any) -> None:
        self.segmentation.update(labels, probabilities)

    def add_classification(self, labels: Any, probabilities: Any) -> None:
        probs = np.asarray(probabilities)
        self._probs.append(probs.reshape(len(probs), -1))
        self._labels.append(np.asarray(labels).reshape(len(probs), -1))

    def classification(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positive or not, positive-class score, predicted class == true class) per example: one sigmoid output
        scores itself; a softmax's class 1 is the positive one (labels: ids or one-hot)."""
        probs, labels = np.concatenate(self._probs), np.concatenate(self._labels)
        if probs.shape[-1] == 1:
            truth = labels[:, 0] > 0.5
            return truth, probs[:, 0], (probs[:, 0] > 0.5) == truth
        ids = labels[:, 0].astype(int) if labels.shape[1] == 1 else labels.argmax(-1)
        return ids == 1, probs[:, 1], probs.argmax(-1) == ids


@dataclasses.dataclass(frozen=True)
class Metric:
    task: str  # which task's sets it reads
    compute: Callable[[Collected], float]


def _segmentation(name: str) -> Metric:
    return Metric("segmentation", lambda c: c.segmentation.result()[name])


def _auc(c: Collected) -> float:
    truth, score, _ = c.classification()
    try:
        return roc_auc(truth, score)
    except ValueError:  # one class only in this set: undefined
        return float("nan")


METRICS: dict[str, Metric] = {
    "mean_iou": _segmentation("mean_iou"),  # the published Keras mean IoU over ten thresholds
    "iou": _segmentation("iou"),
    "dice": _segmentation("dice"),
    "soft_dice": _segmentation("soft_dice"),
    "auc": Metric("classification", _auc),
    "accuracy": Metric("classification", lambda c: float(np.mean(c.classification()[2]))),
}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "segmentation": ("mean_iou", "iou", "dice", "soft_dice"),
    "classification": ("auc", "accuracy"),
}


def metric_names(task: str, chosen: Sequence[str] | None = None) -> tuple[str, ...]:
    """``chosen`` (``config.eval.metrics``), else the task's defaults; a name of another task or none raises."""
    names = tuple(chosen) if chosen else DEFAULT_METRICS[task]
    for name in names:
        if name not in METRICS or METRICS[name].task != task:
            valid = sorted(n for n, m in METRICS.items() if m.task == task)
            raise ValueError(f"config.eval.metrics: {name!r} is not a {task} metric; choose from {valid}")
    return names


def compute_metrics(names: Sequence[str], collected: Collected) -> dict[str, float]:
    return {name: float(METRICS[name].compute(collected)) for name in names}
