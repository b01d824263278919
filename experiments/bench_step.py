"""Train-step time of genesis_jax against a PyTorch restatement of the published UNet3D, in one run on one device.

Run:
  python experiments/bench_step.py                         # the configurations for the device found (see below)
  python experiments/bench_step.py --configs 32:64,64,32:2 --dtypes float32 bfloat16
  python experiments/bench_step.py --forms native depth_taps --out experiments/results/bench_step_cpu.md
Expected: one line per measurement, a markdown table (also written to --out, default
experiments/results/bench_step_<platform>.md), then as its LAST line
  step_speed_vs_pytorch: <ratio>x
the PyTorch step time over ours (> 1: ours is faster) at base width 32, 64x64x32 cubes, batch 2, float32 (or the
first configuration measured when that one is not), each framework with its DEFAULT threads (pin both with taskset,
or pass --torch-threads, to measure otherwise); the table names the CPU's ISA (genesis_jax.runtime.cpu_isa) and the
cores XLA may use.

One step is what pre-training runs: forward, MSE backward and the SGD (lr 1.0, momentum 0.9) update of the Genesis
U-Net, `pytorch` variant, BatchNorm with batch statistics as published. Ours is genesis_jax.train.steps'
jitted step (compiled once before timing); PyTorch's is tests/interop/torch_unet3d.py's UNet3D on the same device
(CUDA when JAX runs on a GPU and torch sees one). The two are timed in alternation, one step each per round, after
``--warmup`` untimed rounds (default 2: the first compiles, and the second still finds the host allocator's heap
growing to the step's peak), and the median over rounds is reported, so a machine shared with other jobs slows both
alike.
bfloat16: ours computes in bfloat16 with float32 parameters (``model.dtype``), PyTorch under
``torch.autocast(dtype=torch.bfloat16)``.

``--forms`` times ours once per ``conv_impl`` given (default: only 'auto', the library default); ``--upconv``
also times one 2x up-sampling layer (fwd+bwd) as ``lax.conv_transpose`` (the former flax ConvTranspose) and as the
library's matmul + depth-to-space.

Configurations (base width, cube, batch): on GPU/TPU every one of widths 4 and 32, cubes 32x32x16 and 64x64x32,
batches 2 and 6. On CPU a step of the full-size network at 64x64x32 takes tens of seconds (batch 6 about a minute
for PyTorch, longer for XLA:CPU), so the CPU default leaves out width 32 at batch 6 and says so in the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.runtime import cpu_isa, tune_cpu_runtime  # noqa: E402

FULL_GRID = [(w, c, b) for w in (4, 32) for c in ((32, 32, 16), (64, 64, 32)) for b in (2, 6)]
CPU_LEFT_OUT = [(32, (32, 32, 16), 6), (32, (64, 64, 32), 6)]
HEADLINE = (32, (64, 64, 32), 2, "float32")


def parse_config(text: str) -> tuple[int, tuple[int, int, int], int]:
    """'WIDTH:X,Y,Z:BATCH' -> (width, cube, batch)."""
    try:
        width, cube, batch = text.split(":")
        shape = tuple(int(v) for v in cube.split(","))
        if len(shape) != 3:
            raise ValueError
        return int(width), shape, int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--configs: {text!r} is not WIDTH:X,Y,Z:BATCH (e.g. 32:64,64,32:2)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", type=parse_config, default=None,
                   help="WIDTH:X,Y,Z:BATCH ... (default: see the module docstring)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"],
                   help="default: float32 and bfloat16 on GPU/TPU; float32 on CPU, bfloat16 at the smallest size")
    p.add_argument("--forms", nargs="+", default=["auto"], choices=["auto", "native", "depth_taps"],
                   help="conv_impl values to time ours with")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 20 GPU/TPU, 3 CPU)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds before the timed ones (default 2)")
    p.add_argument("--upconv", action="store_true", help="also time the 2x up-sampling layer in both forms")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (default torch's own; on a CPU shared with other jobs its spinning "
                   "OpenMP threads can be far slower than 1 thread)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's allocator as it is (no genesis_jax.runtime.reuse_freed_host_memory, which the "
                   "genesis-jax command applies on CPU); it is process-wide, so it applies to PyTorch too")
    p.add_argument("--out", default=None, help="markdown table path (default experiments/results/bench_step_<platform>.md)")
    return p.parse_args()


def torch_train_step(torch: Any, width: int, dev: Any, dtype: str = "float32") -> Callable[[Any, Any], None]:
    """One published training step of the PyTorch UNet3D restatement (MSE, SGD lr 1.0 momentum 0.9):
    ``step(x, y)`` with (B, 1, X, Y, Z) tensors on ``dev``."""
    from tests.interop.torch_unet3d import UNet3D

    net = UNet3D(width=width).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.9, weight_decay=0.0)
    loss_fn = torch.nn.MSELoss()
    autocast = dtype == "bfloat16"

    def step(x: Any, y: Any) -> None:
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(net(x).float(), y)
        loss.backward()
        opt.step()

    return step


def torch_device(torch: Any, platform: str) -> Any:
    """CUDA when JAX runs on a GPU and torch sees one, else the CPU."""
    return torch.device("cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu")


def jax_train_step(width: int, cube: tuple[int, int, int], dtype: str, conv_impl: str) -> tuple[Callable, Any]:
    """genesis_jax's pre-training step on the published network; returns (run_one_step, wait)."""
    from genesis_jax.train.mesh import make_mesh
    from genesis_jax.train.schedules import build_optimizer
    from genesis_jax.train.state import create_train_state
    from genesis_jax.train.steps import make_train_step, mse_loss

    mesh = make_mesh(1)
    model = build_model({"name": "genesis_unet", "variant": "pytorch", "base_width": width, "depth": 4,
                         "dtype": dtype, "conv_impl": conv_impl})
    state = create_train_state(model, build_optimizer("sgd", 1.0, momentum=0.9), jax.random.key(0), (*cube, 1), mesh)
    step = make_train_step(mse_loss, mesh=mesh)
    holder = {"state": state}

    def run(batch: Any) -> None:
        holder["state"], _ = step(holder["state"], batch)

    return run, lambda: jax.block_until_ready(holder["state"].params)


def upconv_rows(rounds: int) -> list[str]:
    """fwd+bwd ms of one 2x up-sampling layer, lax.conv_transpose vs transpose_conv_2x (batch 2; on CPU only the
    deepest layer's shape, the others take minutes there in the lax form)."""
    from genesis_jax.models.layers import transpose_conv_2x
    from genesis_jax.models.timing import median_seconds

    def lax_form(x: jax.Array, k: jax.Array) -> jax.Array:
        return jax.lax.conv_transpose(x, k, (2, 2, 2), "VALID", dimension_numbers=("NXYZC", "XYZIO", "NXYZC"))

    rows = []
    shapes = [(2, 8, 8, 4, 512), (2, 16, 16, 8, 256), (2, 32, 32, 16, 128)]
    for shape in shapes[:1] if jax.default_backend() == "cpu" else shapes:  # XLA:CPU: seconds to minutes each
        x = jax.random.normal(jax.random.key(0), shape)
        k = jax.random.normal(jax.random.key(1), (2, 2, 2, shape[-1], shape[-1])) * 0.05
        times = {}
        for name, f in [("lax.conv_transpose", lax_form), ("matmul + depth-to-space", transpose_conv_2x)]:
            g = jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(f(a, b) ** 2), (0, 1)))
            times[name] = median_seconds(g, x, k, repeats=rounds) * 1e3
        line = (f"| up-conv {'x'.join(map(str, shape[1:-1]))}x{shape[-1]} -> {shape[-1]}, batch 2 | "
                + " | ".join(f"{v:.1f}" for v in times.values()) + " |")
        print(line, flush=True)
        rows.append(line)
    return ["| layer (fwd+bwd, float32) | lax.conv_transpose ms | matmul + depth-to-space ms |", "|---|---|---|"] + rows


def main() -> int:
    args = parse_args()
    tuned = tune_cpu_runtime(reuse_memory=not args.default_malloc)
    platform = jax.devices()[0].platform
    on_cpu = platform == "cpu"
    rounds = args.rounds or (3 if on_cpu else 20)
    configs = args.configs or ([c for c in FULL_GRID if c not in CPU_LEFT_OUT] if on_cpu else FULL_GRID)
    if args.dtypes:
        plan = [(c, d) for c in configs for d in args.dtypes]
    elif on_cpu:
        plan = [(c, "float32") for c in configs] + [(configs[0], "bfloat16")]
    else:
        plan = [(c, d) for c in configs for d in ("float32", "bfloat16")]

    # the ISA and the cores each framework may use: the headline is with both frameworks' default threads
    cores = f", {cpu_isa()}, {len(os.sched_getaffinity(0))} of {os.cpu_count()} cores for XLA" if on_cpu else ""
    device = f"{jax.devices()[0].device_kind} ({platform}{cores})"
    xla_flags = os.environ.get("XLA_FLAGS") or "(none)"
    glibc_tunables = os.environ.get("GLIBC_TUNABLES")  # process-wide: both frameworks get it
    tunables = f"; GLIBC_TUNABLES: {glibc_tunables}" if glibc_tunables else ""
    if tuned.get("reuse_freed_host_memory"):
        tunables += "; host allocator: genesis_jax.runtime.reuse_freed_host_memory (both frameworks)"
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: PyTorch columns left empty")
        else:
            if args.torch_threads:
                torch.set_num_threads(args.torch_threads)
    tdev = torch_device(torch, platform) if torch is not None else None
    tname = "" if tdev is None else (torch.cuda.get_device_name(tdev) if tdev.type == "cuda" else "cpu")

    def load() -> str:
        return f"{os.getloadavg()[0]:.1f}"

    tname += f", {torch.get_num_threads()} threads" if tdev is not None and tdev.type == "cpu" else ""
    print(f"device: {device}; jax {jax.__version__}; XLA_FLAGS: {xla_flags}{tunables}; torch "
          f"{getattr(torch, '__version__', '-')} on {tname or '-'}; {rounds} rounds; load average {load()}", flush=True)

    header = ("| width | cube | batch | dtype | " + " | ".join(f"ours ({f}) ms" for f in args.forms)
              + " | PyTorch ms | PyTorch / ours | load average |")
    left_out = ""
    if on_cpu and args.configs is None:
        left_out = ("CPU: configurations left out because one step takes minutes here: "
                    + ", ".join(f"width {w} {'x'.join(map(str, c))} batch {b}" for w, c, b in CPU_LEFT_OUT) + ".")
    out = Path(args.out or REPO / f"experiments/results/bench_step_{platform}.md")
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(rows: list[str], headline: dict[str, Any], up: list[str], done: bool) -> str:
        """The table so far (rewritten after every row, so a run cut short keeps what it measured)."""
        hw, hc, hb, hd = headline["what"]
        summary = f"step_speed_vs_pytorch: {headline['ratio']:.2f}x"
        partial = "" if done else f"PARTIAL: {len(rows)} of {len(plan)} rows so far. "
        out.write_text(
            f"# bench_step\n\nCommand: `python experiments/bench_step.py {' '.join(sys.argv[1:])}`\n\n"
            f"Device: {device}; jax {jax.__version__}; XLA_FLAGS: `{xla_flags}`{tunables}; PyTorch "
            f"{getattr(torch, '__version__', '-')} on {tname or '-'}. {partial}Median of {rounds} rounds, ours and "
            f"PyTorch in alternation ({args.warmup} untimed rounds first). Step = fwd + MSE bwd + SGD update of the Genesis U-Net "
            f"`pytorch` variant (BatchNorm on batch statistics), depth 4. Load average = 1-minute load at the start "
            f"and end of each row (the machine may be shared). {left_out}\n\n"
            + "\n".join([header, "|" + "---|" * (len(args.forms) + 7), *rows]) + "\n\n"
            + ("\n".join(up) + "\n\n" if up else "")
            + f"{summary} (width {hw}, {'x'.join(map(str, hc))}, batch {hb}, {hd}, conv_impl {args.forms[0]})\n"
        )
        return summary

    rows, headline = [], {}
    for (width, cube, batch), dtype in plan:
        rng = np.random.default_rng(0)
        pairs = {k: rng.random((batch, *cube, 1), dtype=np.float32) for k in ("inputs", "targets")}
        ours = {}
        for form in args.forms:
            ours[form] = jax_train_step(width, cube, dtype, form)
        batch_dev = jax.device_put(pairs)
        tstep = tx = ty = None
        if torch is not None:
            tstep = torch_train_step(torch, width, tdev, dtype)
            tx, ty = (torch.from_numpy(np.ascontiguousarray(pairs[k][..., 0][:, None])).to(tdev)
                      for k in ("inputs", "targets"))
        tsync = (lambda: torch.cuda.synchronize()) if tdev is not None and tdev.type == "cuda" else (lambda: None)
        times: dict[str, list[float]] = {name: [] for name in [*ours, "torch"]}
        load_start = load()
        for r in range(args.warmup + rounds):  # the warm-up rounds compile and fill the heap; not timed
            for name, (run, wait) in ours.items():
                start = time.perf_counter()
                run(batch_dev)
                wait()
                times[name].append(time.perf_counter() - start)
            if tstep is not None:
                start = time.perf_counter()
                tstep(tx, ty)
                tsync()
                times["torch"].append(time.perf_counter() - start)
        med = {k: statistics.median(v[args.warmup:]) for k, v in times.items() if len(v) > args.warmup}
        first = args.forms[0]
        ratio = med["torch"] / med[first] if "torch" in med else float("nan")
        if (width, cube, batch, dtype) == HEADLINE or not headline:
            headline = {"ratio": ratio, "what": (width, cube, batch, dtype)}
        ours_cols = " | ".join(f"{med[f] * 1e3:.0f}" for f in args.forms)
        torch_col = f"{med['torch'] * 1e3:.0f}" if "torch" in med else "-"
        line = (f"| {width} | {'x'.join(map(str, cube))} | {batch} | {dtype} | {ours_cols} | {torch_col} | "
                f"{ratio:.2f}x | {load_start}-{load()} |")
        print(line, flush=True)
        rows.append(line)
        write(rows, headline, [], done=False)
        del ours

    up = upconv_rows(rounds) if args.upconv else []
    print("\n".join([header, *rows]))
    summary = write(rows, headline, up, done=True)
    print(f"table written to {out}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
