"""Which XLA:CPU compiler options make genesis_jax's training step faster on this CPU: the same jitted step compiled
once per option set (``compile(compiler_options=...)``, so every variant lives in ONE process) and timed in
alternation with PyTorch's step, one step of each per round, so a machine shared with other jobs slows all alike.

Run:
  python experiments/bench_xla_cpu_options.py                          # width 16, 32x32x16, batch 2, 5 rounds
  python experiments/bench_xla_cpu_options.py --config 32:64,64,32:2 --rounds 3 --variants base onednn
Expected: a line naming the CPU's ISA, the threads and the load, a table (variant, our step's median ms, PyTorch's
over ours, base's over the variant's), then as its last line 'best_xla_cpu_option: <variant> <r>x over base'.

Variants (XLA debug options of this jaxlib, set per compile): base (the library's settings: 512-bit vectors on
AVX-512 hosts, conv_impl auto, XLA's default YNNPACK fusions of dots, elementwise ops and reductions), no_ynn (those
fusions off: XLA's own code), onednn (oneDNN for dot and elementwise fusions), fast_math, vec256 (XLA's default
vector width), one_thread (no multi-threaded Eigen: convolutions on one core), native (conv_impl native), bf16
(model.dtype bfloat16; PyTorch stays float32), base_again (base once more, last in each round: how far two
identical programs differ). The XNNPACK options (xla_cpu_experimental_xnn_fusion_type, the
greedy graph fusion) left this jaxlib's optimised HLO of the step unchanged (YNNPACK takes those fusions first), so
they are not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "experiments")]

from bench_step import network, parse_config, torch_train_step  # noqa: E402
from genesis_jax.models import build_model  # noqa: E402
from genesis_jax.runtime import cpu_isa, tune_cpu_runtime  # noqa: E402

VARIANTS = {  # name -> (XLA compiler options, model overrides)
    "base": ({}, {}),
    "no_ynn": ({"xla_cpu_experimental_ynn_fusion_type": ""}, {}),
    "onednn": ({"xla_cpu_use_onednn": True,
                "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE"}, {}),
    "fast_math": ({"xla_cpu_enable_fast_math": True}, {}),
    "vec256": ({"xla_cpu_prefer_vector_width": 256}, {}),
    "one_thread": ({"xla_cpu_multi_thread_eigen": False}, {}),
    "native": ({}, {"conv_impl": "native"}),
    "bf16": ({}, {"dtype": "bfloat16"}),
    "base_again": ({}, {}),  # base compiled twice, timed last in each round: the noise floor of the comparison
}


def compiled_step(width: int, cube: tuple[int, int, int], options: dict, overrides: dict):
    """The library's pre-training step (Genesis U-Net, pytorch variant, depth 4, SGD 1.0/0.9) compiled with
    ``options``; returns (run_one_step(batch), wait)."""
    from genesis_jax.train.mesh import make_mesh
    from genesis_jax.train.schedules import build_optimizer
    from genesis_jax.train.state import create_train_state
    from genesis_jax.train.steps import make_train_step, mse_loss

    mesh = make_mesh(1)
    model = build_model({"name": "genesis_unet", "variant": "pytorch", "base_width": width, "depth": 4,
                         "conv_impl": "auto", **overrides})
    holder = {"state": create_train_state(model, build_optimizer("sgd", 1.0, momentum=0.9), jax.random.key(0),
                                          (*cube, 1), mesh)}
    step = make_train_step(mse_loss, mesh=mesh)
    compiled: dict = {}

    def run(batch) -> None:
        if "fn" not in compiled:
            compiled["fn"] = step.lower(holder["state"], batch).compile(compiler_options=options or None)
        holder["state"], _ = compiled["fn"](holder["state"], batch)

    return run, lambda: jax.block_until_ready(holder["state"].params)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=parse_config, default=(16, (32, 32, 16), 2), help="WIDTH:X,Y,Z:BATCH")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    tune_cpu_runtime()
    import torch

    width, cube, batch = args.config
    if not isinstance(width, int):
        p.error("--config: a Genesis U-Net width (an integer), e.g. 16:32,32,16:2")
    rng = np.random.default_rng(0)
    pairs = {k: rng.random((batch, *cube, 1), dtype=np.float32) for k in ("inputs", "targets")}
    batch_dev = jax.device_put(pairs)
    steps = {name: compiled_step(width, cube, *VARIANTS[name]) for name in args.variants}
    tstep = torch_train_step(torch, network(width), torch.device("cpu"))
    tx, ty = (torch.from_numpy(np.ascontiguousarray(pairs[k][..., 0][:, None])) for k in ("inputs", "targets"))
    times: dict[str, list[float]] = {name: [] for name in [*steps, "torch"]}
    load = [os.getloadavg()[0]]
    for _ in range(args.warmup + args.rounds):
        for name, (run, wait) in steps.items():
            start = time.perf_counter()
            run(batch_dev)
            wait()
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        tstep(tx, ty)
        times["torch"].append(time.perf_counter() - start)
    load.append(os.getloadavg()[0])
    med = {k: statistics.median(v[args.warmup:]) for k, v in times.items()}
    print(f"CPU: {cpu_isa()}, {os.cpu_count()} cores; XLA default threads, torch {torch.get_num_threads()} threads; "
          f"jax {jax.__version__}, torch {torch.__version__}; XLA_FLAGS {os.environ.get('XLA_FLAGS', '')!r}; "
          f"width {width}, {'x'.join(map(str, cube))}, batch {batch}; median of {args.rounds} rounds; load average "
          f"{load[0]:.1f}-{load[1]:.1f}")
    print(f"| variant | ours ms | PyTorch / ours | vs base |\n|---|---|---|---|")
    for name in steps:
        vs_base = med["base"] / med[name] if "base" in med else float("nan")
        print(f"| {name} | {med[name] * 1e3:.0f} | {med['torch'] / med[name]:.2f}x | {vs_base:.2f}x |")
    print(f"| PyTorch | {med['torch'] * 1e3:.0f} | | |")
    if "base" in med:
        best = min(steps, key=lambda n: med[n])
        print(f"best_xla_cpu_option: {best} {med['base'] / med[best]:.2f}x over base")
    return 0


if __name__ == "__main__":
    sys.exit(main())
