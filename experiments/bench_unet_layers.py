"""Fwd+bwd time of every 3^3 convolution of the Genesis U-Net (`pytorch` variant, depth 4) at its own shape, in
XLA's `native` form, the library's `depth_taps` form and PyTorch's Conv3d, one layer at a time, to see where a
whole step's time goes (bench_step.py times the whole step).

  taskset -c 1 env XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false" \\
      python experiments/bench_unet_layers.py --torch-threads 1

Expected: one line per layer (input -> output channels, shape, milliseconds per form) and a total line; the table
is written to --out (default experiments/results/bench_unet_layers_<platform>.md). The image layer (1 input
channel) is timed without its input gradient, as in training. Each time is the median of --rounds calls after one
untimed call (models/timing.median_seconds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_conv_layer import native, taps  # experiments/ is on sys.path when run as a script

from genesis_jax.models.timing import median_seconds
from genesis_jax.runtime import tune_cpu_runtime


def unet_layers(width: int, cube: tuple[int, int, int], batch: int) -> list[tuple[int, int, tuple[int, ...]]]:
    """(in channels, out channels, N X Y Z) of each 3^3 convolution, encoder then decoder."""
    def shape(level: int) -> tuple[int, ...]:
        return (batch, *(s >> level for s in cube))

    w = width
    encoder = [(1, w, 0), (w, 2 * w, 0), (2 * w, 2 * w, 1), (2 * w, 4 * w, 1), (4 * w, 4 * w, 2), (4 * w, 8 * w, 2),
               (8 * w, 8 * w, 3), (8 * w, 16 * w, 3)]
    decoder = [(24 * w, 8 * w, 2), (8 * w, 8 * w, 2), (12 * w, 4 * w, 1), (4 * w, 4 * w, 1), (6 * w, 2 * w, 0),
               (2 * w, 2 * w, 0)]
    return [(cin, cout, shape(level)) for cin, cout, level in encoder + decoder]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--cube", default="64,64,32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (default torch's own)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    tune_cpu_runtime()  # as the genesis-jax command does: the allocator setting applies to PyTorch too
    cube = tuple(int(v) for v in args.cube.split(","))
    torch = None
    if not args.no_torch:
        import torch

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)

    key = jax.random.key(0)
    header = "| layer | N,X,Y,Z | native ms | depth_taps ms | PyTorch ms |"
    rows, totals = [], {"native": 0.0, "depth_taps": 0.0, "torch": 0.0}
    for cin, cout, shape in unet_layers(args.width, cube, args.batch):
        x = jax.random.normal(key, (*shape, cin))
        w = jax.random.normal(key, (3, 3, 3, cin, cout)) * 0.05
        g = jax.random.normal(key, (*shape, cout))
        wrt = (1,) if cin == 1 else (0, 1)  # the image layer needs no input gradient
        ms = {}
        for name, form in (("native", native), ("depth_taps", taps)):
            grad = jax.jit(jax.grad(lambda a, b, c, f=form: jnp.sum(f(a, b) * c), wrt)).lower(x, w, g).compile()
            ms[name] = median_seconds(grad, x, w, g, repeats=args.rounds) * 1e3
        if torch is not None:
            conv = torch.nn.Conv3d(cin, cout, 3, padding=1)
            tx = torch.randn(shape[0], cin, *shape[1:], requires_grad=cin > 1)

            def torch_step(conv=conv, tx=tx) -> None:
                y = conv(tx)
                y.backward(torch.ones_like(y))

            ms["torch"] = median_seconds(torch_step, repeats=args.rounds) * 1e3
        for k, v in ms.items():
            totals[k] += v
        torch_ms = f"{ms['torch']:.0f}" if "torch" in ms else "-"
        line = (f"| {cin}->{cout} | {','.join(map(str, shape))} | {ms['native']:.0f} | {ms['depth_taps']:.0f} | "
                f"{torch_ms} |")
        print(line, flush=True)
        rows.append(line)
    torch_total = f"{totals['torch']:.0f}" if torch is not None else "-"
    total = f"| total | | {totals['native']:.0f} | {totals['depth_taps']:.0f} | {torch_total} |"
    print(total)
    platform = jax.default_backend()
    out = Path(args.out or REPO / f"experiments/results/bench_unet_layers_{platform}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    tinfo = f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads" if torch is not None else "no PyTorch"
    out.write_text(
        f"# bench_unet_layers\n\nCommand: `python experiments/bench_unet_layers.py {' '.join(sys.argv[1:])}`\n\n"
        f"Device: {jax.devices()[0].device_kind} ({platform}); jax {jax.__version__}; {tinfo}. Width {args.width}, "
        f"cube {args.cube}, batch {args.batch}; fwd+bwd per layer, median of {args.rounds}.\n\n"
        + "\n".join([header, "|---|---|---|---|---|", *rows, total]) + "\n"
    )
    print(f"table written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
