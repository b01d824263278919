"""Multi-class (softmax) segmentation: per-class overlaps and Dice, the streamed accumulator, the dice_ce loss, and
whole volumes scored per class by sliding window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.evaluation.evaluate import evaluate_volumes
from genesis_jax.evaluation.metrics import MultiClassAccumulator, class_overlaps, dice_from_overlaps
from genesis_jax.evaluation.sliding_window import SlidingWindow
from genesis_jax.data.task_data import LabelledVolume
from genesis_jax.train.losses import categorical_cross_entropy, dice_ce_loss


def test_per_class_dice_from_overlaps_and_an_absent_class_is_nan():
    labels = np.array([0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 2, 2, 2, 0])
    overlaps = class_overlaps(labels, predicted, 4)
    assert overlaps.tolist() == [[1, 1, 2], [1, 2, 1], [2, 3, 3], [0, 0, 0]]
    dice = dice_from_overlaps(overlaps)
    assert dice[1] == pytest.approx(2 / 3) and dice[2] == pytest.approx(2 / 3) and np.isnan(dice[3])

    acc = MultiClassAccumulator(4, {"background": 0, "liver": 1, "spleen": 2, "kidney": 3})
    acc.update(labels[:, None], np.eye(4)[predicted])
    result = acc.result()
    assert result["dice_liver"] == pytest.approx(2 / 3) and np.isnan(result["dice_kidney"])
    assert result["dice"] == pytest.approx(2 / 3)  # the mean over the classes present


def test_dice_ce_is_cross_entropy_plus_one_minus_the_mean_foreground_soft_dice():
    ids = jnp.array([[0], [1], [2], [2]], jnp.float32)
    probs = jax.nn.softmax(jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.2, 1.0], [0.3, 0.0, 0.0]]))
    one_hot = jax.nn.one_hot(ids[:, 0].astype(int), 3)
    dice = (2 * (one_hot * probs).sum(0) + 1) / (one_hot.sum(0) + probs.sum(0) + 1)
    expected = categorical_cross_entropy(one_hot, probs) + 1 - dice[1:].mean()
    assert float(dice_ce_loss(ids, probs)) == pytest.approx(float(expected), rel=1e-6)
    perfect = dice_ce_loss(ids, jnp.clip(one_hot, 1e-6, 1.0))
    assert float(perfect) < float(dice_ce_loss(ids, probs))
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda p: dice_ce_loss(ids, p))(probs))))


def test_whole_volumes_are_scored_per_class_by_sliding_window():
    label = np.zeros((12, 12, 8), np.uint8)
    label[2:6, 2:6, 1:5] = 1
    label[7:11, 6:10, 3:7] = 2
    image = label.astype(np.float32) / 2.0  # the fake network reads the class off the intensity

    def predict(variables, windows):
        return jax.nn.one_hot(jnp.rint(windows[..., 0] * 2).astype(jnp.int32), 3)

    sliding = SlidingWindow(predict, (8, 8, 8), 0.5, 2, num_classes=3)
    volume = LabelledVolume(image, label, "case", spacing=(1.0, 1.0, 2.0))
    out = evaluate_volumes(sliding, {}, [volume], keep_probabilities=True, progress=False,
                           class_names={"background": 0, "liver": 1, "spleen": 2})
    row = out["per_volume"][0]
    assert row["dice_liver"] == pytest.approx(1.0) and row["dice_spleen"] == pytest.approx(1.0)
    assert row["hd95_liver"] == 0.0 and out["set"]["dice"] == pytest.approx(1.0)
    assert out["classes"] == {1: "liver", 2: "spleen"}
    assert out["probabilities"]["case"].shape == label.shape


def test_largest_component_per_class_and_the_overlay_class():
    label = np.zeros((12, 12, 8), np.uint8)
    label[2:6, 2:6, 1:5] = 1
    label[7:11, 6:10, 3:7] = 2
    image = label.astype(np.float32) / 2.0
    image[10, 1, 1] = 0.5  # a stray one-voxel 'liver' far from the liver: a false positive only post-processing removes

    def predict(variables, windows):
        return jax.nn.one_hot(jnp.rint(windows[..., 0] * 2).astype(jnp.int32), 3)

    sliding = SlidingWindow(predict, (8, 8, 8), 0.5, 2, num_classes=3)
    volume = LabelledVolume(image, label, "case", spacing=(1.0, 1.0, 2.0))
    names = {"background": 0, "liver": 1, "spleen": 2}
    raw = evaluate_volumes(sliding, {}, [volume], progress=False, class_names=names)
    kept = evaluate_volumes(sliding, {}, [volume], keep_probabilities=True, progress=False, class_names=names,
                            largest_component=True, overlay_class="spleen")
    assert raw["per_volume"][0]["dice_liver"] < 1.0 and kept["per_volume"][0]["dice_liver"] == pytest.approx(1.0)
    assert kept["per_volume"][0]["dice_spleen"] == pytest.approx(1.0)
    assert kept["overlay_class"] == {"name": "spleen", "id": 2}
    np.testing.assert_allclose(kept["probabilities"]["case"], (label == 2).astype(np.float32), atol=1e-6)
    with pytest.raises(ValueError, match="config.eval.overlay_class='kidney' is not a class"):
        evaluate_volumes(sliding, {}, [volume], progress=False, class_names=names, overlay_class="kidney")


def test_keep_largest_component_per_class_moves_strays_to_the_background():
    from genesis_jax.evaluation.postprocess import keep_largest_component_per_class

    predicted = np.zeros((10, 10, 4), np.int64)
    predicted[1:4, 1:4, :] = 1
    predicted[8, 8, 0] = 1  # stray liver
    predicted[6:9, 1:3, :] = 2
    out = keep_largest_component_per_class(predicted, 3)
    assert out[8, 8, 0] == 0 and np.all(out[1:4, 1:4, :] == 1) and np.all(out[6:9, 1:3, :] == 2)
    assert predicted[8, 8, 0] == 1  # the input is not modified


def test_overlay_of_one_class_outlines_that_class(tmp_path, monkeypatch):
    from genesis_jax.evaluation import evaluate as ev

    label = np.zeros((12, 12, 8), np.uint8)
    label[2:6, 2:6, 1:5] = 1
    label[7:11, 6:10, 3:7] = 2
    drawn = {}

    def fake_overlay(image, lab, prob, path, threshold=0.5, title=""):
        drawn.update(label=np.asarray(lab), title=title)
        return path

    monkeypatch.setattr(ev, "save_overlay", fake_overlay)
    volume = LabelledVolume(label.astype(np.float32), label, "case", spacing=(1.0, 1.0, 2.0))
    ev.export_predictions({"case": (label == 2).astype(np.float32)}, [volume], tmp_path, nifti=False,
                          overlay_class={"name": "spleen", "id": 2})
    np.testing.assert_array_equal(drawn["label"], label == 2)
    assert drawn["title"] == "case: spleen"
