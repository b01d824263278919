"""Each metric against values computed by hand."""

import numpy as np
import pytest

from genesis_jax.evaluation import (
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


def test_thresholds_are_the_published_ten():
    assert MEAN_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_soft_dice_smooth_one():
    y = np.array([1, 1, 0, 0], np.float32)
    p = np.array([0.8, 0.4, 0.2, 0.0], np.float32)
    # (2 * 1.2 + 1) / (2 + 1.4 + 1) = 3.4 / 4.4
    assert float(soft_dice(y, p)) == pytest.approx(3.4 / 4.4, rel=1e-6)
    # both empty: smooth makes it 1
    assert float(soft_dice(np.zeros(4), np.zeros(4))) == pytest.approx(1.0)


def test_binary_overlaps():
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.5, 0.7, 0.1, 0.0])  # 0.5 is NOT foreground (strict >)
    # TP 2, FN 1, FP 1
    assert foreground_iou(y, p) == pytest.approx(2 / 4)
    assert binary_dice(y, p) == pytest.approx(4 / 6)
    assert foreground_iou(np.zeros(3), np.zeros(3)) == 1.0
    assert binary_dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError, match="differ"):
        binary_dice(np.zeros(3), np.zeros(4))


def test_confusion_counts_layout():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.52, 0.56, 0.1])
    c = np.asarray(confusion_counts(y, p, thresholds=(0.5, 0.55)))
    # t=0.5: pred 1,1,1,0 -> tn 1 fp 1 fn 0 tp 2 ; t=0.55: pred 1,0,1,0 -> tn 1 fp 1 fn 1 tp 1
    np.testing.assert_array_equal(c, [[[1, 1], [0, 2]], [[1, 1], [1, 1]]])


def test_keras_mean_iou_hand_computed():
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.52, 0.56, 0.1])
    # Per threshold t: preds p > t. Two-class mean IoU = (IoU_bg + IoU_fg) / 2.
    # t=0.50: pred [1,1,1,0]: fg 2/3, bg 1/2 -> 7/12
    # t=0.55: pred [1,0,1,0]: fg 1/3, bg 1/3 -> 1/3
    # t=0.60..0.85: pred [1,0,0,0]: fg 1/2, bg 2/3 -> 7/12 (6 thresholds)
    # t=0.90, 0.95: p=0.9 is not > 0.9 -> pred all 0: fg 0/2 = 0, bg 2/4 -> 1/4 (2 thresholds)
    expected = (7 / 12 + 1 / 3 + 6 * 7 / 12 + 2 * 1 / 4) / 10
    assert keras_mean_iou(y, p) == pytest.approx(expected)


def test_mean_iou_leaves_out_classes_absent_from_both():
    # All background, predicted all background: only the bg class counts -> IoU 1 (TF1 num_valid_entries rule).
    assert keras_mean_iou(np.zeros(5), np.zeros(5)) == pytest.approx(1.0)
    counts = np.zeros((10, 2, 2), np.int64)
    assert mean_iou_from_counts(counts) == 0.0
    with pytest.raises(ValueError, match=r"\(T, 2, 2\)"):
        mean_iou_from_counts(np.zeros((2, 2)))


def test_accumulator_streams_the_confusion_matrix():
    rng = np.random.default_rng(0)
    y = (rng.random((6, 5, 5)) > 0.6).astype(np.float32)
    p = rng.random((6, 5, 5)).astype(np.float32)
    acc = SegmentationAccumulator()
    acc.update(y[:2], p[:2])
    acc.update(y[2:], p[2:])
    r = acc.result()
    # streaming equals computing on everything at once (NOT the mean of per-batch scores)
    assert r["mean_iou"] == pytest.approx(keras_mean_iou(y, p))
    assert r["iou"] == pytest.approx(foreground_iou(y, p))
    assert r["dice"] == pytest.approx(binary_dice(y, p))
    # soft dice: per batch, weighted by batch size
    expected = (2 * float(soft_dice(y[:2], p[:2])) + 4 * float(soft_dice(y[2:], p[2:]))) / 6
    assert r["soft_dice"] == pytest.approx(expected, rel=1e-6)
    per_batch_mean = (keras_mean_iou(y[:2], p[:2]) + keras_mean_iou(y[2:], p[2:])) / 2
    assert r["mean_iou"] != pytest.approx(per_batch_mean, abs=1e-9)


def test_roc_auc_hand_computed_with_ties():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    # positive-negative pairs: (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert roc_auc(labels, scores) == pytest.approx(0.75)
    # a tie counts one half: pairs (0.5 vs 0.5)=0.5, (0.5 vs 0.2)=1 -> 1.5 / 2
    assert roc_auc([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.2, 0.3])


def test_hd95_hand_computed():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2, 2] = True
    b[2, 5] = True
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    # a: 3x3 square (surface = 8 voxels, all but (2,2)); b: 3x4 rectangle (surface = 10 voxels, all but (2,2),(2,3)).
    a = np.zeros((12, 12), bool)
    a[1:4, 1:4] = True
    b = np.zeros((12, 12), bool)
    b[1:4, 1:5] = True
    # a-surface -> b-surface: (2,3) is inside b, 1 from (1,3); the other seven lie on b's surface: seven 0s and
    # one 1 -> 95th percentile (linear) 0.65. b-surface -> a-surface: (1,4),(2,4),(3,4) at 1, seven at 0 -> 1.0.
    # The result is the larger directed value.
    assert hd95(a, b) == pytest.approx(1.0)
    assert hd95(a, a) == 0.0
    assert hd95(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0
    assert hd95(a, np.zeros_like(a)) == float("inf")


def test_hd95_3d_anisotropic_shift():
    a = np.zeros((8, 8, 8), bool)
    a[2:5, 2:5, 2:5] = True
    b = np.roll(a, 2, axis=2)
    # a's 26 surface voxels to b's surface: 9 at z=2 are 2 slices (6 mm) from b's face z=4, 8 at z=3 are 3 mm,
    # 9 at z=4 lie on it -> 95th percentile 6 mm; symmetric the other way.
    d = hd95(a, b, spacing=(1.0, 1.0, 3.0))
    assert d == pytest.approx(6.0)
