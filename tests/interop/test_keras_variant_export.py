"""A 'keras'-variant Genesis U-Net (what the fine-tuning configs train) exports to .pt: the UNet3D layout with
nearest-neighbour up-convolutions and a variant record; PyTorch with running-statistics BatchNorm reproduces it, and
converting the file back gives the same keras model bit for bit."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch export tests need the 'torch' extra")

from torch import nn  # noqa: E402

from genesis_jax.cli import main  # noqa: E402
from genesis_jax.interop.pytorch import RECORD_KEY  # noqa: E402
from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.models.weights import load_weights, save_weights  # noqa: E402
from tests.interop.torch_unet3d import ContBatchNorm3d, UNet3D  # noqa: E402

WIDTH = 4
KERAS = {
    "name": "genesis_unet", "variant": "keras", "ndim": 3, "base_width": WIDTH, "depth": 4,
    "in_channels": 1, "num_classes": 1, "head_activation": "sigmoid",
}  # fmt: skip


def _keras_batchnorm(model: nn.Module) -> nn.Module:
    """The recipe the file records: every ContBatchNorm3d becomes BatchNorm3d(eps=1e-3, momentum=0.01)."""
    for name, child in model.named_children():
        if isinstance(child, ContBatchNorm3d):
            setattr(model, name, nn.BatchNorm3d(child.num_features, eps=1e-3, momentum=0.01))
        else:
            _keras_batchnorm(child)
    return model


def test_keras_variant_exports_to_pt_runs_in_pytorch_and_comes_back(tmp_path, capsys):
    model = build_model(KERAS)
    x = np.random.default_rng(1).random((2, 16, 16, 8, 1), dtype=np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(3), x)
    rng = np.random.default_rng(3)  # every variable random (BatchNorm statistics too, variances positive)
    variables = jax.tree.map(lambda s: ((0.5 + rng.random(s.shape)) / np.sqrt(s.size)).astype(np.float32), shapes)
    save_weights(tmp_path / "finetuned", variables, KERAS, {"epoch": 2})

    assert main(["convert", "--from", str(tmp_path / "finetuned"), "--to", str(tmp_path / "ft.pt")]) == 0
    assert "keras variant (in PyTorch: UNet3D with nn.BatchNorm3d(eps=1e-3" in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert checkpoint[RECORD_KEY]["variant"] == "keras" and checkpoint[RECORD_KEY]["batchnorm"]["eps"] == 1e-3
    torch_model = _keras_batchnorm(UNet3D(width=WIDTH))
    torch_model.load_state_dict(checkpoint["state_dict"], strict=True)  # the published layout, up_conv included
    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(jax.jit(model.apply)(variables, x))
    np.testing.assert_allclose(got.transpose(0, 4, 1, 2, 3), expected, rtol=0, atol=1e-5)

    assert main(["convert", "--from", str(tmp_path / "ft.pt"), "--to", str(tmp_path / "back")]) == 0
    assert "keras variant, base width 4" in capsys.readouterr().out
    restored, config, metadata = load_weights(tmp_path / "back")
    assert config == KERAS and metadata["exported_variant"] == "keras"
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, variables), restored)

    # without the checkpoint dict the variant would be lost: refused, naming the flag
    assert main(["convert", "--from", str(tmp_path / "finetuned"), "--to", str(tmp_path / "bare.pt"),
                 "--bare-state-dict"]) != 0
    assert "without --bare-state-dict" in capsys.readouterr().err
    assert not (tmp_path / "bare.pt").exists()


def test_keras_record_with_learned_up_convolutions_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    state = UNet3D(width=WIDTH).state_dict()  # random up_conv weights: not nearest-neighbour
    torch.save({"epoch": 0, "state_dict": state, RECORD_KEY: {"variant": "keras"}}, tmp_path / "odd.pt")
    assert main(["convert", "--from", str(tmp_path / "odd.pt"), "--to", str(tmp_path / "w")]) != 0
    assert "is not a nearest-neighbour up-sampling" in capsys.readouterr().err
