"""`genesis-jax convert` both ways, and the Flax -> .pt -> Flax round trip."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch export tests need the 'torch' extra")

from genesis_jax.cli import main  # noqa: E402
from genesis_jax.interop import read_pytorch  # noqa: E402
from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.models.weights import load_weights, save_weights  # noqa: E402
from tests.interop.torch_unet3d import UNet3D, randomize  # noqa: E402

WIDTH = 4
CONFIG = {
    "name": "genesis_unet", "variant": "pytorch", "ndim": 3, "base_width": WIDTH, "depth": 4,
    "in_channels": 1, "num_classes": 1, "head_activation": "sigmoid",
}  # fmt: skip


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_flax_model_exports_to_pytorch_and_back_exactly(tmp_path, capsys):
    model = build_model(CONFIG)
    x = np.random.default_rng(1).random((2, 16, 16, 8, 1), dtype=np.float32)
    # Random values in every variable (BatchNorm statistics and affine parameters included, variances positive),
    # so a swapped mapping cannot go unnoticed; shapes from the model without compiling its init.
    shapes = jax.eval_shape(model.init, jax.random.key(3), x)
    rng = np.random.default_rng(3)
    variables = jax.tree.map(lambda s: ((0.5 + rng.random(s.shape)) / np.sqrt(s.size)).astype(np.float32), shapes)
    save_weights(tmp_path / "ours", variables, CONFIG, {"epoch": 3})

    assert main(["convert", "--from", str(tmp_path / "ours"), "--to", str(tmp_path / "ours.pt")]) == 0
    checkpoint = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert checkpoint["epoch"] == 3
    torch_model = UNet3D(width=WIDTH)
    torch_model.load_state_dict(checkpoint["state_dict"], strict=True)  # the published UNet3D loads it
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x.transpose(0, 4, 1, 2, 3))).numpy()
    with jax.default_matmul_precision("highest"):
        got = np.asarray(jax.jit(model.apply)(variables, x))
    np.testing.assert_allclose(got.transpose(0, 4, 1, 2, 3), expected, rtol=0, atol=1e-5)

    assert main(["convert", "--from", str(tmp_path / "ours.pt"), "--to", str(tmp_path / "back")]) == 0
    assert "pytorch variant, base width 4" in capsys.readouterr().out
    restored, config, metadata = load_weights(tmp_path / "back")
    assert config == CONFIG and metadata["epoch"] == 3
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
