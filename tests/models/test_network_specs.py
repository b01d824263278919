"""Every network's declared contract (genesis_jax.models.spec) against the network itself: registered once, its
encoder prefixes select exactly what an encoder-only forward creates, its input divisor is what a forward accepts,
and the adaptation record a weights directory carries."""

import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import genesis_jax.models
from genesis_jax.models import MODELS, NetworkSpec, adaptation_record, build_model, contract
from genesis_jax.models.spec import has_prefix
from genesis_jax.models.weights import ADAPTATION_FILE, CheckpointError, init_adaptation_record, save_weights

NAMES = sorted(MODELS)


def _field(cfg, name: str, default):
    """A network field of a model config, or of its backbone's (a classifier on another network's encoder)."""
    return cfg.get(name, cfg["backbone"].get(name, default) if "backbone" in cfg else default)


def _with_channels(cfg, channels: int) -> dict:
    if "backbone" in cfg:
        return dict(cfg, backbone=dict(cfg["backbone"], in_channels=channels))
    return dict(cfg, in_channels=channels)


def _input(cfg, size: int, batch: int = 1) -> jax.ShapeDtypeStruct:
    ndim, channels = _field(cfg, "ndim", 3), _field(cfg, "in_channels", 1)
    return jax.ShapeDtypeStruct((batch, *(size,) * ndim, channels), jnp.float32)


def _param_shapes(model, x, **kwargs) -> dict[str, jax.ShapeDtypeStruct]:
    shapes = jax.eval_shape(lambda inputs: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                                                      inputs, **kwargs), x)
    return traverse_util.flatten_dict(shapes["params"], sep="/")


def _param_paths(model, x, **kwargs) -> set[str]:
    return set(_param_shapes(model, x, **kwargs))


def test_every_network_module_with_a_spec_is_registered_once():
    declared = {}
    for info in pkgutil.iter_modules(genesis_jax.models.__path__):
        module = importlib.import_module(f"genesis_jax.models.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, NetworkSpec):
            assert spec.name not in declared, f"{spec.name} declared by {declared.get(spec.name)} and {info.name}"
            declared[spec.name] = info.name
    assert declared and set(declared) == set(MODELS), declared
    for name, spec in MODELS.items():
        assert spec.name == name and spec.tiny_config["name"] == name
        assert spec.task in ("segmentation", "classification")


@pytest.mark.parametrize("name", NAMES)
def test_prefixes_select_encoder_stem_and_heads(name):
    spec = MODELS[name]
    cfg = dict(spec.tiny_config)
    network = contract(cfg)
    x = _input(cfg, 2 * network.input_divisor)  # a one-voxel bottleneck is refused (instance norm)
    every = _param_paths(network.module, x)
    encoder = {p for p in every if has_prefix(p, network.encoder)}
    if spec.encoder_apply_kwargs is not None:  # exactly the parameters the encoder-only forward creates
        assert encoder == _param_paths(network.module, x, **spec.encoder_apply_kwargs)
    else:  # everything but the heads
        assert encoder == {p for p in every if not has_prefix(p, network.heads)}
    heads = {p for p in every if has_prefix(p, network.heads)}
    assert heads and not heads & encoder
    assert all(any(has_prefix(p, (prefix,)) for p in every) for prefix in (*network.encoder, *network.heads))
    # the stem reads the input channels: its kernel's input axis follows in_channels, nothing else's does
    two_cfg = _with_channels(cfg, 2)
    assert network.in_channels == _field(cfg, "in_channels", 1) and contract(two_cfg).in_channels == 2
    one, two = _param_shapes(network.module, x), _param_shapes(build_model(two_cfg), _input(two_cfg, x.shape[1]))
    changed = {p for p in one if one[p].shape != two[p].shape}
    assert changed and all(has_prefix(p, network.stem) for p in changed), changed


@pytest.mark.parametrize("name", NAMES)
def test_input_divisor_agrees_with_a_forward(name):
    cfg = dict(MODELS[name].tiny_config)
    network = contract(cfg)
    divisor = network.input_divisor
    assert divisor >= 2  # every registered network pools at least once

    def forward(size: int):
        x = _input(cfg, size, batch=2)
        return jax.eval_shape(lambda inputs: network.module.init_with_output(
            {"params": jax.random.key(0), "dropout": jax.random.key(1)}, inputs)[0], x)

    out = forward(2 * divisor)
    if network.task == "segmentation":
        assert out.shape[1:-1] == (2 * divisor,) * _field(cfg, "ndim", 3)
    else:
        assert out.shape == (2, cfg.get("num_classes", 1))
    for bad in (divisor // 2, divisor + divisor // 2):  # a smaller divisor does not do
        with pytest.raises(ValueError, match="divisible"):
            forward(bad)


@pytest.mark.parametrize("name", NAMES)
def test_weights_directory_records_the_adaptation(name, tmp_path):
    cfg = dict(MODELS[name].tiny_config)
    directory = save_weights(tmp_path / "w", {"params": {"w": np.zeros(2, np.float32)}}, cfg)
    record, origin = init_adaptation_record(directory, cfg)
    assert origin.endswith(ADAPTATION_FILE) and record == adaptation_record(cfg)
    assert record.network == name and record.encoder and record.stem and record.heads
    # weights exported before the record existed: the spec of the network stands in
    (directory / ADAPTATION_FILE).unlink()
    fallback, origin = init_adaptation_record(directory, cfg)
    assert fallback == record and "spec" in origin


def test_adaptation_record_errors(tmp_path):
    directory = save_weights(tmp_path / "w", {"params": {"w": np.zeros(2, np.float32)}}, {"name": "x"})
    assert not (directory / ADAPTATION_FILE).exists()  # no network builds it: nothing to record
    with pytest.raises(CheckpointError, match="model.name must be one of"):
        init_adaptation_record(directory, {"name": "x"})
    (directory / ADAPTATION_FILE).write_text('{"network": "genesis_unet"}')
    with pytest.raises(CheckpointError, match=f"{ADAPTATION_FILE}: not an adaptation record"):
        init_adaptation_record(directory, {"name": "x"})


def test_unetpp_encoder_only_forward_returns_the_deepest_node():
    cfg = dict(MODELS["unetpp"].tiny_config)
    model = build_model(cfg)
    x = jnp.ones((1, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    deepest = model.apply(variables, x, output="bottleneck")
    assert deepest.shape == (1, 2, 2, cfg["base_width"] * 2 ** cfg["depth"])
