"""Throughput of the restoration transforms: our NumPy port of the published pipeline vs genesis_jax on device.

Run (from the repository root):
    python experiments/bench_transforms.py                 # ~3 minutes on a 2-core CPU (compiles ~1 minute)
    python experiments/bench_transforms.py --seconds 3     # quicker, noisier
    python experiments/bench_transforms.py --xla-default-vector-width   # without the 512-bit XLA:CPU vectors
Expect: a table of (input, target) pairs per second for 64x64x32 cubes at batch sizes 6 and 32 — the NumPy baseline
(single process, float64, as published) and the jitted JAX batch transform on the default JAX device (compile
time reported separately, not counted) — written to experiments/results/bench_transforms_<device>.{md,json}. The
last printed line is ``speedup_vs_published_numpy: <ratio>x`` (JAX pairs/s over NumPy pairs/s at batch 32).

Both sides draw fresh random decisions every batch at the published rates. The measurements are interleaved in
rounds and the machine's load average is recorded: on a shared machine, other processes slow both sides. "CPU
ms/pair" is the process CPU time per pair (all threads; NumPy uses one, XLA:CPU may use every core).
Like the ``genesis-jax`` command, it asks XLA:CPU for 512-bit vectors on AVX-512 hosts first
(``genesis_jax.runtime``); the table records the XLA flags in effect.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from tqdm import tqdm  # noqa: E402

from experiments.published_numpy_transforms import PublishedTransforms  # noqa: E402
from genesis_jax.runtime import prefer_wide_cpu_vectors  # noqa: E402
from genesis_jax.transforms import restoration_batch  # noqa: E402
from genesis_jax.transforms.restoration import resolve_batch_strategy  # noqa: E402

CUBE = (64, 64, 32)


def numpy_runner(batch_size: int, pool: np.ndarray) -> Callable[[], None]:
    transforms = PublishedTransforms(seed=batch_size)
    transforms.generate_batch(pool, batch_size)  # warm-up
    return lambda: transforms.generate_batch(pool, batch_size)


def jax_runner(batch_size: int, strategy: str) -> tuple[Callable[[], None], float]:
    """A call making one batch of pairs (blocking until done), and the compile seconds it needed."""
    device = jax.devices()[0]
    rng = np.random.default_rng(batch_size)
    cubes = jax.device_put(jnp.asarray(rng.random((batch_size, *CUBE, 1), dtype=np.float32)), device)
    step = jax.jit(lambda key, x: restoration_batch(key, x, strategy=strategy))
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = step.lower(key, cubes).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(key, cubes))  # warm-up run
    keys = jax.random.split(jax.random.key(1), 4096)
    calls = [0]

    def run() -> None:
        jax.block_until_ready(compiled(keys[calls[0] % keys.shape[0]], cubes))
        calls[0] += 1

    return run, compile_s


def timed(run: Callable[[], None], seconds: float) -> tuple[int, float, float]:
    """Batches made in about ``seconds`` (at least 1), their wall and process-CPU seconds."""
    batches, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while batches == 0 or time.perf_counter() - wall0 < seconds:
        run()
        batches += 1
    return batches, time.perf_counter() - wall0, time.process_time() - cpu0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the seconds are split into")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[6, 32],
                        help="batch sizes to time (the NumPy port only those up to 32; 32 is required)")
    parser.add_argument("--strategies", nargs="+", default=["auto", "vmap", "map"], choices=["auto", "vmap", "map"],
                        help="restoration_batch strategies to time (duplicates of what 'auto' picks are skipped)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "experiments" / "results")
    parser.add_argument("--xla-default-vector-width", action="store_true",
                        help="keep XLA:CPU's default vector width (no genesis_jax.runtime.prefer_wide_cpu_vectors), "
                             "to measure what the wider vectors give; the table file gets a suffix")
    args = parser.parse_args(argv)
    command = " ".join(["python experiments/bench_transforms.py", *(sys.argv[1:] if argv is None else argv)])
    if 32 not in args.batch_sizes:
        parser.error("--batch-sizes must include 32 (the speedup is reported at batch 32)")
    if not args.xla_default_vector_width:
        prefer_wide_cpu_vectors()  # before the first JAX computation, like the genesis-jax command

    device = jax.devices()[0]
    kind = device.device_kind.lower().replace(" ", "_")
    device_name = device.platform if kind == device.platform else f"{device.platform}-{kind}"
    pool = np.random.default_rng(0).random((40, 1, *CUBE))  # float64 (N, 1, R, C, D), as the published loader
    rows = []
    # the NumPy port makes one pair after the other (its pairs/s does not depend on the batch): batches over 32, for
    # the accelerator's sake, are not worth its minutes
    jobs = [("numpy (published port)", b, None) for b in args.batch_sizes if b <= 32]
    strategies = list(dict.fromkeys(resolve_batch_strategy(s) for s in args.strategies))
    auto = resolve_batch_strategy("auto")
    names = {s: f"jax {s}" + (" (auto)" if s == auto else "") for s in strategies}
    jobs += [(names[s], b, s) for s in strategies for b in args.batch_sizes]
    load_before = os.getloadavg()
    runners = {}
    for name, batch_size, strategy in tqdm(jobs, desc="compile", unit="run"):
        if strategy is None:
            runners[name, batch_size] = (numpy_runner(batch_size, pool), None)
        else:
            runners[name, batch_size] = jax_runner(batch_size, strategy)
    # Interleaved rounds: on a shared machine the load changes over minutes; every implementation gets a slice of
    # each round, so a busy period slows them alike instead of whichever ran then.
    totals = {job: [0, 0.0, 0.0] for job in runners}
    for _ in tqdm(range(args.rounds), desc="timed rounds", unit="round"):
        for job, (run, _) in runners.items():
            batches, wall, cpu = timed(run, args.seconds / args.rounds)
            totals[job][0] += batches
            totals[job][1] += wall
            totals[job][2] += cpu
    rows = []
    for (name, batch_size), (batches, wall, cpu) in totals.items():
        row = {"implementation": name, "batch_size": batch_size, "pairs_per_s": batches * batch_size / wall,
               "ms_per_batch": 1e3 * wall / batches, "cpu_ms_per_pair": 1e3 * cpu / (batches * batch_size),
               "batches": batches}
        compile_s = runners[name, batch_size][1]
        if compile_s is not None:
            row["compile_s"] = compile_s
        rows.append(row)

    numpy32 = next(r for r in rows if r["implementation"].startswith("numpy") and r["batch_size"] == 32)
    jax32 = max(
        (r for r in rows if r["implementation"].startswith("jax") and r["batch_size"] == 32),
        key=lambda r: r["pairs_per_s"],
    )
    speedup = jax32["pairs_per_s"] / numpy32["pairs_per_s"]
    meta = {
        "device": str(device),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "prng_impl": str(jax.config.jax_default_prng_impl),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "cube": list(CUBE),
        "seconds_per_measurement": args.seconds,
        "rounds": args.rounds,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "speedup_vs_published_numpy_batch32": speedup,
        "speedup_from": jax32["implementation"],
    }
    header = ("| implementation | batch | pairs/s | ms/batch | CPU ms/pair | compile s |\n"
              "|---|---|---|---|---|---|")
    lines = [
        f"| {r['implementation']} | {r['batch_size']} | {r['pairs_per_s']:.1f} | {r['ms_per_batch']:.1f} | "
        f"{r['cpu_ms_per_pair']:.1f} | " + (f"{r['compile_s']:.1f} |" if "compile_s" in r else "- |")
        for r in rows
    ]
    table = "\n".join([header, *lines])
    note = (
        f"64x64x32 cubes, published rates; device `{device}` ({os.cpu_count()} CPU cores visible); "
        f"{args.seconds:g} s per measurement in {args.rounds} interleaved rounds; "
        f"load average {load_before[0]:.1f} before, "
        f"{meta['load_average_after'][0]:.1f} after. Command: `{command}"
        + "`. JAX rows: `restoration_batch` jitted standalone, compile excluded; 'auto' is the default strategy. "
        + f"XLA_FLAGS: `{meta['xla_flags'] or '(none)'}`."
    )
    print(table)
    print(note)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "_xla-default-vector-width" if args.xla_default_vector_width else ""
    stem = args.out_dir / f"bench_transforms_{device_name}{suffix}"
    stem.with_suffix(".md").write_text(
        f"# Restoration transforms throughput ({device_name})\n\n{note}\n\n{table}\n\n"
        f"speedup_vs_published_numpy: {speedup:.1f}x (batch 32, {jax32['implementation']})\n"
    )
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {stem}.md and {stem}.json")
    print(f"speedup_vs_published_numpy: {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
