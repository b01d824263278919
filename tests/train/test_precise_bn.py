"""Precise BatchNorm: exact population statistics against a NumPy reference, no-op without running averages,
one compilation reused across batches and calls."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.models import BatchNorm, GenesisUNet, UNetPlusPlus
from genesis_jax.train.precise_bn import pool_moments, recompute_batch_stats, uses_running_averages


class TwoLayer(nn.Module):
    """Dense -> BN -> ReLU -> Dense -> BN: small enough for a NumPy forward."""

    mode: str = "standard"

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(BatchNorm(mode=self.mode, name="bn_0")(nn.Dense(5, name="dense_0")(x), train))
        return BatchNorm(mode=self.mode, name="bn_1")(nn.Dense(3, name="dense_1")(x), train)


def _numpy_reference(variables, batches):
    """Per batch: forward with the batch's own statistics; pooled as the mean of means and
    mean(var + mean^2) - mean^2, each batch weighted by its number of rows."""
    p = jax.tree.map(np.asarray, variables["params"])
    per_layer = {"bn_0": [], "bn_1": []}
    for x in batches:
        h = x.astype(np.float64)
        for i in range(2):
            h = h @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"]
            axes = tuple(range(h.ndim - 1))
            m, v = h.mean(axes), h.var(axes)
            per_layer[f"bn_{i}"].append((m, v, np.prod(h.shape[:-1])))
            h = (h - m) / np.sqrt(v + 1e-3) * p[f"bn_{i}"]["scale"] + p[f"bn_{i}"]["bias"]
            h = np.maximum(h, 0) if i == 0 else h
    out = {}
    for name, stats in per_layer.items():
        w = np.array([s[2] for s in stats], np.float64)
        w /= w.sum()
        mean = sum(wi * m for wi, (m, _, _) in zip(w, stats))
        second = sum(wi * (v + m**2) for wi, (m, v, _) in zip(w, stats))
        out[name] = {"mean": mean, "var": second - mean**2}
    return out


def _init(model, shape, seed=0):
    variables = model.init(jax.random.key(seed), jnp.zeros(shape), train=False)
    # the running averages start away from any real statistics, as after a short training run
    return {**variables, "batch_stats": jax.tree.map(lambda s: s + 3.0, variables["batch_stats"])}


def test_population_statistics_match_numpy_reference():
    model = TwoLayer()
    variables = _init(model, (1, 2, 4))
    rng = np.random.default_rng(0)
    # batches of different leading sizes, non-zero mean, so weighting and the variance formula both matter
    batches = [rng.normal(1.5, 2.0, (n, 2, 4)).astype(np.float32) for n in (2, 4, 3)]
    new = recompute_batch_stats(model, variables, batches)
    ref = _numpy_reference(variables, batches)
    for name in ("bn_0", "bn_1"):
        for k in ("mean", "var"):
            np.testing.assert_allclose(np.asarray(new["batch_stats"][name][k]), ref[name][k], rtol=2e-5, atol=1e-5)
    # the first layer's input does not depend on the batching: its statistics are those of all the data at once
    h0 = np.concatenate(batches).reshape(-1, 4) @ np.asarray(variables["params"]["dense_0"]["kernel"])
    h0 = h0 + np.asarray(variables["params"]["dense_0"]["bias"])
    np.testing.assert_allclose(np.asarray(new["batch_stats"]["bn_0"]["var"]), h0.var(0), rtol=2e-5)
    assert new["params"] is variables["params"]
    assert new["batch_stats"]["bn_0"]["mean"].dtype == jnp.float32


def test_pool_moments_numpy_and_jax_agree():
    rng = np.random.default_rng(1)
    moments = {"a": {"mean": rng.normal(size=(4, 3)), "var": rng.uniform(0.5, 2, (4, 3))}}
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    host = pool_moments(moments, weights)
    dev = pool_moments(jax.tree.map(jnp.asarray, moments), jnp.asarray(weights), xp=jnp)
    np.testing.assert_allclose(np.asarray(dev["a"]["var"]), host["a"]["var"], rtol=1e-5)
    w = weights / weights.sum()
    mean = (w[:, None] * moments["a"]["mean"]).sum(0)
    expect = (w[:, None] * (moments["a"]["var"] + moments["a"]["mean"] ** 2)).sum(0) - mean**2
    np.testing.assert_allclose(host["a"]["var"], expect, rtol=1e-12)


def test_one_batch_makes_inference_equal_to_the_train_mode_forward():
    # with a single batch, every layer's recalibrated statistics are that batch's: inference == train-mode output
    model = GenesisUNet(variant="keras", ndim=2, base_width=2, depth=2)
    x = np.random.default_rng(2).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    variables = _init(model, (1, 8, 8, 1))
    train_out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    before = model.apply(variables, x)
    after = model.apply(recompute_batch_stats(model, variables, [{"image": x, "label": None}]), x)
    np.testing.assert_allclose(np.asarray(after), np.asarray(train_out), atol=1e-5)
    assert float(jnp.max(jnp.abs(before - train_out))) > 1e-2  # the shifted running averages did matter


def test_noop_for_the_pytorch_variant():
    model = GenesisUNet(variant="pytorch", ndim=2, base_width=2, depth=2)
    variables = _init(model, (1, 8, 8, 1))
    x = np.ones((2, 8, 8, 1), np.float32)
    assert not uses_running_averages(model, variables, x)
    new = recompute_batch_stats(model, variables, [x])
    chex.assert_trees_all_equal(new, variables)
    assert uses_running_averages(GenesisUNet(variant="keras", ndim=2, base_width=2, depth=2), variables, x)


def test_unetpp_with_batchnorm_and_dropout_runs_deterministically():
    model = UNetPlusPlus(ndim=2, base_width=2, depth=2, norm="batch", dropout=0.5)
    variables = _init(model, (1, 8, 8, 1))
    x = np.random.default_rng(3).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    a = recompute_batch_stats(model, variables, [x])  # dropout is off: no rng needed, same result twice
    b = recompute_batch_stats(model, variables, [x])
    chex.assert_trees_all_close(a, b)
    assert not np.allclose(np.asarray(a["batch_stats"]["X_0_0"]["bn_0"]["var"]), 4.0)


def test_one_compiled_forward_across_batches_and_calls():
    chex.clear_trace_counter()
    model = GenesisUNet(variant="keras", ndim=2, base_width=3, depth=2)
    variables = _init(model, (1, 8, 8, 1))
    batches = [np.full((2, 8, 8, 1), v, np.float32) + np.eye(8)[None, :, :, None] for v in range(4)]
    recompute_batch_stats(model, variables, batches, max_traces=1)
    recompute_batch_stats(model, variables, batches[:2], max_traces=1)  # a second call: no new trace
    with pytest.raises(AssertionError, match="traced > 1 times"):  # a new shape does retrace (the guard works)
        recompute_batch_stats(model, variables, [np.zeros((3, 8, 8, 1), np.float32)], max_traces=1)


def test_empty_batches_is_an_error():
    model = TwoLayer()
    with pytest.raises(ValueError, match="no batches"):
        recompute_batch_stats(model, _init(model, (1, 4)), [])
