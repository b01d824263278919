"""nnU-Net / nnssl checkpoints out and in, proved by nnU-Net's own loading code.

Out: ``write_nnunet`` -> nnU-Net builds its ResEnc network from a plans dict (``get_network_from_plans``, as
``nnUNetTrainer.build_network_architecture`` does) and ``nnunetv2.run.load_pretrained_weights`` loads our file:
every loaded tensor equals ours and the outputs equal ours. In: files in nnU-Net's and nnssl's layouts (random
weights) read back into genesis_jax weights; ``convert`` round-trips a weights directory bit-identically."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnunetv2 = pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (pip install 'genesis-jax[nnunet]')")
import torch  # noqa: E402  (nnunetv2 depends on torch)

from genesis_jax.cli import main  # noqa: E402
from genesis_jax.interop import read_published  # noqa: E402
from genesis_jax.interop.nnunet import adaptation_plan, write_nnunet  # noqa: E402
from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.models.weights import load_weights, save_weights  # noqa: E402
from tests.interop.nnunet_networks import plans_architecture, torch_network, torch_outputs  # noqa: E402

RESENC = dict(name="resenc_unet", ndim=3, in_channels=1, num_classes=2, features_per_stage=[4, 8, 16],
              kernel_sizes=[3, 3, 3], strides=[1, 2, [1, 2, 2]], n_blocks_per_stage=[1, 2, 2],
              n_conv_per_stage_decoder=[1, 1], conv_bias=True, deep_supervision=False, head_activation=None)
SPATIAL = (16, 16, 8)


def _random_variables(model_config, seed=0):
    """Random genesis_jax variables (norm scales and biases random too)."""
    model = build_model(model_config)
    params = model.init(jax.random.key(seed), jnp.zeros((1, *SPATIAL, model_config["in_channels"])))["params"]
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [np.asarray(0.3 * jax.random.normal(k, leaf.shape)) for k, leaf in zip(keys, leaves)]
    return model, {"params": jax.tree.unflatten(tree, leaves)}


def _nnunet_network(model_config, num_classes):
    """nnU-Net's network for the plans' configuration, built the way nnUNetTrainer builds it."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans_architecture(model_config)
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  model_config["in_channels"], num_classes, allow_init=True, deep_supervision=True)


def test_nnunet_load_pretrained_weights_loads_our_file(tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    model, variables = _random_variables(RESENC)
    path = write_nnunet(variables, RESENC, tmp_path / "resenc.pth", patch_size=SPATIAL)
    network = _nnunet_network(RESENC, num_classes=5)  # another task: only the seg layers differ
    load_pretrained_weights(network, str(path))

    saved = torch.load(path, weights_only=True)["network_weights"]
    loaded = network.state_dict()
    assert set(saved) == set(loaded)  # every key, aliases included, under nnU-Net's names
    transferred = [k for k in loaded if ".seg_layers." not in k]
    for key in transferred:
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0)
    assert len(transferred) > 100  # the encoder (twice: also as decoder.encoder), the decoder and all aliases

    # the same network with our head: outputs equal ours for one input
    network = _nnunet_network(RESENC, num_classes=RESENC["num_classes"])
    load_pretrained_weights(network, str(path))
    network.load_state_dict(saved)  # seg layers too (load_pretrained_weights skips them by design)
    network.decoder.deep_supervision = False
    x = np.random.default_rng(0).standard_normal((1, *SPATIAL, 1)).astype(np.float32)
    (theirs,) = torch_outputs(network.eval(), x)
    ours = np.asarray(model.apply(jax.tree.map(jnp.asarray, variables), x))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(theirs).max()))


def test_adaptation_plan_is_nnssls_layout():
    plan = adaptation_plan(RESENC, (160, 160, 160))
    assert plan["key_to_encoder"] == "encoder.stages" and plan["key_to_stem"] == "encoder.stem"
    assert plan["keys_to_in_proj"] == ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]
    assert plan["recommended_downstream_patchsize"] == [160, 160, 160] and plan["pretrain_num_input_channels"] == 1
    assert plan["architecture_plans"]["arch_class_name"] == "ResidualEncoderUNet"
    assert plan["architecture_plans"]["arch_kwargs"]["n_blocks_per_stage"] == [1, 2, 2]


def _nnunet_trainer_checkpoint(path, model_config, network):
    """A checkpoint as nnUNetTrainer.save_checkpoint writes it (numpy floats in the logs, plans in init_args)."""
    plans = {"configurations": {"3d_lowres": {"architecture": plans_architecture(model_config), "patch_size": SPATIAL},
                                "3d_fullres": {"inherits_from": "3d_lowres"}}}
    torch.save({"network_weights": network.state_dict(), "optimizer_state": {}, "grad_scaler_state": None,
                "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)]}, "_best_ema": np.float64(0.6),
                "current_epoch": 1000, "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2),
                "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": {},
                              "device": torch.device("cpu")}}, path)


def test_reads_an_nnunet_trainer_checkpoint(tmp_path):
    network = torch_network(RESENC, seed=3)
    _nnunet_trainer_checkpoint(tmp_path / "checkpoint_final.pth", RESENC, network)
    variables, model_config, metadata = read_published(tmp_path / "checkpoint_final.pth")
    assert metadata["source_format"] == "nnunet" and metadata["current_epoch"] == 1000
    assert model_config["num_classes"] == 2 and model_config["strides"] == [[1, 1, 1], [2, 2, 2], [1, 2, 2]]
    x = np.random.default_rng(1).standard_normal((1, *SPATIAL, 1)).astype(np.float32)
    (theirs,) = torch_outputs(network, x)
    ours = np.asarray(build_model(model_config).apply(jax.tree.map(jnp.asarray, variables), x))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * float(np.abs(theirs).max()))


def _nnssl_checkpoint(path, network, plan, encoder_only=False):
    state = network.state_dict()
    if encoder_only:  # nnssl's encoder_only networks: the encoder module itself, keys without 'encoder.'
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    torch.save({"network_weights": state, "optimizer_state": {}, "current_epoch": 1000,
                "trainer_name": "BaseMAETrainer", "nnssl_adaptation_plan": plan}, path)


def test_reads_an_nnssl_checkpoint_honouring_its_adaptation_plan(tmp_path):
    network = torch_network(RESENC, seed=4)
    plan = adaptation_plan(RESENC, (32, 32, 16))
    _nnssl_checkpoint(tmp_path / "nnssl.pth", network, plan)
    variables, model_config, metadata = read_published(tmp_path / "nnssl.pth")
    assert metadata["source_format"] == "nnssl" and metadata["adaptation"]["patch_size"] == [32, 32, 16]
    assert metadata["adaptation"]["key_to_encoder"] == "encoder.stages"
    state = network.state_dict()
    np.testing.assert_array_equal(variables["params"]["encoder_stem"]["conv_0"]["kernel"],
                                  state["encoder.stem.convs.0.conv.weight"].numpy().transpose(2, 3, 4, 1, 0))

    # encoder-only: keys under the plan's own encoder/stem keys; the decoder starts fresh and is listed
    plan_encoder_only = {**plan, "key_to_encoder": "stages", "key_to_stem": "stem"}
    _nnssl_checkpoint(tmp_path / "encoder.pth", network, plan_encoder_only, encoder_only=True)
    enc_variables, _, enc_metadata = read_published(tmp_path / "encoder.pth")
    for name in ("encoder_stem", "encoder_0", "encoder_1", "encoder_2"):
        jax.tree.map(np.testing.assert_array_equal, enc_variables["params"][name], variables["params"][name])
    assert enc_metadata["initialised_fresh"] and all(not p.startswith("encoder_")
                                                     for p in enc_metadata["initialised_fresh"])

    # the plan's input channels and patch size are checked against the network
    _nnssl_checkpoint(tmp_path / "bad.pth", network, {**plan, "pretrain_num_input_channels": 4})
    with pytest.raises(ValueError, match="pretrain_num_input_channels=4 but the stem takes 1"):
        read_published(tmp_path / "bad.pth")
    _nnssl_checkpoint(tmp_path / "bad_patch.pth", network, {**plan, "recommended_downstream_patchsize": [32, 30, 16]})
    with pytest.raises(ValueError, match="recommended_downstream_patchsize"):
        read_published(tmp_path / "bad_patch.pth")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"network_weights": {}, "trainer": torch.nn.Conv3d(1, 1, 1)}, tmp_path / "module.pth")
    with pytest.raises(ValueError, match="pickled Python objects"):
        read_published(tmp_path / "module.pth")


def test_convert_round_trips_bit_identically(tmp_path, capsys):
    _, variables = _random_variables(RESENC, seed=7)
    save_weights(tmp_path / "weights", variables, RESENC, {"step": 3})
    assert main(["convert", "--from", str(tmp_path / "weights"), "--to", str(tmp_path / "x.pth"),
                 "--format=nnunet"]) == 0
    assert main(["convert", "--from", str(tmp_path / "x.pth"), "--to", str(tmp_path / "back")]) == 0
    back, model_config, _ = load_weights(tmp_path / "back")
    assert model_config == RESENC
    flat_in = jax.tree_util.tree_flatten_with_path(variables)[0]
    flat_out = jax.tree_util.tree_flatten_with_path(back)[0]
    assert [p for p, _ in flat_in] == [p for p, _ in flat_out]
    for (path, a), (_, b) in zip(flat_in, flat_out):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
