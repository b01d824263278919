"""Transfer: what is loaded for segmentation and classification, the report, shape errors, parameter groups."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from genesis_jax.models import adaptation_record, build_model
from genesis_jax.models.weights import save_weights
from genesis_jax.train.checkpointing import load_init_weights
from genesis_jax.train.transfer import (
    TransferError,
    count_group_sizes,
    group_scaling,
    parameter_groups,
    scratch_model_config,
    transfer_variables,
)

UNET = {"name": "genesis_unet", "variant": "keras", "ndim": 3, "base_width": 2, "depth": 2}
REC = adaptation_record(UNET)
X = np.zeros((1, 4, 4, 4, 1), np.float32)


_INITS = {}


def _init(cfg, x=X, seed=0):
    """Initialised variables, cached per (config, input shape, seed): each jitted init costs seconds on CPU."""
    key = (tuple(sorted(cfg.items())), x.shape, seed)
    if key not in _INITS:
        model = build_model(cfg)
        _INITS[key] = jax.tree.map(np.asarray, jax.jit(model.init)(jax.random.key(seed), x))
    return _INITS[key]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    variables = _init(UNET, seed=1)
    root = tmp_path_factory.mktemp("pre")
    save_weights(root / "weights", variables, UNET, {"step": 3})
    return variables, root / "weights"


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


def test_segmentation_takes_encoder_decoder_and_a_new_head(pretrained, caplog):
    source, directory = pretrained
    loaded, cfg, meta = load_init_weights(directory)
    assert cfg == UNET and meta == {"step": 3}
    target = _init(UNET)
    variables, report = transfer_variables(target, loaded, "segmentation", source_name=str(directory),
                                           target_record=REC)
    flat, src, tgt = _flat(variables), _flat(source), _flat(target)
    for path in flat:
        expected = tgt[path] if path.startswith("params/head/") else src[path]
        np.testing.assert_array_equal(flat[path], expected, err_msg=path)
    assert sorted(report.fresh) == ["params/head/bias", "params/head/kernel"]
    assert report.unused == ["params/head/bias", "params/head/kernel"]
    assert "batch_stats/encoder_0/bn_0/mean" in report.loaded
    # the logger named: an earlier CLI test in the same process may have set the package logger's level to INFO
    with caplog.at_level(logging.DEBUG, logger="genesis_jax.train.transfer"):
        report.log()
    assert "new     params/head/kernel" in caplog.text and "loaded  params/decoder_0/conv_1/kernel" in caplog.text


def test_keep_head_and_class_count_mismatch(pretrained):
    source, _ = pretrained
    variables, report = transfer_variables(_init(UNET), source, "segmentation", keep_head=True, target_record=REC)
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], source["params"]["head"]["kernel"])
    assert not report.fresh and not report.unused
    two = dict(UNET, num_classes=2)
    _, report = transfer_variables(_init(two), source, "segmentation", target_record=REC)  # new head: fine
    with pytest.raises(TransferError, match=r"params/head/bias has shape \(1,\).*params/head/bias has shape \(2,\)"):
        transfer_variables(_init(two), source, "segmentation", keep_head=True, target_record=REC)


def test_width_mismatch_names_the_parameter(pretrained):
    source, _ = pretrained
    message = r"parameter params/decoder_0/bn_0/bias has shape \(4,\) but .* has shape \(8,\)"
    with pytest.raises(TransferError, match=message):
        transfer_variables(_init(dict(UNET, base_width=4)), source, "segmentation", target_record=REC)


def test_foreign_weights_rejected(pretrained):
    unetpp = {"name": "unetpp", "ndim": 2, "base_width": 2, "depth": 2}
    with pytest.raises(TransferError, match="no parameter of the target network"):
        transfer_variables(_init(unetpp, np.zeros((1, 4, 4, 1), np.float32)), pretrained[0], "segmentation",
                           target_record=adaptation_record(unetpp), source_record=REC)


def test_classification_takes_the_encoder_only(pretrained):
    source, _ = pretrained
    cfg = dict(UNET, name="genesis_classifier", num_classes=3, hidden=8)
    target = _init(cfg)
    variables, report = transfer_variables(target, source, "classification", target_record=adaptation_record(cfg),
                                           source_record=REC)
    loaded = variables["params"]["backbone"]["encoder_1"]["conv_1"]["kernel"]
    np.testing.assert_array_equal(loaded, source["params"]["encoder_1"]["conv_1"]["kernel"])
    assert all(p.startswith(("params/head/",)) for p in report.fresh)
    assert {p.split("/")[1] for p in report.unused} == {"decoder_0", "head"}
    assert "batch_stats/backbone/encoder_0/bn_0/var" in report.loaded
    # a fine-tuned classifier's weights load into a classifier too (backbone/ paths)
    _, again = transfer_variables(target, variables, "classification", target_record=adaptation_record(cfg))
    assert "params/backbone/encoder_0/conv_0/kernel" in again.loaded


def test_unetpp_segmentation_transfer_replaces_all_heads():
    cfg = {"name": "unetpp", "ndim": 2, "base_width": 2, "depth": 2, "dropout": 0.0}
    x = np.zeros((1, 4, 4, 1), np.float32)
    _, report = transfer_variables(_init(cfg, x), _init(cfg, x, seed=1), "segmentation",
                                   target_record=adaptation_record(cfg))
    assert {p.split("/")[1] for p in report.fresh} == {"head_1", "head_2"}


def test_encoder_paths():
    """The encoder prefixes each network's spec declares (tests/models/test_network_specs.py checks them against
    the parameters an encoder-only forward creates)."""
    assert adaptation_record(dict(UNET, depth=4)).encoder == ("encoder_0", "encoder_1", "encoder_2", "encoder_3")
    classifier = adaptation_record(dict(UNET, name="genesis_classifier"))
    assert classifier.encoder == ("backbone/encoder_0", "backbone/encoder_1")
    unetpp = adaptation_record({"name": "unetpp", "ndim": 2, "depth": 2})
    assert unetpp.encoder == ("X_0_0", "X_1_0", "X_2_0") and "X_0_2" not in unetpp.encoder


def test_frozen_encoder_and_lower_lr_for_transferred(pretrained):
    source, _ = pretrained
    variables, report = transfer_variables(_init(UNET), source, "segmentation", target_record=REC)
    params = jax.tree.map(jnp.asarray, variables["params"])
    labels = parameter_groups(params, report.loaded_params(), freeze_encoder=True, encoder=REC.encoder)
    assert labels["encoder_0"]["conv_0"]["kernel"] == "frozen"
    assert labels["decoder_0"]["conv_0"]["kernel"] == "transferred"
    assert labels["head"]["kernel"] == "new"
    sizes = count_group_sizes(params, labels)
    assert set(sizes) == {"frozen", "transferred", "new"} and sizes["new"] == 4 + 1
    tx = optax.chain(optax.sgd(1.0), group_scaling(labels, transferred_lr_scale=0.1))
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(jnp.abs(updates["encoder_0"]["conv_0"]["kernel"]).max()) == 0.0
    np.testing.assert_allclose(updates["decoder_0"]["conv_0"]["kernel"], -0.1)
    np.testing.assert_allclose(updates["head"]["kernel"], -1.0)


def test_scratch_inits():
    assert scratch_model_config(UNET, "he_uniform")["kernel_init"] == "he_uniform"
    assert scratch_model_config(UNET, "uniform")["kernel_init"] == "uniform"
    with pytest.raises(ValueError, match="scratch init 'lecun'"):
        scratch_model_config(UNET, "lecun")
    w = _init(scratch_model_config(UNET, "uniform"))["params"]["encoder_0"]["conv_0"]["kernel"]
    assert np.abs(w).max() <= 0.05
