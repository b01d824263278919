"""The linear-probe learner of the AL simulation: convergence on a separable problem, determinism, the
chance-loss / constant-prediction guard on real collapses, and encoder features of patch sets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.active.linear_probe import (
    LinearProbe,
    ProbeFit,
    TrainingFailure,
    chance_loss,
    check_fit,
    encode_patch_sets,
    gap_feature_fn,
)
from genesis_jax.active.patches import candidate_patches, make_patch_set
from genesis_jax.evaluation.metrics import roc_auc
from genesis_jax.models.unet import GenesisUNet


def _toy(n: int, seed: int, shift: float = 4.0):
    """Two classes (30% positive) separated along the first of 6 features; 4 jittered 'patches' a candidate."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    x = rng.normal(size=(n, 4, 6)).astype(np.float32)
    x[:, :, 0] += shift * y[:, None]
    return x, y


def test_converges_on_a_separable_problem_deterministically():
    x, y = _toy(120, 0)
    probe = LinearProbe(2, l2=1e-2, newton_steps=30)
    fit = probe.fit(x, y)
    assert fit.chance_loss == pytest.approx(chance_loss(y, 2)) and fit.loss < 0.2 * fit.chance_loss
    # converged: the gradient of the regularised objective vanishes at the fitted head
    xs, ys = jnp.asarray(x.reshape(-1, 6)), jnp.repeat(jnp.asarray(y, jnp.int32), 4)
    grad = jax.grad(lambda w: probe._objective(w, xs, ys, jnp.ones(len(ys)))[0])(jnp.asarray(fit.weights.ravel()))
    assert float(jnp.linalg.norm(grad)) < 1e-4
    again = probe.fit(x, y)
    np.testing.assert_array_equal(again.weights, fit.weights)
    xt, yt = _toy(200, 1)
    assert roc_auc(yt, probe.predict(fit, xt).mean(axis=1)[:, 1]) > 0.97
    assert probe.predict(fit, xt).shape == (200, 4, 2)


def test_rounds_within_a_bucket_compile_once():
    x, y = _toy(60, 4)
    probe = LinearProbe(2, bucket_min=32, max_traces=2)
    for n in (20, 24, 28, 32):  # one bucket of 32
        probe.fit(x[:n], y[:n])
    probe.fit(x[:40], y[:40])  # the next bucket: the second and last trace


def test_three_classes_converge_too():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 2, 5)).astype(np.float32)
    x[np.arange(90), :, y] += 3.0
    fit = LinearProbe(3).fit(x, y)
    assert fit.weights.shape == (6, 2) and fit.loss < 0.3 * math.log(3)


def test_guard_trips_on_an_encoder_that_collapsed_to_constant_features():
    """A real collapse: a GenesisUNet whose weights are all zero encodes every patch alike, so no head can do
    better than the label frequencies: loss = chance, constant predictions -> TrainingFailure, not a data point."""
    model = GenesisUNet(variant="keras", ndim=2, base_width=2, depth=2)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False)
    dead = {**variables, "params": jax.tree.map(jnp.zeros_like, variables["params"])}
    contexts = np.random.default_rng(0).random((40, 12, 12, 1)).astype(np.float32)
    patch_set = make_patch_set((8, 8), scales=(1.0, 1.25), flips_rotations=2)
    features = encode_patch_sets(gap_feature_fn(model), dead, contexts, patch_set, chunk_size=16)
    labels = np.arange(40) % 2
    with pytest.raises(TrainingFailure, match="chance"):
        LinearProbe(2).fit(features, labels)
    fit = LinearProbe(2).fit(features, labels, guard=False)  # the failure it reports, measured
    assert fit.loss == pytest.approx(math.log(2), abs=1e-4) and fit.prediction_spread < 1e-3
    # the same encoder alive: its features separate bright from dark contexts and the guard lets it through
    contexts[labels == 1] += 0.5
    live = encode_patch_sets(gap_feature_fn(model), variables, contexts, patch_set, chunk_size=16)
    live = (live - live.mean(axis=(0, 1))) / live.std(axis=(0, 1))  # standardised, as the simulation does
    good = LinearProbe(2).fit(live, labels)
    assert good.loss < 0.5 * math.log(2)


def test_guard_rules():
    ok = ProbeFit(np.zeros((3, 1)), loss=0.2, chance_loss=0.69, prediction_spread=0.9)
    check_fit(ok)
    for bad in (ProbeFit(np.zeros((3, 1)), 0.68, 0.6931, 0.2),  # near ln 2 on balanced labels
                ProbeFit(np.zeros((3, 1)), 0.27, 0.28, 0.2),  # near the chance loss of 8% positives
                ProbeFit(np.zeros((3, 1)), 0.10, 0.69, 1e-5),  # constant predictions
                ProbeFit(np.zeros((3, 1)), 0.01, 0.0, 0.5)):  # one class only: nothing was separated
        with pytest.raises(TrainingFailure):
            check_fit(bad)
    with pytest.raises(TrainingFailure, match="chance"):
        LinearProbe(2).fit(*_toy(20, 3)[:1], np.zeros(20, np.int64))


def test_features_are_the_encoder_bottleneck_pooled_per_patch():
    model = GenesisUNet(variant="keras", ndim=2, base_width=2, depth=2)
    variables = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)), train=False)
    contexts = np.random.default_rng(1).random((5, 12, 12, 1)).astype(np.float32)
    patch_set = make_patch_set((8, 8), scales=(1.0, 1.5), flips_rotations=4)
    feats = encode_patch_sets(gap_feature_fn(model), variables, contexts, patch_set, chunk_size=4)
    assert feats.shape == (5, 8, 8)  # m = 2 scales x 4 flips; D = 2 * 2^2 bottleneck channels
    patches = candidate_patches(jnp.asarray(contexts[3]), patch_set)
    direct = model.apply(variables, patches, train=False, output="bottleneck").mean(axis=(1, 2))
    np.testing.assert_allclose(feats[3], np.asarray(direct), rtol=1e-5, atol=1e-6)
