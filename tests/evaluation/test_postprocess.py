"""Largest-component post-processing: only the biggest foreground blob survives, probabilities are kept inside it,
and evaluation and predict's inference settings apply it when the config asks."""

import numpy as np

from genesis_jax.evaluation.postprocess import keep_largest_component
from genesis_jax.evaluation.predict import InferenceSettings


def test_keeps_the_largest_blob_with_its_probabilities():
    prob = np.zeros((20, 20, 10), np.float32)
    prob[2:10, 2:10, 2:8] = 0.9  # the organ: 384 voxels
    prob[15:18, 15:18, 1:3] = 0.8  # a stray false positive: 18 voxels
    prob[12, 12, 5] = 0.4  # below the threshold: not foreground, left as it is
    out = keep_largest_component(prob, 0.5)
    assert np.all(out[2:10, 2:10, 2:8] == 0.9) and np.all(out[15:18, 15:18, 1:3] == 0)
    assert out[12, 12, 5] == 0.4
    assert out.dtype == prob.dtype and out.shape == prob.shape


def test_diagonal_neighbours_are_one_component_and_empty_is_unchanged():
    prob = np.zeros((6, 6, 6), np.float32)
    prob[1, 1, 1] = prob[2, 2, 2] = 1.0  # touching at a corner: full connectivity joins them
    prob[5, 5, 5] = 1.0
    out = keep_largest_component(prob)
    assert out[1, 1, 1] == 1.0 and out[2, 2, 2] == 1.0 and out[5, 5, 5] == 0.0
    empty = np.zeros((4, 4, 4), np.float32)
    assert keep_largest_component(empty) is empty


def test_the_config_reaches_predict_inference_settings():
    config = {"input_shape": (16, 16, 8, 1), "eval": {"largest_component": True, "threshold": 0.5}}
    assert InferenceSettings.from_config(config).largest_component is True
    assert InferenceSettings.from_config({"input_shape": (16, 16, 8, 1)}).largest_component is False
