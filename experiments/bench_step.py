"""Train-step time of genesis_jax against PyTorch, in one run on one device: the Genesis U-Net against a PyTorch
restatement of the published UNet3D, and nnU-Net's residual-encoder U-Net (models/resenc) against the
``ResidualEncoderUNet`` of dynamic-network-architectures.

Run:
  python experiments/bench_step.py                         # the Genesis rows for the device found (see below)
  python experiments/bench_step.py --networks resenc       # the ResEnc rows instead (--networks genesis resenc: both)
  python experiments/bench_step.py --configs 32:64,64,32:2 L:64,64,32:1 --dtypes float32 bfloat16
  python experiments/bench_step.py --forms native depth_taps --out experiments/results/bench_step_cpu.md
Expected: one line per measurement, a markdown table (also written to --out, default
experiments/results/bench_step_<platform>.md, or bench_step_resenc_<platform>.md for the ResEnc rows alone), then
as its LAST line(s), one per network measured
  step_speed_vs_pytorch: <ratio>x            (Genesis U-Net: width 32, 64x64x32 cubes, batch 2, float32)
  resenc_step_speed_vs_pytorch: <ratio>x     (ResEnc: L at 64x64x32, batch 2, float32)
the PyTorch step time over ours (> 1: ours is faster), for the first row of that network when its headline
configuration was not measured.

Configurations (``--configs NET:X,Y,Z:BATCH``): NET is a Genesis U-Net base width (an integer) or a models/resenc
preset (M, L, XL, nnssl, tiny, plain, ...; M, L, XL and nnssl are ONE network, nnU-Net's presets differ only in the
patch they plan, so a row's patch is what its name does not say). One step is what pre-training runs:
  Genesis U-Net (`pytorch` variant, depth 4, BatchNorm with batch statistics as published): forward, MSE backward and
    the published SGD (lr 1.0, momentum 0.9) update; PyTorch: tests/interop/torch_unet3d.py's UNet3D.
  ResEnc (pretrain/resenc_genesis and pretrain/resenc_mim): forward, MSE on the sigmoid output, backward and nnssl's
    SGD (lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5); PyTorch: dynamic-network-architectures'
    ``ResidualEncoderUNet`` (``PlainConvUNet`` for :plain) built from the same model config as nnU-Net builds it
    from a plans dict (tests/interop/nnunet_networks.py), nnU-Net's initialisation, one output channel.
Ours is genesis_jax.train.steps' jitted step (compiled once before timing); PyTorch's runs on the same device (CUDA
when JAX runs on a GPU and torch sees one). The two are timed in alternation, one step each per round, after
``--warmup`` untimed rounds (default 2: the first compiles, and the second still finds the host allocator's heap
growing to the step's peak), and the median over rounds is reported, so a machine shared with other jobs slows both
alike. Threads: each framework's default unless ``--torch-threads`` (and XLA_FLAGS) say otherwise; the table names
them. bfloat16: ours computes in bfloat16 with float32 parameters (``model.dtype``), PyTorch under
``torch.autocast(dtype=torch.bfloat16)``.

``--forms`` times ours once per ``conv_impl`` given (default: only 'auto', the library default); ``--upconv``
also times one 2x up-sampling layer (fwd+bwd) as ``lax.conv_transpose`` (the former flax ConvTranspose) and as the
library's matmul + depth-to-space.

Default rows. Genesis, on GPU/TPU: every one of widths 4 and 32, cubes 32x32x16 and 64x64x32, batches 2 and 6; on
CPU a step of the full-size network at 64x64x32 takes tens of seconds (batch 6 about a minute for PyTorch, longer
for XLA:CPU), so the CPU default leaves out width 32 at batch 6 and says so in the table. ResEnc, on GPU/TPU: L at
64x64x32 (Models Genesis' cube) batch 2 and 6, nnssl's 160^3 batch 2 and M's 128^3 batch 2; on CPU, where one
ResEnc-L step at 64x64x32 batch 2 takes one to two minutes, L at 64x64x32 batch 1 and M at 64x32x32 batch 2 (the
same network and as many voxels per step; every size must divide by 32, its five 2x poolings, and PyTorch's instance
norm refuses to train on a 1x1x1 bottleneck, so 64 along one axis at least).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

from genesis_jax.config_loader import load_config  # noqa: E402
from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.runtime import cpu_isa, tune_cpu_runtime  # noqa: E402

Row = tuple[int | str, tuple[int, int, int], int]  # (Genesis width or ResEnc preset, cube, batch)
GENESIS_GRID: list[Row] = [(w, c, b) for w in (4, 32) for c in ((32, 32, 16), (64, 64, 32)) for b in (2, 6)]
GENESIS_CPU_LEFT_OUT: list[Row] = [(32, (32, 32, 16), 6), (32, (64, 64, 32), 6)]
RESENC_GPU: list[Row] = [("L", (64, 64, 32), 2), ("L", (64, 64, 32), 6), ("nnssl", (160, 160, 160), 2),
                         ("M", (128, 128, 128), 2)]
RESENC_CPU: list[Row] = [("L", (64, 64, 32), 1), ("M", (64, 32, 32), 2)]
# the configuration each network's summary line reports (its first row when this one was not measured)
HEADLINES = {"genesis": ((32, (64, 64, 32), 2), "float32", "step_speed_vs_pytorch"),
             "resenc": (("L", (64, 64, 32), 2), "float32", "resenc_step_speed_vs_pytorch")}


@dataclasses.dataclass(frozen=True)
class Network:
    """One network of a row: its genesis_jax model config, optimiser and PyTorch counterpart."""

    family: str  # 'genesis' | 'resenc'
    label: str
    model: dict[str, Any]  # genesis_jax model config, less dtype and conv_impl
    sgd: dict[str, Any]  # build_optimizer('sgd', **sgd) and torch.optim.SGD of the same meaning
    torch_module: Callable[[Any], Any]  # torch -> the PyTorch network (restoration output, sigmoid included)


def network(net: int | str) -> Network:
    """The Genesis U-Net of base width ``net`` (an int) or the models/resenc preset ``net``."""
    if isinstance(net, int):
        def genesis_torch(torch: Any) -> Any:
            from tests.interop.torch_unet3d import UNet3D

            return UNet3D(width=net)  # sigmoid output, as published

        return Network("genesis", f"Genesis U-Net, width {net}",
                       {"name": "genesis_unet", "variant": "pytorch", "base_width": net, "depth": 4},
                       dict(learning_rate=1.0, momentum=0.9), genesis_torch)
    model = {**load_config(f"models/resenc:{net}", []).model.to_dict(), "head_activation": "sigmoid"}

    def resenc_torch(torch: Any) -> Any:
        from tests.interop.nnunet_networks import torch_network

        return torch.nn.Sequential(torch_network({**model, "deep_supervision": False}, randomize=False),
                                   torch.nn.Sigmoid()).train()

    return Network("resenc", f"ResEnc {net}", model,
                   dict(learning_rate=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5), resenc_torch)


def parse_config(text: str) -> Row:
    """'NET:X,Y,Z:BATCH' -> (width or preset, cube, batch)."""
    try:
        net, cube, batch = text.split(":")
        shape = tuple(int(v) for v in cube.split(","))
        if len(shape) != 3 or not net:
            raise ValueError
        return (int(net) if net.isdigit() else net), shape, int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--configs: {text!r} is not NET:X,Y,Z:BATCH (NET a Genesis U-Net width or "
                                         "a models/resenc preset; e.g. 32:64,64,32:2 or L:64,64,32:1)") from None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--networks", nargs="+", default=["genesis"], choices=["genesis", "resenc"],
                   help="whose default rows to run when --configs is not given (default: genesis)")
    p.add_argument("--configs", nargs="+", type=parse_config, default=None,
                   help="NET:X,Y,Z:BATCH ... (default: see the module docstring)")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"],
                   help="default: float32 and bfloat16 on GPU/TPU; float32 on CPU, bfloat16 also for the first "
                   "Genesis row")
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


def default_rows(networks: list[str], on_cpu: bool) -> list[Row]:
    rows: list[Row] = []
    if "genesis" in networks:
        rows += [c for c in GENESIS_GRID if c not in GENESIS_CPU_LEFT_OUT] if on_cpu else GENESIS_GRID
    if "resenc" in networks:
        rows += RESENC_CPU if on_cpu else RESENC_GPU
    return rows


def torch_train_step(torch: Any, net: Network, dev: Any, dtype: str = "float32") -> Callable[[Any, Any], None]:
    """One training step of ``net``'s PyTorch network (MSE on its output, its SGD): ``step(x, y)`` with
    (B, 1, X, Y, Z) tensors on ``dev``."""
    module = net.torch_module(torch).to(dev)
    sgd = dict(net.sgd)
    opt = torch.optim.SGD(module.parameters(), lr=sgd.pop("learning_rate"), **sgd)
    loss_fn = torch.nn.MSELoss()
    autocast = dtype == "bfloat16"

    def step(x: Any, y: Any) -> None:
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(module(x).float(), y)
        loss.backward()
        opt.step()

    return step


def torch_device(torch: Any, platform: str) -> Any:
    """CUDA when JAX runs on a GPU and torch sees one, else the CPU."""
    return torch.device("cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu")


def jax_train_step(net: Network, cube: tuple[int, int, int], dtype: str, conv_impl: str) -> tuple[Callable, Any]:
    """genesis_jax's pre-training step of ``net``; returns (run_one_step, wait)."""
    from genesis_jax.train.mesh import make_mesh
    from genesis_jax.train.schedules import build_optimizer
    from genesis_jax.train.state import create_train_state
    from genesis_jax.train.steps import make_train_step, mse_loss

    mesh = make_mesh(1)
    model = build_model({**net.model, "dtype": dtype, "conv_impl": conv_impl})
    state = create_train_state(model, build_optimizer("sgd", **net.sgd), jax.random.key(0), (*cube, 1), mesh)
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
    configs = args.configs or default_rows(args.networks, on_cpu)
    nets = {row[0]: network(row[0]) for row in configs}
    if args.dtypes:
        plan = [(c, d) for c in configs for d in args.dtypes]
    elif on_cpu:  # bfloat16 once, at the smallest Genesis size (PyTorch's CPU autocast is far slower than float32)
        first_genesis = next((c for c in configs if nets[c[0]].family == "genesis"), None)
        plan = [(c, "float32") for c in configs] + ([(first_genesis, "bfloat16")] if first_genesis else [])
    else:
        plan = [(c, d) for c in configs for d in ("float32", "bfloat16")]

    cpu = cpu_model() if on_cpu else ""
    device = f"{jax.devices()[0].device_kind} ({platform}{cpu})"
    xla_flags = os.environ.get("XLA_FLAGS") or "(none)"
    glibc_tunables = os.environ.get("GLIBC_TUNABLES")  # process-wide: both frameworks get it
    tunables = f"; GLIBC_TUNABLES: {glibc_tunables}" if glibc_tunables else ""
    if tuned.get("reuse_freed_host_memory"):
        tunables += "; host allocator: genesis_jax.runtime.reuse_freed_host_memory (both frameworks)"
    affinity = f"; CPU affinity: cores {sorted(os.sched_getaffinity(0))} of {os.cpu_count()}" if on_cpu else ""
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
    print(f"device: {device}{affinity}; jax {jax.__version__}; XLA_FLAGS: {xla_flags}{tunables}; torch "
          f"{getattr(torch, '__version__', '-')} on {tname or '-'}; {rounds} rounds; load average {load()}", flush=True)

    header = ("| network | cube | batch | dtype | " + " | ".join(f"ours ({f}) ms" for f in args.forms)
              + " | PyTorch ms | PyTorch / ours | load average |")
    left_out = ""
    if on_cpu and args.configs is None and "genesis" in args.networks:
        left_out = ("CPU: configurations left out because one step takes minutes here: "
                    + ", ".join(f"width {w} {'x'.join(map(str, c))} batch {b}" for w, c, b in GENESIS_CPU_LEFT_OUT)
                    + ".")
    families = sorted({nets[c[0]].family for c in configs})
    stem = "bench_step_resenc" if families == ["resenc"] else "bench_step"
    out = Path(args.out or REPO / f"experiments/results/{stem}_{platform}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    steps = {"genesis": "Genesis U-Net: fwd + MSE bwd + SGD update (lr 1.0, momentum 0.9) of the `pytorch` variant "
                        "(BatchNorm on batch statistics), depth 4, against tests/interop/torch_unet3d.py's UNet3D.",
             "resenc": "ResEnc: fwd + MSE on the sigmoid output + bwd + SGD (1e-2, momentum 0.99, Nesterov, wd 3e-5), "
                       "one output channel, against dynamic-network-architectures' network built from the same "
                       "model config (M, L, XL, nnssl: one network; the presets differ only in the patch)."}

    def summaries(headlines: dict[str, dict[str, Any]]) -> list[str]:
        lines = []
        for family, h in headlines.items():
            (net, cube, batch), dtype = h["what"]
            what = f"width {net}" if family == "genesis" else str(net)
            lines.append(f"{HEADLINES[family][2]}: {h['ratio']:.2f}x ({what}, {'x'.join(map(str, cube))}, batch "
                         f"{batch}, {dtype}, conv_impl {args.forms[0]})")
        return lines

    def write(rows: list[str], headlines: dict[str, dict[str, Any]], up: list[str], done: bool) -> None:
        """The table so far (rewritten after every row, so a run cut short keeps what it measured)."""
        partial = "" if done else f"PARTIAL: {len(rows)} of {len(plan)} rows so far. "
        out.write_text(
            f"# bench_step\n\nCommand: `python experiments/bench_step.py {' '.join(sys.argv[1:])}`\n\n"
            f"Device: {device}{affinity}; jax {jax.__version__}; XLA_FLAGS: `{xla_flags}`{tunables}; PyTorch "
            f"{getattr(torch, '__version__', '-')} on {tname or '-'}. {partial}Median of {rounds} rounds, ours and "
            f"PyTorch in alternation ({args.warmup} untimed rounds first). "
            + " ".join(steps[f] for f in families)
            + " Load average = 1-minute load at the start and end of each row (the machine may be shared). "
            f"{left_out}\n\n"
            + "\n".join([header, "|" + "---|" * (len(args.forms) + 7), *rows]) + "\n\n"
            + ("\n".join(up) + "\n\n" if up else "")
            + "\n".join(summaries(headlines)) + "\n"
        )

    rows, headlines = [], {}
    for (net_key, cube, batch), dtype in plan:
        net = nets[net_key]
        rng = np.random.default_rng(0)
        pairs = {k: rng.random((batch, *cube, 1), dtype=np.float32) for k in ("inputs", "targets")}
        ours = {}
        for form in args.forms:
            ours[form] = jax_train_step(net, cube, dtype, form)
        batch_dev = jax.device_put(pairs)
        tstep = tx = ty = None
        if torch is not None:
            tstep = torch_train_step(torch, net, tdev, dtype)
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
        if (net_key, cube, batch) == HEADLINES[net.family][0] and dtype == HEADLINES[net.family][1] \
                or net.family not in headlines:
            headlines[net.family] = {"ratio": ratio, "what": ((net_key, cube, batch), dtype)}
        ours_cols = " | ".join(f"{med[f] * 1e3:.0f}" for f in args.forms)
        torch_col = f"{med['torch'] * 1e3:.0f}" if "torch" in med else "-"
        line = (f"| {net.label} | {'x'.join(map(str, cube))} | {batch} | {dtype} | {ours_cols} | {torch_col} | "
                f"{ratio:.2f}x | {load_start}-{load()} |")
        print(line, flush=True)
        rows.append(line)
        write(rows, headlines, [], done=False)
        del ours, tstep

    up = upconv_rows(rounds) if args.upconv else []
    print("\n".join([header, *rows]))
    write(rows, headlines, up, done=True)
    print(f"table written to {out}")
    print("\n".join(line.split(" (")[0] for line in summaries(headlines)))
    return 0


def cpu_model() -> str:
    """', <model name>, <vector ISA>' of the host CPU from /proc/cpuinfo (empty when unreadable); the ISA as
    genesis_jax.runtime.cpu_isa names it (AVX-512 with BF16 and AMX where present, else AVX2)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return f", {name}, {cpu_isa()}" if name else ""


if __name__ == "__main__":
    sys.exit(main())
