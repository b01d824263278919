"""`genesis-jax convert` both ways, and the Flax -> .pt -> Flax round trip of both variants (a 'keras'-variant
U-Net, what the fine-tuning configs train, goes out with nearest-neighbour up-convolutions and a variant record;
PyTorch with running-statistics BatchNorm reproduces it)."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch export tests need the 'torch' extra")

from genesis_jax.cli import main  # noqa: E402
from torch import nn  # noqa: E402

from genesis_jax.interop import read_pytorch  # noqa: E402
from genesis_jax.interop.pytorch import RECORD_KEY  # noqa: E402
from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.models.weights import load_weights, save_weights  # noqa: E402
from tests.interop.torch_unet3d import ContBatchNorm3d, UNet3D, randomize  # noqa: E402

WIDTH = 4
CONFIG = {
    "name": "genesis_unet", "variant": "pytorch", "ndim": 3, "base_width": WIDTH, "depth": 4,
    "in_channels": 1, "num_classes": 1, "head_activation": "sigmoid",
}  # fmt: skip
KERAS = dict(CONFIG, variant="keras")


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def _random_variables(model, x):
    """Random values in every variable (BatchNorm statistics and affine parameters included, variances positive),
    so a swapped mapping cannot go unnoticed; shapes from the model without compiling its init."""
    shapes = jax.eval_shape(model.init, jax.random.key(3), x)
    rng = np.random.default_rng(3)
    return jax.tree.map(lambda s: ((0.5 + rng.random(s.shape)) / np.sqrt(s.size)).astype(np.float32), shapes)


@pytest.mark.parametrize("variant", ["pytorch", "keras"])
def test_flax_model_exports_to_pytorch_and_back_exactly(variant, tmp_path, capsys):
    config = dict(CONFIG, variant=variant)
    model = build_model(config)
    x = np.random.default_rng(1).random((2, 16, 16, 8, 1), dtype=np.float32)
    variables = _random_variables(model, x)
    save_weights(tmp_path / "ours", variables, config, {"epoch": 3})

    assert main(["convert", "--from", str(tmp_path / "ours"), "--to", str(tmp_path / "ours.pt")]) == 0
    assert f"{variant} variant" in capsys.readouterr().out
    checkpoint = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert checkpoint["epoch"] == 3
    if variant == "keras":  # the recorded recipe: running-statistics BatchNorm with the Keras eps
        assert checkpoint[RECORD_KEY]["variant"] == "keras" and checkpoint[RECORD_KEY]["batchnorm"]["eps"] == 1e-3
        torch_model = _keras_batchnorm(UNet3D(width=WIDTH))
    else:
        assert RECORD_KEY not in checkpoint  # the published format exactly
        torch_model = UNet3D(width=WIDTH)
    torch_model.load_state_dict(checkpoint["state_dict"], strict=True)  # the published layout, up_conv included
    torch_model.eval()
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(jax.jit(model.apply)(variables, x))
    np.testing.assert_allclose(got.transpose(0, 4, 1, 2, 3), expected, rtol=0, atol=1e-5)

    assert main(["convert", "--from", str(tmp_path / "ours.pt"), "--to", str(tmp_path / "back")]) == 0
    assert f"{variant} variant, base width 4" in capsys.readouterr().out
    restored, restored_config, metadata = load_weights(tmp_path / "back")
    assert restored_config == config and metadata["epoch"] == 3
    _assert_trees_equal(jax.tree.map(np.asarray, variables), restored)


def test_pytorch_file_round_trips_exactly_in_every_export_form(tmp_path):
    torch.manual_seed(0)
    state = randomize(UNet3D(width=WIDTH, n_class=3), seed=2).state_dict()
    # A bare state_dict in PyTorch's legacy (pre-1.6, non-zip) serialisation, as an old checkpoint may be.
    torch.save(state, tmp_path / "bare.pt", _use_new_zipfile_serialization=False)
    assert main(["convert", "--from", str(tmp_path / "bare.pt"), "--to", str(tmp_path / "w"), "--num-classes=3"]) == 0
    imported, config, _ = load_weights(tmp_path / "w")
    assert config["num_classes"] == 3
    _assert_trees_equal(read_pytorch(tmp_path / "bare.pt")[0], imported)

    for flags in ([], ["--module-prefix"], ["--bare-state-dict"]):
        out = tmp_path / f"export{len(flags)}{''.join(flags)}.pt"
        assert main(["convert", "--from", str(tmp_path / "w"), "--to", str(out), *flags]) == 0
        loaded = torch.load(out, weights_only=True)
        exported = loaded if "--bare-state-dict" in flags else loaded["state_dict"]
        prefix = "module." if "--module-prefix" in flags else ""
        assert set(exported) == {prefix + k for k in state}
        for key, value in state.items():
            torch.testing.assert_close(exported[prefix + key], value, rtol=0, atol=0)
        _assert_trees_equal(read_pytorch(out)[0], imported)


def test_destination_is_protected(tmp_path, capsys):
    torch.save(UNet3D(width=2).state_dict(), tmp_path / "a.pt")
    assert main(["convert", "--from", str(tmp_path / "a.pt"), "--to", str(tmp_path / "w")]) == 0
    assert main(["convert", "--from", str(tmp_path / "a.pt"), "--to", str(tmp_path / "w")]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", "--from", str(tmp_path / "a.pt"), "--to", str(tmp_path / "w"), "--overwrite"]) == 0
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    assert main(["convert", "--from", str(tmp_path / "a.pt"), "--to", str(tmp_path / "notes"), "--overwrite"]) == 1
    assert "not a weights directory" in capsys.readouterr().err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def _keras_batchnorm(model: nn.Module) -> nn.Module:
    """The recipe the file records: every ContBatchNorm3d becomes BatchNorm3d(eps=1e-3, momentum=0.01)."""
    for name, child in model.named_children():
        if isinstance(child, ContBatchNorm3d):
            setattr(model, name, nn.BatchNorm3d(child.num_features, eps=1e-3, momentum=0.01))
        else:
            _keras_batchnorm(child)
    return model


def test_keras_variant_needs_the_checkpoint_dict(tmp_path, capsys):
    variables = _random_variables(build_model(KERAS), np.zeros((1, 8, 8, 8, 1), np.float32))
    save_weights(tmp_path / "finetuned", variables, KERAS)
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
