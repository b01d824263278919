"""The one metric table: its figures equal the streamed accumulator's and the AUC/accuracy rules, names of another
task are refused, and a metric registered once is reported by validation (finetune._validate) and test
(evaluate_classification) alike."""

import numpy as np
import pytest

from genesis_jax.evaluation import metric_table
from genesis_jax.evaluation.evaluate import evaluate_classification
from genesis_jax.evaluation.metric_table import METRICS, Collected, Metric, compute_metrics, metric_names
from genesis_jax.evaluation.metrics import SegmentationAccumulator, roc_auc
from genesis_jax.train.finetune import _validate


def test_segmentation_defaults_equal_the_accumulator():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(2, 8, 8, 4, 1)) > 0.6).astype(np.float32)
    probs = rng.uniform(size=labels.shape).astype(np.float32)
    acc, collected = SegmentationAccumulator(), Collected()
    for i in range(2):
        acc.update(labels[i:i + 1], probs[i:i + 1])
        collected.add_segmentation(labels[i:i + 1], probs[i:i + 1])
    assert compute_metrics(metric_names("segmentation"), collected) == acc.result()


def test_classification_sigmoid_and_softmax():
    labels = np.array([0, 1, 1, 0, 1], np.float32)
    scores = np.array([0.2, 0.7, 0.4, 0.6, 0.9], np.float32)
    collected = Collected()
    collected.add_classification(labels[:, None], scores[:, None])
    got = compute_metrics(("auc", "accuracy"), collected)
    assert got == {"auc": roc_auc(labels, scores), "accuracy": pytest.approx(3 / 5)}
    softmax = Collected()
    softmax.add_classification(labels.astype(int), np.stack([1 - scores, scores], -1))
    assert compute_metrics(("auc", "accuracy"), softmax) == got


def test_names_of_another_task_are_refused():
    with pytest.raises(ValueError, match="'auc' is not a segmentation metric"):
        metric_names("segmentation", ["dice", "auc"])
    assert metric_names("classification") == ("auc", "accuracy")


def test_one_registry_line_reaches_validation_and_test(monkeypatch):
    monkeypatch.setitem(METRICS, "positive_rate", Metric("classification",
                                                         lambda c: float(np.mean(c.classification()[0]))))
    assert metric_table.METRICS is METRICS
    x = np.zeros((4, 2), np.float32)
    y = np.array([[1], [0], [1], [1]], np.float32)
    test = evaluate_classification(lambda v, batch: np.full((len(batch), 1), 0.5, np.float32), None, x, y, 2,
                                   ["positive_rate"])
    assert test["positive_rate"] == 0.75

    def eval_step(state, batch):
        return 0.5, np.full((len(batch["y"]), 1), 0.5, np.float32), batch["y"]

    val = _validate(eval_step, None, [{"y": y}], "classification", ("positive_rate",))
    assert val == {"val_loss": 0.5, "val_positive_rate": 0.75}
