"""Segmentation and classification metrics, including the exact metric behind the published NCS number.

Conventions: ``y_true`` holds binary labels (a voxel is foreground when its label is > 0.5), ``y_pred`` holds
probabilities, and a prediction is foreground when it is strictly greater than the threshold (``p > t``, as the
published Keras code binarises).

* :func:`soft_dice`: the published ``dice_coef`` (smooth 1, sums over the whole batch tensor); jit-able.
* :func:`confusion_counts` / :func:`mean_iou_from_counts` / :func:`keras_mean_iou`: the published Keras
  ``mean_iou``: for each threshold t in 0.5, 0.55, ..., 0.95 the TF1 ``tf.metrics.mean_iou`` (the mean over the two
  classes, background and foreground, of TP / (TP + FP + FN), taken over the classes whose denominator is non-zero)
  of a confusion matrix accumulated over every evaluated batch, then the mean over the ten thresholds.
* :func:`foreground_iou`, :func:`binary_dice`: plain overlap of the binarised prediction (threshold 0.5).
* :class:`SegmentationAccumulator`: all of the above streamed over batches or volumes, with 64-bit host counts.
* :func:`class_overlaps` / :class:`MultiClassAccumulator`: per-class Dice of a softmax (multi-class) network, its
  prediction the arg-max class.
* :func:`roc_auc`: area under the ROC curve (rank statistic; ties count one half, equal to the trapezoidal
  area of ``sklearn.metrics.roc_curve``).
* :func:`hd95`: the 95th-percentile symmetric Hausdorff distance between mask surfaces, in the units of
  ``spacing``, on the host with scipy distance transforms.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage, stats

# np.arange(0.5, 1.0, 0.05) in the published code: 0.5, 0.55, ..., 0.95 (ten thresholds).
MEAN_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def soft_dice(y_true: jax.Array, y_pred: jax.Array, smooth: float = 1.0) -> jax.Array:
    """``(2 * sum(y * p) + smooth) / (sum(y) + sum(p) + smooth)`` over the whole tensor (published ``dice_coef``)."""
    y = jnp.asarray(y_true, jnp.float32)
    p = jnp.asarray(y_pred, jnp.float32)
    return (2.0 * jnp.sum(y * p) + smooth) / (jnp.sum(y) + jnp.sum(p) + smooth)


def confusion_counts(
    y_true: jax.Array, y_pred: jax.Array, thresholds: Sequence[float] = MEAN_IOU_THRESHOLDS
) -> jax.Array:
    """Binary confusion matrices, one per threshold: int32 array (T, 2, 2) indexed [threshold, true, predicted].

    Jit-able; sum the results over batches (on the host in int64 for large data sets) to stream.
    """
    y = (jnp.asarray(y_true) > 0.5).reshape(-1)
    p = jnp.asarray(y_pred, jnp.float32).reshape(-1)
    t = jnp.asarray(thresholds, jnp.float32)[:, None]
    pred = p[None, :] > t  # (T, V)
    yi = y[None, :].astype(jnp.int32)
    pi = pred.astype(jnp.int32)
    tp = jnp.sum(yi * pi, axis=1)
    fn = jnp.sum(yi * (1 - pi), axis=1)
    fp = jnp.sum((1 - yi) * pi, axis=1)
    tn = y.size - tp - fn - fp
    return jnp.stack([jnp.stack([tn, fp], -1), jnp.stack([fn, tp], -1)], axis=1)


def _tf_mean_iou(cm: np.ndarray) -> float:
    """TF1 ``tf.metrics.mean_iou`` of one confusion matrix [true, pred]: classes with an empty denominator are left
    out of the mean; 0 when no class has one."""
    cm = np.asarray(cm, np.float64)
    diag = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - diag
    valid = denom > 0
    if not valid.any():
        return 0.0
    return float(np.sum(diag[valid] / denom[valid]) / valid.sum())


def mean_iou_from_counts(counts: np.ndarray) -> float:
    """The published metric from accumulated (T, 2, 2) confusion matrices: the mean over thresholds of the
    two-class mean IoU."""
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[1:] != (2, 2):
        raise ValueError(f"mean_iou_from_counts: expected counts of shape (T, 2, 2), got {counts.shape}")
    return float(np.mean([_tf_mean_iou(cm) for cm in counts]))


def keras_mean_iou(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The published Keras ``mean_iou`` on one set of predictions (for several batches use
    :class:`SegmentationAccumulator`, which streams the confusion matrix as the Keras metric does)."""
    return mean_iou_from_counts(np.asarray(confusion_counts(y_true, y_pred), np.int64))


def _binary_overlap(y_true: np.ndarray, y_pred: np.ndarray, threshold: float) -> tuple[int, int, int]:
    y = np.asarray(y_true) > 0.5
    p = np.asarray(y_pred) > threshold
    if y.shape != p.shape:
        raise ValueError(f"labels of shape {y.shape} and predictions of shape {p.shape} differ")
    return int(np.sum(y & p)), int(np.sum(y)), int(np.sum(p))


def foreground_iou(y_true: np.ndarray, y_pred: np.ndarray, threshold: float = 0.5) -> float:
    """|Y and P| / |Y or P| of the foreground; 1.0 when both are empty."""
    inter, ny, npred = _binary_overlap(y_true, y_pred, threshold)
    union = ny + npred - inter
    return 1.0 if union == 0 else inter / union


def binary_dice(y_true: np.ndarray, y_pred: np.ndarray, threshold: float = 0.5) -> float:
    """2 |Y and P| / (|Y| + |P|) of the binarised prediction; 1.0 when both are empty."""
    inter, ny, npred = _binary_overlap(y_true, y_pred, threshold)
    return 1.0 if ny + npred == 0 else 2.0 * inter / (ny + npred)


class SegmentationAccumulator:
    """Streams segmentation metrics over batches or volumes.

    ``update(y_true, y_pred)`` adds one batch; ``result()`` returns
    ``mean_iou`` (published Keras metric, streamed confusion matrices), ``iou`` (foreground IoU at 0.5 over
    everything seen), ``dice`` (binary Dice at 0.5 over everything seen) and ``soft_dice`` (the published
    ``dice_coef`` per batch, averaged over batches weighted by batch size, as Keras ``evaluate`` reports it).
    """

    def __init__(self, thresholds: Sequence[float] = MEAN_IOU_THRESHOLDS):
        if 0.5 not in thresholds:
            raise ValueError("SegmentationAccumulator: thresholds must include 0.5 (for IoU and Dice)")
        self.thresholds = tuple(thresholds)
        self._half = self.thresholds.index(0.5)
        self.counts = np.zeros((len(self.thresholds), 2, 2), np.int64)
        self._soft_dice_sum = 0.0
        self._samples = 0

    def update(self, y_true, y_pred, soft_dice_value: float | None = None) -> None:
        """Add a batch (leading axis = samples). ``soft_dice_value`` may be passed when already computed on device."""
        self.counts += np.asarray(confusion_counts(y_true, y_pred, self.thresholds), np.int64)
        n = int(np.shape(y_true)[0]) if np.ndim(y_true) else 1
        value = soft_dice(y_true, y_pred) if soft_dice_value is None else soft_dice_value
        self._soft_dice_sum += float(value) * n
        self._samples += n

    def result(self) -> dict[str, float]:
        (_, fp), (fn, tp) = self.counts[self._half]
        union = tp + fp + fn
        return {
            "mean_iou": mean_iou_from_counts(self.counts),
            "iou": 1.0 if union == 0 else float(tp / union),
            "dice": 1.0 if 2 * tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn)),
            "soft_dice": self._soft_dice_sum / max(self._samples, 1),
        }


def class_overlaps(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, 3) int64 [intersection, |true|, |predicted|] per class of two class-id maps."""
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    p = np.asarray(predicted).reshape(-1).astype(np.int64)
    if y.shape != p.shape:
        raise ValueError(f"labels of {y.size} voxels and predictions of {p.size} voxels differ")
    both = np.bincount(y[y == p], minlength=num_classes)[:num_classes]
    return np.stack([both, np.bincount(y, minlength=num_classes)[:num_classes],
                     np.bincount(p, minlength=num_classes)[:num_classes]], axis=1).astype(np.int64)


def dice_from_overlaps(overlaps: np.ndarray) -> np.ndarray:
    """Dice per class from ``class_overlaps`` rows; NaN for a class absent from both (it has no score)."""
    inter, ny, npred = (np.asarray(overlaps, np.float64)[:, i] for i in range(3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ny + npred > 0, 2.0 * inter / (ny + npred), np.nan)


class MultiClassAccumulator:
    """Streams per-class Dice of a softmax network over batches: ``update(y_true ids (..., 1) or (...),
    y_pred probabilities (..., K))``; ``result()`` gives ``dice`` (the mean over foreground classes present) and
    ``dice_<k>`` per foreground class (named by ``class_names`` {name: k} when given)."""

    def __init__(self, num_classes: int, class_names: dict[str, int] | None = None):
        self.num_classes = int(num_classes)
        self.names = {int(k): str(n) for n, k in (class_names or {}).items()}
        self.overlaps = np.zeros((self.num_classes, 3), np.int64)

    def update(self, y_true, y_pred) -> None:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if y_true.ndim == y_pred.ndim:
            y_true = y_true[..., 0]
        self.overlaps += class_overlaps(np.rint(y_true), y_pred.argmax(-1), self.num_classes)

    def result(self) -> dict[str, float]:
        dice = dice_from_overlaps(self.overlaps)[1:]
        present = dice[np.isfinite(dice)]
        out = {"dice": float(present.mean()) if present.size else float("nan")}
        out.update({f"dice_{self.names.get(k, str(k))}": float(d) for k, d in enumerate(dice, start=1)})
        return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U / (n_pos n_neg), ties 1/2).

    Raises a ValueError when only one class is present (the AUC is undefined).
    """
    labels = np.asarray(labels).reshape(-1) > 0.5
    scores = np.asarray(scores, np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"roc_auc: {labels.size} labels but {scores.size} scores")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc: needs both classes, got {n_pos} positive and {n_neg} negative labels")
    ranks = stats.rankdata(scores)  # average ranks for ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask that touch the background through a face (mask minus its face-connected erosion)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def hd95(pred_mask: np.ndarray, true_mask: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance between the surfaces of two binary masks, in ``spacing`` units.

    The two directed distance sets (every surface voxel of one mask to the nearest surface voxel of the other) each
    give a 95th percentile (numpy's linear interpolation); the result is the larger of the two (MONAI's
    ``compute_hausdorff_distance(percentile=95)``). 0.0 when both masks are empty; ``inf`` when exactly one is.
    """
    pred = np.asarray(pred_mask) > 0.5
    true = np.asarray(true_mask) > 0.5
    if pred.shape != true.shape:
        raise ValueError(f"hd95: masks of shapes {pred.shape} and {true.shape} differ")
    spacing = tuple(float(s) for s in (spacing or (1.0,) * pred.ndim))
    if len(spacing) != pred.ndim:
        raise ValueError(f"hd95: spacing {spacing} does not match the masks' {pred.ndim} dimensions")
    if not pred.any() and not true.any():
        return 0.0
    if not pred.any() or not true.any():
        return float("inf")
    surf_pred, surf_true = _surface(pred), _surface(true)
    to_true = ndimage.distance_transform_edt(~surf_true, sampling=spacing)[surf_pred]
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=spacing)[surf_true]
    return float(max(np.percentile(to_true, 95), np.percentile(to_pred, 95)))
