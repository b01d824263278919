"""End-to-end pre-training throughput: genesis_jax's loop against the published-style pipeline, in one run.

Run:
  python experiments/bench_pretrain.py                    # defaults for the device found (see below)
  python experiments/bench_pretrain.py --base-width=32    # force the full-size network (GPU/TPU default)
  python experiments/bench_pretrain.py --out=experiments/results/bench_pretrain_cpu.md
Expected: a table of (input, target) pairs per second, then as its LAST line
  end_to_end_speedup_vs_published_pipeline: <ratio>x

What is measured, each on the same cubes (64x64x32 by default), batch and network:
  jax_end_to_end        grain pipeline -> global device batch -> jitted train step that deforms the batch ON THE
                        DEVICE (genesis_jax.transforms.restoration_batch) and trains on it (genesis_jax.train.steps)
  published_style       the same grain pipeline -> the published deformations in NumPy on the host, one sample
                        after the other (experiments/published_numpy_transforms.py, single process as published
                        without Keras' 10 workers) -> the SAME jitted train step, fed the ready pairs
  device_transforms     restoration_batch alone on a device batch (jitted)
  numpy_transforms      the NumPy deformations alone
  jax_step              the train step alone on ready pairs
  torch_step            (torch installed) a PyTorch restatement of the published UNet3D training step (always-batch-
                        statistics BatchNorm, MSE, SGD 1.0 momentum 0.9) on the same device type, same width
  torch_published       (torch installed) the published pipeline proper: NumPy deformations + the PyTorch step
The ratio is jax_end_to_end / published_style.

On a CPU-only machine it defaults to a SMALL network (base width 4 instead of 32), 32x32x16 cubes and batch 2, and
says so: XLA:CPU 3D convolutions are slow (models_genesis.md section 8): on the 2-core development machine one
64x64x32 batch-6 step of even the width-4 network took 73-98 s (PyTorch: 7-15 s), so the published size is left to
``--cube=64,64,32 --batch=6`` there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.runtime import tune_cpu_runtime  # noqa: E402
from genesis_jax.data.pipeline import global_batch, pretrain_dataset  # noqa: E402
from genesis_jax.train.mesh import batch_sharding, local_batch_size, make_mesh  # noqa: E402
from genesis_jax.pretext.genesis import make_prepare as make_restoration_prepare  # noqa: E402
from genesis_jax.train.schedules import build_optimizer  # noqa: E402
from genesis_jax.train.state import create_train_state  # noqa: E402
from genesis_jax.train.losses import mse_loss  # noqa: E402
from genesis_jax.train.steps import make_train_step  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cube", default=None, help="cube size x,y,z (default 64,64,32 on GPU/TPU, 32,32,16 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="pairs per device per step (default: the published 6 on "
                   "GPU/TPU, 2 on CPU)")
    p.add_argument("--base-width", type=int, default=None, help="network width (default 32 on GPU/TPU, 4 on CPU)")
    p.add_argument("--variant", default="pytorch", choices=["pytorch", "keras"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=None, help="timed steps per path (default 30 GPU/TPU, 3 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2 GPU/TPU, 1 CPU)")
    p.add_argument("--num-cubes", type=int, default=64)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch.set_num_threads (default torch's own; see bench_step.py)")
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    return p.parse_args()


def synthetic_cubes(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Smooth random cubes in [0, 1] (the deformations' cost does not depend on the content)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    cubes = ndimage.gaussian_filter(rng.random((n, *shape), dtype=np.float32), sigma=(0, 2, 2, 1))
    lo, hi = cubes.min(axis=(1, 2, 3), keepdims=True), cubes.max(axis=(1, 2, 3), keepdims=True)
    return ((cubes - lo) / (hi - lo)).astype(np.float32)


def timed(run_step, steps: int, warmup: int, sync) -> float:
    """Seconds for ``steps`` calls after ``warmup`` calls; ``sync()`` waits for the device."""
    for _ in range(warmup):
        run_step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        run_step()
    sync()
    return time.perf_counter() - start


def main() -> int:
    args = parse_args()
    tune_cpu_runtime()  # before the first JAX computation, like the genesis-jax command
    from genesis_jax.transforms import restoration_batch
    from published_numpy_transforms import PublishedTransforms

    platform = jax.devices()[0].platform
    on_cpu = platform == "cpu"
    width = args.base_width or (4 if on_cpu else 32)
    steps = args.steps or (3 if on_cpu else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if on_cpu else 2)
    shape = tuple(int(v) for v in (args.cube or ("32,32,16" if on_cpu else "64,64,32")).split(","))
    args.batch = args.batch or (2 if on_cpu else 6)
    mesh = make_mesh()
    global_bs = args.batch * mesh.devices.size
    local_bs = local_batch_size(global_bs)
    sharding = batch_sharding(mesh)
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({platform})"
    xla_flags = os.environ.get("XLA_FLAGS") or "(none)"
    print(f"device: {device}; jax {jax.__version__}; XLA_FLAGS: {xla_flags}")
    note = " (SMALL network: CPU default; full size is base width 32)" if on_cpu and args.base_width is None else ""
    if on_cpu and args.cube is None:
        note += "; CPU default cubes 32x32x16, batch 2 (XLA:CPU 3D convolutions take minutes per 64x64x32 step)"
    print(f"network: Genesis U-Net {args.variant}, base width {width}, depth 4, {args.dtype}{note}")
    print(f"cubes {shape}, global batch {global_bs}, {steps} timed steps after {args.warmup} warm-up per path")

    cubes = synthetic_cubes(args.num_cubes, shape)
    model = build_model(dict(name="genesis_unet", variant=args.variant, base_width=width, depth=4,
                             dtype=args.dtype))
    tx = build_optimizer("sgd", 1.0, momentum=0.9)
    key = jax.random.key(0)
    input_shape = (*shape, 1)

    def fresh_iterator():
        return iter(pretrain_dataset(cubes, batch_size=local_bs, seed=0))

    results: dict[str, float] = {}

    # 1. genesis_jax end to end: host pipeline + on-device deformations inside the jitted step.
    state = create_train_state(model, tx, key, input_shape, mesh)
    e2e_step = make_train_step(mse_loss, make_restoration_prepare(restoration_batch), mesh=mesh)
    it = fresh_iterator()
    holder = {"state": state}

    def e2e():
        holder["state"], holder["metrics"] = e2e_step(holder["state"], global_batch(next(it), sharding))

    seconds = timed(e2e, steps, args.warmup, lambda: jax.block_until_ready(holder["state"].params))
    results["jax_end_to_end"] = steps * global_bs / seconds

    # 2. published style: NumPy deformations on the host, the same network and step fed ready pairs.
    published = PublishedTransforms(seed=0)

    def numpy_pairs(batch: np.ndarray) -> dict[str, np.ndarray]:
        y = batch[:, None].astype(np.float64)  # (B, 1, X, Y, Z), float64 as published
        x = y.copy()
        for n in range(len(y)):
            x[n], y[n] = published.transform_sample(x[n].copy(), y[n].copy())
        return {"inputs": x[:, 0, ..., None].astype(np.float32), "targets": y[:, 0, ..., None].astype(np.float32)}

    pair_step = make_train_step(mse_loss, mesh=mesh)
    holder["state"] = create_train_state(model, tx, key, input_shape, mesh)
    it = fresh_iterator()

    def published_style():
        pairs = numpy_pairs(next(it)["cube"][..., 0])
        holder["state"], _ = pair_step(holder["state"], global_batch(pairs, sharding))

    seconds = timed(published_style, steps, args.warmup, lambda: jax.block_until_ready(holder["state"].params))
    results["published_style"] = steps * global_bs / seconds

    # Breakdown.
    device_batch = global_batch({"cube": cubes[:global_bs, ..., None]}, sharding)["cube"]
    deform = jax.jit(restoration_batch)
    out = {}

    def device_transforms():
        out["pair"] = deform(jax.random.fold_in(key, len(out)), device_batch)

    seconds = timed(device_transforms, steps, args.warmup, lambda: jax.block_until_ready(out["pair"]))
    results["device_transforms"] = steps * global_bs / seconds

    host_batch = cubes[:global_bs]
    seconds = timed(lambda: numpy_pairs(host_batch), steps, args.warmup, lambda: None)
    results["numpy_transforms"] = steps * global_bs / seconds

    ready = global_batch(numpy_pairs(host_batch), sharding)

    def jax_step():
        holder["state"], _ = pair_step(holder["state"], ready)

    seconds = timed(jax_step, steps, args.warmup, lambda: jax.block_until_ready(holder["state"].params))
    results["jax_step"] = steps * global_bs / seconds

    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch not installed: PyTorch rows skipped")
        else:
            if args.torch_threads:
                torch.set_num_threads(args.torch_threads)
            print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
            results.update(torch_rows(torch, width, shape, global_bs, steps, args.warmup, host_batch, numpy_pairs,
                                      on_cpu))

    lines = ["| path | pairs/s |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in results.items()]
    print("\n".join(lines))
    ratio = results["jax_end_to_end"] / results["published_style"]
    if "torch_step" in results:
        print(f"jax_step_vs_torch_step: {results['jax_step'] / results['torch_step']:.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            f"# bench_pretrain\n\nCommand: `python experiments/bench_pretrain.py {' '.join(sys.argv[1:])}`\n\n"
            f"Device: {device}; jax {jax.__version__}; XLA_FLAGS: `{xla_flags}`. "
            f"Network: base width {width}{note}. Cubes {shape}, global batch {global_bs}, {steps} timed steps.\n\n"
            + "\n".join(lines) + f"\n\nend_to_end_speedup_vs_published_pipeline: {ratio:.2f}x\n"
        )
    print(f"end_to_end_speedup_vs_published_pipeline: {ratio:.2f}x")
    return 0


def torch_rows(torch, width, shape, batch, steps, warmup, host_batch, numpy_pairs, on_cpu) -> dict[str, float]:
    """The PyTorch restatement of the published UNet3D trained as published (``bench_step.torch_train_step``)."""
    from bench_step import network, torch_device, torch_train_step

    dev = torch.device("cpu") if on_cpu else torch_device(torch, "gpu")
    train = torch_train_step(torch, network(width), dev)

    def to_torch(pairs):
        # (B, X, Y, Z, 1) -> the published (B, 1, X, Y, Z)
        return [torch.from_numpy(np.ascontiguousarray(pairs[k][..., 0][:, None])).to(dev) for k in ("inputs",
                                                                                                     "targets")]

    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    x, y = to_torch(numpy_pairs(host_batch))
    seconds = timed(lambda: train(x, y), steps, warmup, sync)
    rows = {"torch_step": steps * batch / seconds}
    seconds = timed(lambda: train(*to_torch(numpy_pairs(host_batch))), steps, warmup, sync)
    rows["torch_published"] = steps * batch / seconds
    return rows


if __name__ == "__main__":
    sys.exit(main())
