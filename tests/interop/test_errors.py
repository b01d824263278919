"""Bad .pt inputs are refused with a message naming the file and the first problem."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="writing .pt test files needs the 'torch' extra")

from genesis_jax.cli import main  # noqa: E402
from genesis_jax.interop import InteropError, load_published, read_pytorch  # noqa: E402
from tests.interop.torch_unet3d import UNet3D  # noqa: E402


@pytest.fixture
def state():
    torch.manual_seed(0)
    return {f"module.{k}": v for k, v in UNet3D(width=2).state_dict().items()}


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_truncated_file(tmp_path, state, zipfile):
    path = tmp_path / "Genesis_Chest_CT.pt"
    torch.save({"epoch": 1, "state_dict": state}, path, _use_new_zipfile_serialization=zipfile)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InteropError, match=r"Genesis_Chest_CT\.pt: cannot read the PyTorch checkpoint .*truncated"):
        read_pytorch(path)


def test_another_architecture(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3), torch.nn.BatchNorm3d(8))
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.pt")
    with pytest.raises(InteropError, match=r"other\.pt: not a Models Genesis UNet3D checkpoint.*'0\.weight'"):
        read_pytorch(tmp_path / "other.pt")


def test_first_mismatching_key_or_shape_is_named(tmp_path, state):
    extra = {**state, "module.down_tr64.ops.0.relu1.weight": torch.zeros(1)}  # e.g. a PReLU variant
    torch.save(extra, tmp_path / "prelu.pt")
    with pytest.raises(InteropError, match=r"unexpected key 'down_tr64\.ops\.0\.relu1\.weight'"):
        read_pytorch(tmp_path / "prelu.pt")

    missing = {k: v for k, v in state.items() if "up_tr128.up_conv.bias" not in k}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(InteropError, match=r"key 'up_tr128\.up_conv\.bias' .* is missing \(1 missing in all\)"):
        read_pytorch(tmp_path / "missing.pt")

    reshaped = {**state, "module.up_tr256.ops.0.conv1.weight": torch.zeros(16, 20, 3, 3, 3)}
    torch.save(reshaped, tmp_path / "shape.pt")
    message = r"'up_tr256\.ops\.0\.conv1\.weight' has shape \(16, 20, 3, 3, 3\).*needs \(16, 48, 3, 3, 3\)"
    with pytest.raises(InteropError, match=message):
        read_pytorch(tmp_path / "shape.pt")


def test_wrong_class_count(tmp_path, state, capsys):
    torch.save({"epoch": 0, "state_dict": state}, tmp_path / "one_class.pt")
    with pytest.raises(InteropError, match=r"one_class\.pt: the head .* 1 output class\(es\), but 2 were expected"):
        load_published(tmp_path / "one_class.pt", num_classes=2)
    args = ["convert", "--from", str(tmp_path / "one_class.pt"), "--to", str(tmp_path / "w"), "--num-classes", "2"]
    assert main(args) == 1
    assert "but 2 were expected" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_pickled_module_is_not_unpickled(tmp_path):
    torch.save(UNet3D(width=2), tmp_path / "whole_model.pt")
    with pytest.raises(InteropError, match=r"whole_model\.pt: holds pickled Python objects .*weights_only=True"):
        read_pytorch(tmp_path / "whole_model.pt")


def test_bad_paths(tmp_path, capsys):
    (tmp_path / "weights.npz").write_bytes(np.zeros(3).tobytes())
    assert main(["convert", "--from", str(tmp_path / "weights.npz"), "--to", str(tmp_path / "w")]) == 1
    assert "unknown weights format '.npz'" in capsys.readouterr().err
    assert main(["convert", "--from", str(tmp_path / "absent.pt"), "--to", str(tmp_path / "w")]) == 1
    assert "absent.pt: no such file" in capsys.readouterr().err
