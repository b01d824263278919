"""Parity of the converted published PyTorch UNet3D with PyTorch itself (float32 and float64 references).

Run:  python experiments/interop_parity.py        (needs the torch extra; a few seconds on CPU)
Builds the published UNet3D restatement from the tests with random, non-default BatchNorm weights, saves it in the
published checkpoint format, converts it with genesis_jax.interop.load_published, and prints the max |difference|
of the sigmoid output, the bottleneck and the last decoder features. Writes experiments/results/interop_parity.md.
"""

import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from genesis_jax.interop import load_published  # noqa: E402
from tests.interop.test_pytorch_parity import _published_checkpoint  # noqa: E402
from tests.interop.torch_unet3d import UNet3D  # noqa: E402


def main() -> None:
    workdir = pathlib.Path(tempfile.mkdtemp())
    torch_model, state = _published_checkpoint(workdir / "Genesis_Chest_CT.pt")
    model, variables = load_published(workdir / "Genesis_Chest_CT.pt")
    torch64 = UNet3D().double()
    torch64.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    x = np.random.default_rng(0).random((2, 1, 16, 16, 8), dtype=np.float32)
    with torch.no_grad():
        torch_model.eval()
        p32 = torch_model(torch.from_numpy(x)).numpy()
        p64 = torch64(torch.from_numpy(x).double()).numpy()
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(lambda v, i: model.apply(v, i, output="features"))(variables, x.transpose(0, 2, 3, 4, 1))

    def to_torch_layout(a):
        return np.asarray(a).transpose(0, 4, 1, 2, 3)

    rows = ["| tensor | max abs value | ours vs torch f32 | ours vs torch f64 | torch f32 vs torch f64 |", "|---|---|---|---|---|"]
    for name, a32, a64 in [
        ("prediction", p32, p64),
        ("bottleneck", torch_model.out512.numpy(), torch64.out512.numpy()),
        ("decoder", torch_model.out_up_64.numpy(), torch64.out_up_64.numpy()),
    ]:
        ours_a = to_torch_layout(ours[name])
        rows.append(
            f"| {name} | {np.abs(a64).max():.3g} | {np.abs(ours_a - a32).max():.2g} | "
            f"{np.abs(ours_a - a64).max():.2g} | {np.abs(a32 - a64).max():.2g} |"
        )
    header = (
        f"Published UNet3D (full width, random weights), batch 2 of 16x16x8, device {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, torch {torch.__version__}, matmul precision 'highest'\n\n"
    )
    text = header + "\n".join(rows) + "\n"
    print(text)
    out = pathlib.Path(__file__).resolve().parent / "results" / "interop_parity.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
