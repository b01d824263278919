"""The published PyTorch checkpoint format converts into a Flax model that computes what PyTorch computes."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch parity tests need the 'torch' extra")

from genesis_jax.interop import load_published, read_pytorch  # noqa: E402
from genesis_jax.models import GenesisUNet  # noqa: E402
from tests.interop.torch_unet3d import UNet3D, randomize  # noqa: E402


def _published_checkpoint(path, width=32):
    """A UNet3D trained one SGD step under DataParallel, saved like Genesis_Chest_CT.py does."""
    torch.manual_seed(0)
    model = randomize(UNet3D(width=width), seed=1)
    parallel = torch.nn.DataParallel(model)
    optimizer = torch.optim.SGD(parallel.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(2, 1, 16, 16, 8)
    torch.nn.functional.mse_loss(parallel(x), x).backward()
    optimizer.step()
    state = {k: v.clone() for k, v in parallel.state_dict().items()}
    assert all(k.startswith("module.") for k in state)
    torch.save({"epoch": 7, "state_dict": state, "optimizer_state_dict": optimizer.state_dict()}, path)
    return model, state


def test_published_unet3d_output_and_features_match_pytorch(tmp_path):
    torch_model, state = _published_checkpoint(tmp_path / "Genesis_Chest_CT.pt")
    model, variables = load_published(tmp_path / "Genesis_Chest_CT.pt")
    assert isinstance(model, GenesisUNet) and model.variant == "pytorch" and model.base_width == 32

    # The running statistics are carried along (unused by the batch-statistics BatchNorm).
    np.testing.assert_array_equal(
        variables["batch_stats"]["decoder_2"]["bn_1"]["var"], state["module.up_tr256.ops.1.bn1.running_var"].numpy()
    )
    x = np.random.default_rng(0).random((2, 1, 16, 16, 8), dtype=np.float32)
    reference64 = UNet3D(width=32).double()  # float64 arbiter for the features (see below)
    reference64.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    with torch.no_grad():
        torch_model.eval()  # ContBatchNorm3d still normalises with batch statistics, as published
        expected = torch_model(torch.from_numpy(x)).numpy()
        reference64(torch.from_numpy(x).double())
    with jax.default_matmul_precision("highest"):
        got = jax.jit(lambda v, inp: model.apply(v, inp, output="features"))(variables, x.transpose(0, 2, 3, 4, 1))
    to_ncdhw = lambda a: np.asarray(a).transpose(0, 4, 1, 2, 3)  # noqa: E731
    assert got["prediction"].shape == (2, 16, 16, 8, 1)
    np.testing.assert_allclose(to_ncdhw(got["prediction"]), expected, rtol=0, atol=1e-5)

    # Features (values up to ~6) pass through eight BatchNorms over few voxels, which amplify float32 rounding:
    # PyTorch's own float32 features are ~1.6e-5 away from its float64 ones. So they are held to 1e-5 of their
    # scale against the float64 PyTorch model, and to be no less accurate than PyTorch float32 itself.
    for name, torch32, torch64 in [
        ("bottleneck", torch_model.out512, reference64.out512),
        ("decoder", torch_model.out_up_64, reference64.out_up_64),
    ]:
        truth = torch64.numpy()
        ours = np.abs(to_ncdhw(got[name]) - truth).max()
        theirs = np.abs(torch32.numpy() - truth).max()
        assert ours <= 1e-5 * np.abs(truth).max(), (name, ours)
        assert ours <= 2 * theirs + 1e-6, (name, ours, theirs)


def test_metadata_records_the_source(tmp_path):
    _published_checkpoint(tmp_path / "w.pt", width=2)
    variables, config, metadata = read_pytorch(tmp_path / "w.pt")
    assert config == {
        "name": "genesis_unet", "variant": "pytorch", "ndim": 3, "base_width": 2, "depth": 4,
        "in_channels": 1, "num_classes": 1, "head_activation": "sigmoid",
    }  # fmt: skip
    assert metadata["epoch"] == 7 and metadata["stripped_prefix"] == "module."
    assert metadata["source_format"] == "pytorch"
    assert set(variables) == {"params", "batch_stats"}
