"""Train-step time of genesis_jax's ResEnc (models/resenc) against dynamic-network-architectures' PyTorch network, in
one run on one device.

Run:
  python experiments/bench_resenc_step.py                                   # the rows for the device found (below)
  python experiments/bench_resenc_step.py --rows L:64,64,32:2 M:128,128,128:2 --out experiments/results/x.md
Expected: one line per row, a markdown table (also written to --out, default
experiments/results/bench_resenc_step_<platform>.md), then as its LAST line
  resenc_step_speed_vs_pytorch: <ratio>x
the PyTorch step time over ours (> 1: ours is faster) for the first row.

One step is a restoration pre-training step (pretrain/resenc_genesis): forward, MSE on the sigmoid output, backward
and nnssl's SGD update (lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5). Ours is genesis_jax.train.steps' jitted
step (compiled before timing); PyTorch's is ``ResidualEncoderUNet`` of dynamic-network-architectures built from the
same model config (CUDA when JAX runs on a GPU and torch sees one). The two are timed in alternation, one step each
per round, after ``--warmup`` untimed rounds, and the median over rounds is reported, so a machine shared with other
jobs slows both alike.

Rows ('PRESET:X,Y,Z:BATCH', PRESET a models/resenc preset; M, L and XL are one network, they differ in the patch): on
GPU/TPU L at 64x64x32 (Models Genesis' cube) batch 2 and 6, nnssl's 160^3 batch 2, and M's 128^3 batch 2; on CPU,
where one full-size step takes tens of seconds, L at 64x64x32 batch 2 and the tiny network at 32x32x16 batch 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

from bench_step import torch_device  # noqa: E402
from genesis_jax.config_loader import load_config  # noqa: E402
from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.runtime import tune_cpu_runtime  # noqa: E402

GPU_ROWS = ["L:64,64,32:2", "L:64,64,32:6", "nnssl:160,160,160:2", "M:128,128,128:2"]
CPU_ROWS = ["L:64,64,32:2", "tiny:32,32,16:2"]
SGD = dict(learning_rate=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)


def parse_row(text: str) -> tuple[str, tuple[int, ...], int]:
    try:
        preset, cube, batch = text.split(":")
        return preset, tuple(int(v) for v in cube.split(",")), int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rows: {text!r} is not PRESET:X,Y,Z:BATCH (e.g. L:64,64,32:2)") from None


def model_config(preset: str) -> dict[str, Any]:
    cfg = load_config(f"models/resenc:{preset}", []).model.to_dict()
    return {**cfg, "head_activation": "sigmoid"}


def jax_step(cfg: dict[str, Any], cube: tuple[int, ...]) -> tuple[Any, Any]:
    from genesis_jax.train.mesh import make_mesh
    from genesis_jax.train.schedules import build_optimizer
    from genesis_jax.train.state import create_train_state
    from genesis_jax.train.steps import make_train_step, mse_loss

    mesh = make_mesh(1)
    state = create_train_state(build_model(cfg), build_optimizer("sgd", **SGD), jax.random.key(0), (*cube, 1), mesh)
    step = make_train_step(mse_loss, mesh=mesh)
    holder = {"state": state}

    def run(batch: Any) -> None:
        holder["state"], _ = step(holder["state"], batch)

    return run, lambda: jax.block_until_ready(holder["state"].params)


def torch_step(torch: Any, cfg: dict[str, Any], dev: Any) -> Any:
    from tests.interop.nnunet_networks import torch_network

    net = torch_network({**cfg, "deep_supervision": False}).train().to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=SGD["learning_rate"], momentum=SGD["momentum"],
                          nesterov=SGD["nesterov"], weight_decay=SGD["weight_decay"])

    def step(x: Any, y: Any) -> None:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(torch.sigmoid(net(x)), y)
        loss.backward()
        opt.step()

    return step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", type=parse_row, default=None)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 10 GPU/TPU, 3 CPU)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (on a CPU shared with other jobs torch's spinning OpenMP threads can "
                   "be far slower than fewer threads)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    tune_cpu_runtime()
    platform = jax.devices()[0].platform
    rows = args.rows or [parse_row(r) for r in (CPU_ROWS if platform == "cpu" else GPU_ROWS)]
    rounds = args.rounds or (3 if platform == "cpu" else 10)
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    dev = torch_device(torch, platform)
    device = f"{jax.devices()[0].device_kind} ({platform}); PyTorch {torch.__version__} on " + (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads")
    print(f"device: {device}; {rounds} rounds", flush=True)
    out = Path(args.out or REPO / f"experiments/results/bench_resenc_step_{platform}.md")
    header = ["| network | patch | batch | ours ms | PyTorch ms | PyTorch / ours | load average |",
              "|---|---|---|---|---|---|---|"]
    lines, ratios = [], []
    for preset, cube, batch in rows:
        cfg = model_config(preset)
        rng = np.random.default_rng(0)
        pair = {k: rng.random((batch, *cube, 1), dtype=np.float32) for k in ("inputs", "targets")}
        run, wait = jax_step(cfg, cube)
        tstep = torch_step(torch, cfg, dev)
        tx, ty = (torch.from_numpy(np.ascontiguousarray(np.moveaxis(pair[k], -1, 1))).to(dev) for k in pair)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        on_device = jax.device_put(pair)
        times: dict[str, list[float]] = {"ours": [], "torch": []}
        load_start = f"{os.getloadavg()[0]:.1f}"
        for _ in range(args.warmup + rounds):
            start = time.perf_counter()
            run(on_device)
            wait()
            times["ours"].append(time.perf_counter() - start)
            start = time.perf_counter()
            tstep(tx, ty)
            sync()
            times["torch"].append(time.perf_counter() - start)
        ours, theirs = (statistics.median(times[k][args.warmup:]) for k in ("ours", "torch"))
        ratios.append(theirs / ours)
        line = (f"| ResEnc {preset} | {'x'.join(map(str, cube))} | {batch} | {ours * 1e3:.0f} | {theirs * 1e3:.0f} | "
                f"{theirs / ours:.2f}x | {load_start}-{os.getloadavg()[0]:.1f} |")
        print(line, flush=True)
        lines.append(line)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            f"# bench_resenc_step\n\nCommand: `python experiments/bench_resenc_step.py {' '.join(sys.argv[1:])}`\n\n"
            f"Device: {device}. Median of {rounds} rounds, ours and PyTorch in alternation ({args.warmup} untimed "
            "rounds first). Step = fwd + MSE on the sigmoid output + bwd + SGD (1e-2, momentum 0.99, Nesterov, "
            "wd 3e-5), float32, one output channel. Load average = 1-minute load at the start and end of each row "
            f"(the machine may be shared).\n\n" + "\n".join(header + lines) + "\n\n"
            f"resenc_step_speed_vs_pytorch: {ratios[0]:.2f}x ({rows[0][0]}, {'x'.join(map(str, rows[0][1]))}, "
            f"batch {rows[0][2]})\n")
    print(f"table written to {out}")
    print(f"resenc_step_speed_vs_pytorch: {ratios[0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
