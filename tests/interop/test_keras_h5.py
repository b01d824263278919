"""A Keras-layout .h5 (published layer names) converts into the 'keras' variant and computes what Keras would."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the Keras reference model is restated in PyTorch ('torch' extra)")
pytest.importorskip("h5py", reason="reading .h5 files needs h5py ('torch' extra)")

from genesis_jax.cli import main  # noqa: E402
from genesis_jax.interop import InteropError, load_published, read_keras_h5  # noqa: E402
from genesis_jax.models.weights import load_weights  # noqa: E402
from tests.interop.keras_files import HEAD, keras_layers, write_keras_h5  # noqa: E402
from tests.interop.torch_unet3d import UNet3D, randomize  # noqa: E402

WIDTH = 4


@pytest.fixture
def keras_reference():
    """UNet3D in Keras inference behaviour (nearest up-sampling, BN eps 1e-3 on running statistics)."""
    torch.manual_seed(0)
    return randomize(UNet3D(width=WIDTH, keras=True), seed=5).eval()


def test_keras_h5_converts_and_matches_keras_inference(tmp_path, keras_reference):
    layers = keras_layers(keras_reference.state_dict())
    path = write_keras_h5(tmp_path / "Genesis_Chest_CT.h5", layers, whole_model=True)
    model, variables = load_published(path)
    assert model.variant == "keras" and model.base_width == WIDTH and model.num_classes == 1
    params, stats = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(params["decoder_2"]["conv_0"]["kernel"], layers["depth_8_conv"]["kernel"])
    np.testing.assert_array_equal(stats["decoder_0"]["bn_1"]["var"], layers["depth_13_bn"]["moving_variance"])

    x = np.random.default_rng(0).random((2, 16, 16, 8, 1), dtype=np.float32)
    with torch.no_grad():
        expected = keras_reference(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(jax.jit(model.apply)(variables, x))
    assert got.shape == (2, 16, 16, 8, 1)
    np.testing.assert_allclose(got.transpose(0, 4, 1, 2, 3), expected, rtol=0, atol=1e-5)


def test_weights_only_layout_and_cli(tmp_path, keras_reference):
    layers = keras_layers(keras_reference.state_dict())
    whole = write_keras_h5(tmp_path / "whole.h5", layers, whole_model=True)
    weights_only = write_keras_h5(tmp_path / "weights.h5", layers, whole_model=False)
    from_whole, config, metadata = read_keras_h5(whole)
    jax.tree.map(np.testing.assert_array_equal, from_whole, read_keras_h5(weights_only)[0])
    assert metadata["head_layer"] == HEAD and config["variant"] == "keras"

    assert main(["convert", "--from", str(weights_only), "--to", str(tmp_path / "w")]) == 0
    restored, restored_config, _ = load_weights(tmp_path / "w")
    assert restored_config == config
    jax.tree.map(np.testing.assert_array_equal, from_whole, restored)


def test_keras_errors_name_the_problem(tmp_path, keras_reference, capsys):
    layers = keras_layers(keras_reference.state_dict())
    with pytest.raises(InteropError, match="1 output class.*but 2 were expected"):
        read_keras_h5(write_keras_h5(tmp_path / "a.h5", layers, whole_model=False), num_classes=2)

    broken = {**layers, "depth_9_bn": {k: v for k, v in layers["depth_9_bn"].items() if k != "moving_mean"}}
    with pytest.raises(InteropError, match="depth_9_bn/moving_mean .* missing"):
        read_keras_h5(write_keras_h5(tmp_path / "b.h5", broken, whole_model=False))

    classifier = {**layers, "dense_1": {"kernel": np.zeros((512, 1), np.float32)}}
    with pytest.raises(InteropError, match="dense_1.*not the published unet_model_3d"):
        read_keras_h5(write_keras_h5(tmp_path / "c.h5", classifier, whole_model=False))

    data = (tmp_path / "a.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(InteropError, match=r"cut\.h5: cannot open the HDF5 file .*truncated"):
        read_keras_h5(tmp_path / "cut.h5")

    # A Keras model exports to .pt with its variant record (test_convert_cli.py checks the
    # numbers); only a bare state_dict, which cannot carry the record, is refused.
    assert main(["convert", "--from", str(tmp_path / "a.h5"), "--to", str(tmp_path / "k")]) == 0
    assert main(["convert", "--from", str(tmp_path / "k"), "--to", str(tmp_path / "k.pt")]) == 0
    assert main(["convert", "--from", str(tmp_path / "k"), "--to", str(tmp_path / "b.pt"), "--bare-state-dict"]) == 1
    assert "export it without --bare-state-dict" in capsys.readouterr().err
