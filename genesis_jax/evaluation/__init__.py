"""Evaluation: segmentation and classification metrics (Dice, IoU, the published Keras mean IoU, ROC AUC, HD95)
(``metrics``), sliding-window inference over whole volumes (``sliding_window``), test-set evaluation of arrays and
volumes (``evaluate``), a fine-tuning config's test set (``test_set``: what ``finetune`` and ``genesis-jax evaluate``
report), overlay PNGs (``overlays``) and label maps of new, unlabelled scans on their own grid (``predict``: what
``genesis-jax predict`` writes). Knows nothing of training."""

from genesis_jax.evaluation.metrics import (
    MEAN_IOU_THRESHOLDS,
    SegmentationAccumulator,
    binary_dice,
    confusion_counts,
    foreground_iou,
    hd95,
    keras_mean_iou,
    mean_iou_from_counts,
    roc_auc,
    soft_dice,
)
from genesis_jax.evaluation.sliding_window import (
    SlidingWindow,
    gaussian_importance,
    save_nifti,
    slicewise,
    sliding_window_inference,
    window_starts,
)

__all__ = [
    "MEAN_IOU_THRESHOLDS",
    "SegmentationAccumulator",
    "SlidingWindow",
    "binary_dice",
    "confusion_counts",
    "foreground_iou",
    "gaussian_importance",
    "hd95",
    "keras_mean_iou",
    "mean_iou_from_counts",
    "roc_auc",
    "save_nifti",
    "slicewise",
    "sliding_window_inference",
    "soft_dice",
    "window_starts",
]
