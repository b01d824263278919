"""Genesis U-Net and UNet++: exact published parameter counts, shapes, pruning, BatchNorm behaviour, errors."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.cli import main as cli_main
from genesis_jax.models import GenesisClassifier, GenesisUNet, UNetPlusPlus, build_model, count_params


@pytest.mark.parametrize(
    "model, shape, expected",
    [
        (GenesisUNet(variant="pytorch"), (1, 64, 64, 32, 1), 19_073_665),
        (GenesisUNet(variant="keras"), (1, 64, 64, 32, 1), 16_320_257),
        (UNetPlusPlus(deep_supervision=False), (1, 96, 96, 1), 9_041_601),
        (UNetPlusPlus(deep_supervision=True), (1, 96, 96, 1), 9_041_700),
        (UNetPlusPlus(prune_level=1), (1, 96, 96, 1), 100_961),
        (UNetPlusPlus(prune_level=2), (1, 96, 96, 1), 511_105),
        (UNetPlusPlus(prune_level=3), (1, 96, 96, 1), 2_204_961),
        (UNetPlusPlus(ndim=3, deep_supervision=False), (1, 64, 64, 32, 1), 26_198_273),
    ],
)
def test_published_parameter_counts(model, shape, expected):
    assert count_params(model, shape) == expected


@pytest.mark.parametrize(
    "spec, expected",
    [
        (["models/unet3d:pytorch"], "19,073,665"),
        (["models/unet3d:keras"], "16,320,257"),
        (["models/unetpp:2d"], "9,041,700"),
        (["models/unetpp:2d", "--config.model.prune_level=1"], "100,961"),
        (["models/unetpp:3d", "--config.model.deep_supervision=False"], "26,198,273"),
    ],
)
def test_summary_cli_prints_published_counts(capsys, spec, expected):
    assert cli_main(["summary", f"--config={spec[0]}", *spec[1:]]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"Total params: {expected}"
    assert any("Non-trainable" in line for line in out)


def test_summary_cli_rejects_unknown_override(capsys):
    assert cli_main(["summary", "--config=models/unet3d:pytorch", "--config.model.no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err


def test_classifier_exposes_bottleneck_and_counts():
    model = GenesisClassifier(backbone=GenesisUNet(name="backbone"), num_classes=2)
    # encoder 7,027,776 (published) + 512*1024+1024 + 1024*2+2
    assert count_params(model, (1, 64, 64, 32, 1)) == 7_027_776 + 525_312 + 2_050
    unet = GenesisUNet()
    feats = jax.eval_shape(
        lambda: unet.init_with_output(jax.random.key(0), jnp.zeros((2, 64, 64, 32, 1)), output="features")[0]
    )
    assert feats["bottleneck"].shape == (2, 8, 8, 4, 512)
    assert feats["decoder"].shape == (2, 64, 64, 32, 64)


TINY = dict(base_width=4)


def init(model, x, seed=0):
    """Jitted init: one compilation instead of one per op (eager 3D convs on CPU are slow)."""
    return jax.jit(model.init)(jax.random.key(seed), x)


def apply(model, variables, x, **kwargs):
    return jax.jit(functools.partial(model.apply, **kwargs))(variables, x)


@pytest.mark.parametrize("variant", ["pytorch", "keras"])
@pytest.mark.parametrize("shape", [(2, 8, 8, 8, 1), (1, 16, 8, 24, 1), (2, 16, 16, 1), (1, 8, 24, 1)])
def test_unet_output_shapes(variant, shape):
    ndim = len(shape) - 2
    model = GenesisUNet(variant=variant, ndim=ndim, num_classes=3, head_activation="softmax", **TINY)
    x = jnp.ones(shape)
    variables = init(model, x)
    y = apply(model, variables, x)
    chex.assert_shape(y, shape[:-1] + (3,))
    np.testing.assert_allclose(np.asarray(y.sum(-1)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 16, 16, 1), (2, 32, 16, 1), (1, 16, 16, 16, 1)])
def test_unetpp_output_shapes(shape):
    ndim = len(shape) - 2
    model = UNetPlusPlus(ndim=ndim, base_width=2, num_classes=2)
    x = jnp.ones(shape)
    variables = init(model, x)
    heads = apply(model, variables, x, return_all_heads=True)
    assert len(heads) == 4
    for h in heads:
        chex.assert_shape(h, shape[:-1] + (2,))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_pruned_unetpp_equals_head_of_full_network(level):
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
    full = UNetPlusPlus(base_width=4)
    variables = full.init(jax.random.key(0), x)
    heads = apply(full, variables, x, return_all_heads=True)
    pruned = UNetPlusPlus(base_width=4, prune_level=level)
    pruned_vars = jax.eval_shape(lambda: pruned.init(jax.random.key(5), x))
    # The pruned network's parameters are a strict subset of the full one's, under the same names.
    sub = {k: variables["params"][k] for k in pruned_vars["params"]}
    assert set(pruned_vars["params"]) < set(variables["params"])
    assert all(f"X_{i}_{j}" in sub for i in range(level + 1) for j in range(level + 1 - i))
    assert not any(name.startswith("X_") and sum(map(int, name[2:].split("_"))) > level for name in sub)
    out = apply(pruned, {"params": sub}, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(heads[level - 1]), rtol=1e-6, atol=1e-6)


def test_unetpp_modes_and_deep_supervision():
    x = jax.random.uniform(jax.random.key(1), (1, 16, 16, 1))
    model = UNetPlusPlus(base_width=2)
    v = init(model, x)
    heads = apply(model, v, x, return_all_heads=True)
    np.testing.assert_allclose(apply(model, v, x), sum(heads) / 4, rtol=1e-6)
    np.testing.assert_allclose(apply(UNetPlusPlus(base_width=2, mode="fast"), v, x), heads[-1], rtol=1e-6)
    # dropout is active only in training and needs an rng
    train_apply = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    y1 = train_apply(v, x, jax.random.key(1))
    y2 = train_apply(v, x, jax.random.key(2))
    assert not np.allclose(y1, y2)


def test_pytorch_variant_uses_batch_statistics_keras_variant_does_not():
    x = jax.random.uniform(jax.random.key(3), (4, 8, 8, 8, 1))
    for variant, depends in [("pytorch", True), ("keras", False)]:
        model = GenesisUNet(variant=variant, **TINY)
        v = init(model, x)
        batch = apply(model, v, x)
        single = apply(model, v, x[:1])
        differs = not np.allclose(np.asarray(batch[:1]), np.asarray(single), atol=1e-6)
        assert differs == depends, variant


def test_batch_stats_updated_only_when_mutable():
    x = jax.random.uniform(jax.random.key(3), (2, 8, 8, 8, 1))
    model = GenesisUNet(variant="pytorch", **TINY)
    v = init(model, x)
    _, updates = apply(model, v, x, mutable=["batch_stats"])
    before = v["batch_stats"]["encoder_0"]["bn_0"]["mean"]
    after = updates["batch_stats"]["encoder_0"]["bn_0"]["mean"]
    assert not np.allclose(before, after)
    apply(model, v, x)  # immutable: no error, nothing to pass


def test_jit_vmap_and_bf16():
    x = jax.random.uniform(jax.random.key(3), (2, 8, 8, 8, 1))
    model = GenesisUNet(variant="keras", **TINY)
    v = init(model, x)
    jitted = jax.jit(model.apply)
    reference = jitted(v, x)
    per_sample = jax.jit(jax.vmap(lambda s: model.apply(v, s[None])[0]))(x)
    np.testing.assert_allclose(per_sample, reference, rtol=1e-5, atol=1e-6)
    bf16 = GenesisUNet(variant="keras", dtype=jnp.bfloat16, **TINY)
    y = jax.jit(bf16.apply)(v, x)
    assert y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
    assert jax.tree.leaves(v["params"])[0].dtype == jnp.float32
    np.testing.assert_allclose(y, reference, atol=0.05)


def test_bf16_train_step_runs():
    x = jax.random.uniform(jax.random.key(3), (2, 8, 8, 8, 1))
    model = GenesisUNet(variant="pytorch", dtype=jnp.bfloat16, **TINY)
    v = init(model, x)

    def loss(params):
        y, _ = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
        return jnp.mean((y - x) ** 2)

    grads = jax.jit(jax.grad(loss))(v["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert jax.tree.leaves(grads)[0].dtype == jnp.float32


@pytest.mark.parametrize(
    "model, shape, fragment",
    [
        (GenesisUNet(**TINY), (1, 12, 16, 16, 1), "dimension X (axis 1) has size 12"),
        (GenesisUNet(**TINY), (1, 16, 16, 20, 1), "dimension Z (axis 3) has size 20"),
        (GenesisUNet(**TINY), (16, 16, 16, 1), "rank-5"),
        (GenesisUNet(**TINY), (1, 16, 16, 16, 2), "channel dimension"),
        (GenesisUNet(ndim=2, **TINY), (1, 16, 16, 16, 1), "rank-4"),
        (UNetPlusPlus(base_width=2), (1, 24, 16, 1), "not divisible by 16"),
        (UNetPlusPlus(base_width=2, prune_level=5), (1, 32, 32, 1), "prune_level"),
    ],
)
def test_bad_input_raises_value_error_naming_the_dimension(model, shape, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))


def test_registry_errors_name_the_field():
    with pytest.raises(ValueError, match="model.name"):
        build_model({"name": "resnet"})
    with pytest.raises(ValueError, match="does not take"):
        build_model({"name": "genesis_unet", "widht": 3})
    assert isinstance(build_model({"name": "genesis_classifier", "num_classes": 2, "base_width": 4}), GenesisClassifier)
