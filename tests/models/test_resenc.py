"""nnU-Net's ResidualEncoderUNet / PlainConvUNet in Flax: parameter counts equal dynamic-network-architectures' for
every preset, and outputs equal the PyTorch network's for the same random weights (tiny widths, CPU)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genesis_jax.cli import main
from genesis_jax.config_loader import load_config
from genesis_jax.models import build_model, count_params

PRESETS = ["M", "L", "XL", "nnssl", "L2d", "plain", "tiny"]


def _preset(name):
    config = load_config(f"models/resenc:{name}", [])
    return config.model.to_dict(), tuple(config.input_shape)


def _package():
    pytest.importorskip("torch", reason="needs the 'nnunet' extra (torch, dynamic-network-architectures)")
    pytest.importorskip("dynamic_network_architectures", reason="needs the 'nnunet' extra")
    from tests.interop.nnunet_networks import torch_network

    return torch_network


@pytest.mark.parametrize("preset", PRESETS)
def test_parameter_count_equals_dynamic_network_architectures(preset):
    torch_network = _package()
    model_config, input_shape = _preset(preset)
    network = torch_network(model_config, device="meta")  # shapes only, nothing allocated
    expected = sum(p.numel() for p in network.parameters())
    assert count_params(build_model(model_config), (1, *input_shape)) == expected


def test_summary_prints_the_package_total_for_resenc_l(capsys):
    torch_network = _package()
    model_config, _ = _preset("L")
    expected = sum(p.numel() for p in torch_network(model_config, device="meta").parameters())
    assert main(["summary", "--config=models/resenc:L"]) == 0
    total = re.search(r"Total params: ([\d,]+)", capsys.readouterr().out)[1]
    assert int(total.replace(",", "")) == expected


TINY = {
    "resenc_3d_anisotropic_ds": dict(name="resenc_unet", ndim=3, in_channels=2, num_classes=3,
                                     features_per_stage=[4, 8, 8], kernel_sizes=[[1, 3, 3], 3, 3],
                                     strides=[1, [1, 2, 2], 2], n_blocks_per_stage=[1, 2, 2],
                                     n_conv_per_stage_decoder=[1, 2], deep_supervision=True),
    "plain_3d": dict(name="plain_unet", ndim=3, in_channels=1, num_classes=2, features_per_stage=[4, 8, 16],
                     kernel_sizes=3, strides=[1, 2, 2], n_blocks_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[2, 2]),
    "resenc_2d": dict(name="resenc_unet", ndim=2, in_channels=1, num_classes=2, features_per_stage=[4, 8, 16, 16],
                      kernel_sizes=3, strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 2, 2, 1],
                      n_conv_per_stage_decoder=[1, 1, 1]),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_outputs_equal_pytorch_for_the_same_random_weights(name, tmp_path):
    _package()
    from genesis_jax.interop.nnunet import read_nnunet_checkpoint
    from tests.interop.nnunet_networks import torch_network, torch_outputs

    model_config = TINY[name]
    network = torch_network(model_config, seed=1)
    checkpoint = {"network_weights": network.state_dict(), "genesis_jax": {"model_config": model_config}}
    variables, read_config, _ = read_nnunet_checkpoint(checkpoint, tmp_path / "in_memory.pth")
    model = build_model(read_config)
    spatial = (16, 16, 8) if model_config["ndim"] == 3 else (32, 16)
    x = np.random.default_rng(0).standard_normal((2, *spatial, model_config["in_channels"])).astype(np.float32)
    ours = model.apply(jax.tree.map(jnp.asarray, variables), x)
    ours = ours if isinstance(ours, list) else [ours]
    theirs = torch_outputs(network, x)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


def test_input_not_divisible_by_the_strides_names_the_axis():
    model = build_model(TINY["resenc_3d_anisotropic_ds"])
    with pytest.raises(ValueError, match=r"spatial dimension Y \(axis 2\) has size 6, not divisible by 4"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 8, 6, 8, 2), jnp.float32))


def test_a_one_voxel_bottleneck_is_refused():
    """Instance normalisation over a single voxel outputs only its bias (PyTorch refuses it): the input is lost."""
    model = build_model(TINY["plain_3d"])  # strides 1, 2, 2: a 4x4x4 input leaves 1x1x1
    assert model.smallest_input == (8, 8, 8)
    with pytest.raises(ValueError, match=r"leaves a 1x1x1 bottleneck"):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 4, 4, 4, 1), jnp.float32))
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 8, 4, 4, 1), jnp.float32))


def test_layer_output_bytes_counts_leaf_layers_in_the_compute_dtype():
    import flax.linen as nn

    from genesis_jax.models.summary import layer_output_bytes

    class TwoConvs(nn.Module):
        dtype: object = None

        @nn.compact
        def __call__(self, x):
            return nn.Conv(3, (1, 1), dtype=self.dtype)(nn.Conv(4, (3, 3), dtype=self.dtype)(x))

    assert layer_output_bytes(TwoConvs(), (2, 8, 8, 1)) == 2 * 8 * 8 * (4 + 3) * 4
    assert layer_output_bytes(TwoConvs(jnp.bfloat16), (2, 8, 8, 1)) == 2 * 8 * 8 * (4 + 3) * 2


def test_summary_of_a_training_config_prints_the_memory_per_device(capsys):
    assert main(["summary", "--config=pretrain/resenc_genesis:nnssl"]) == 0
    out = capsys.readouterr().out
    params = int(re.search(r"Total params: ([\d,]+)", out)[1].replace(",", ""))
    line = re.search(r"parameters ([\d.]+) GiB, gradients ([\d.]+) GiB, optimizer state ([\d.]+) GiB, "
                     r"layer outputs ([\d.]+) GiB", out)
    assert float(line[1]) == float(line[2]) == round(4 * params / 2**30, 2)
    assert float(line[3]) == float(line[1])  # SGD with momentum: one float32 copy of the parameters
    assert "per-device batch 2 of (160, 160, 160, 1)" in out and float(line[4]) > 10 * float(line[1])
